"""How close two sets of sentence vectors are: the figures every gate and benchmark reports."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from onnxbert.runtime.pooling import normalize

__all__ = ["cosines", "rankdata", "spearman", "sts_spearman", "top_k_agreement"]

Float32Array = npt.NDArray[np.float32]


def cosines(a: Float32Array, b: Float32Array) -> Float32Array:
    """Row-wise cosine similarity of two (n, H) arrays."""
    return np.asarray((normalize(a) * normalize(b)).sum(axis=1), dtype=np.float32)


def top_k_agreement(a: Float32Array, b: Float32Array, k: int = 10) -> float:
    """Mean share of each text's k nearest neighbours (by cosine, self excluded) that both vector sets agree on."""

    def neighbours(v: Float32Array) -> npt.NDArray[np.intp]:
        unit = normalize(v)
        sims = unit @ unit.T
        np.fill_diagonal(sims, -np.inf)
        return np.argpartition(-sims, k, axis=1)[:, :k]  # the k best, unordered: membership is what counts

    left, right = neighbours(a), neighbours(b)
    return float(np.mean([len(set(x) & set(y)) / k for x, y in zip(left, right, strict=True)]))


def rankdata(values: npt.NDArray[np.floating[Any]]) -> npt.NDArray[np.float64]:
    """Ranks with ties averaged (as scipy.stats.rankdata)."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(1, len(values) + 1)
    _, inverse, counts = np.unique(values, return_inverse=True, return_counts=True)
    averaged: npt.NDArray[np.float64] = (np.bincount(inverse, weights=ranks) / counts)[inverse]
    return averaged


def spearman(a: npt.ArrayLike, b: npt.ArrayLike) -> float:
    """Spearman rank correlation of two equal-length sequences."""
    return float(np.corrcoef(rankdata(np.asarray(a)), rankdata(np.asarray(b)))[0, 1])


def sts_spearman(vectors: Float32Array, left: list[int], right: list[int], gold: npt.ArrayLike) -> float:
    """Spearman between gold similarity and the cosine of each pair's vectors (rows `left[i]`, `right[i]`)."""
    return spearman(cosines(vectors[left], vectors[right]), gold)
