"""Step lines on stderr while an export runs."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """Step lines on stderr, so a slow export shows where it is."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream

    @contextmanager
    def step(self, what: str) -> Iterator[None]:
        """Announce a step and its duration."""
        start = time.perf_counter()
        self.say(f"{what} ...")
        yield
        self.say(f"{what}: done in {time.perf_counter() - start:.1f}s")

    def say(self, line: str) -> None:
        """One progress line."""
        if self.stream is not None:
            print(f"[onnxbert export] {line}", file=self.stream, flush=True)
