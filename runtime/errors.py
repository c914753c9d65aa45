"""The errors onnxbert raises; each message says what is wrong and what to do."""

from __future__ import annotations

import enum
from typing import TypeVar

__all__ = ["ModelDirectoryError", "ProviderError", "TextError", "parse_choice"]

E = TypeVar("E", bound=enum.Enum)

REEXPORT_HINT = "re-export it with `onnxbert export MODEL --output DIR --force`"


class ModelDirectoryError(ValueError):
    """A model directory is missing a file, or its manifest, tokenizer and graph disagree."""


class ProviderError(RuntimeError):
    """The execution provider asked for is not available or did not become active."""


class TextError(ValueError):
    """One text of a call cannot be embedded as asked: `index` is its place in the call's `texts`."""

    def __init__(self, index: int, reason: str) -> None:
        super().__init__(f"texts[{index}] {reason}")
        self.index = index
        self.reason = reason


def parse_choice(kind: type[E], value: object, name: str) -> E:
    """Normalize a user value to a member of `kind`, or raise naming the bad value and the allowed ones."""
    try:
        return kind(value)
    except ValueError:
        allowed = ", ".join(repr(member.value) for member in kind)
        raise ValueError(f"{name}={value!r} is not supported; use one of {allowed}") from None
