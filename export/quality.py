"""How close two sets of sentence vectors are: the figures every gate and benchmark reports."""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from onnxbert.runtime.pooling import normalize

__all__ = ["cosines", "nearest", "rankdata", "shared_share", "spearman", "sts_spearman", "top_k_agreement"]

Float32Array = npt.NDArray[np.float32]


def cosines(a: Float32Array, b: Float32Array) -> Float32Array:
    """Row-wise cosine similarity of two (n, H) arrays."""
    return np.asarray((normalize(a) * normalize(b)).sum(axis=1), dtype=np.float32)


def nearest(vectors: Float32Array, k: int = 10) -> npt.NDArray[np.intp]:
    """Each row's k nearest other rows by cosine, unordered (membership is what top-k agreement counts)."""
    unit = normalize(vectors)
    sims = unit @ unit.T
    np.fill_diagonal(sims, -np.inf)
    return np.argpartition(-sims, k, axis=1)[:, :k]


def shared_share(left: npt.NDArray[np.intp], right: npt.NDArray[np.intp]) -> float:
    """Mean share of each row's neighbours (`nearest`'s output) that `left` and `right` have in common."""
    common = (left[:, :, None] == right[:, None, :]).any(axis=2).sum(axis=1)  # rows hold no repeats
    return float(common.mean() / left.shape[1])


def top_k_agreement(a: Float32Array, b: Float32Array, k: int = 10) -> float:
    """Mean share of each text's k nearest neighbours (by cosine, self excluded) that both vector sets agree on."""
    return shared_share(nearest(a, k), nearest(b, k))


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
