"""How sentence vectors are made from token vectors (the Encoder pools per text: packing.segment_pool)."""

from __future__ import annotations

import enum

import numpy as np
import numpy.typing as npt

from .errors import parse_choice

__all__ = ["POOLINGS", "Pooling", "normalize"]

Float32Array = npt.NDArray[np.float32]


class Pooling(str, enum.Enum):
    """How a sentence vector is made from token vectors."""

    POOLER = "pooler"  # BERT's dense + tanh over [CLS], as trained for next-sentence prediction
    CLS = "cls"  # the raw [CLS] hidden state (bge, many retrievers)
    MEAN = "mean"  # mask-aware mean (sentence-transformers, e5)
    MAX = "max"  # mask-aware max

    @classmethod
    def parse(cls, value: str | Pooling) -> Pooling:
        """Normalize a user string to the enum, or say which values are allowed."""
        return parse_choice(cls, value, "pooling")


POOLINGS = tuple(method.value for method in Pooling)


def normalize(vectors: Float32Array) -> Float32Array:
    """L2-normalize rows; an all-zero row stays zero instead of becoming NaN."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: Float32Array = (vectors / np.maximum(norms, np.float32(1e-12))).astype(np.float32, copy=False)
    return unit
