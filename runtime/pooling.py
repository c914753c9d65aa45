"""Sentence pooling over token-level hidden states, vectorized in float32."""

from __future__ import annotations

import enum

import numpy as np
import numpy.typing as npt

from .errors import parse_choice

__all__ = ["Pooling", "normalize", "pool"]

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


def pool(
    hidden: Float32Array,  # (B, T, H)
    mask: npt.NDArray[np.int64],  # (B, T), 1 for real tokens
    method: Pooling,
    pooler_output: Float32Array | None,  # (B, H) or None when the graph has no pooler
) -> Float32Array:
    """One (B, H) float32 row per sequence. Every sequence has at least one real token ([CLS])."""
    if method is Pooling.POOLER:
        if pooler_output is None:
            raise ValueError("pooling='pooler' needs a graph with pooler_output; this model has no pooler weights")
        return np.ascontiguousarray(pooler_output, dtype=np.float32)
    if method is Pooling.CLS:
        return np.ascontiguousarray(hidden[:, 0, :], dtype=np.float32)
    weights = mask.astype(np.float32)  # (B, T)
    if method is Pooling.MEAN:
        counts = np.maximum(weights.sum(axis=1, keepdims=True), 1.0)  # (B, 1); never 0, so never NaN
        summed: Float32Array = np.einsum("bth,bt->bh", hidden, weights, dtype=np.float32)  # no (B, T, H) mask copy
        mean: Float32Array = summed / counts
        return mean
    masked = np.where(mask[:, :, None].astype(bool), hidden, np.float32(-np.inf))  # (B, T, H)
    peak: Float32Array = masked.max(axis=1).astype(np.float32, copy=False)
    return peak


def normalize(vectors: Float32Array) -> Float32Array:
    """L2-normalize rows; an all-zero row stays zero instead of becoming NaN."""
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit: Float32Array = (vectors / np.maximum(norms, np.float32(1e-12))).astype(np.float32, copy=False)
    return unit
