"""Quality next to speed: agreement with PyTorch fp32 and STS-B dev Spearman."""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxbert.export.verify import rankdata, spearman, top_k_agreement  # shared with export's gates

__all__ = ["agreement", "model_flops", "rankdata", "spearman", "sts_spearman", "top_k_agreement"]


def model_flops(lengths: list[int], config: dict[str, Any]) -> float:
    """Multiply-adds x 2 of the encoder over sequences of the given lengths (projections, FFN, attention, pooler)."""
    h, i, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    per_layer = sum(t * (8 * h * h + 4 * h * i) + 4 * t * t * h for t in lengths)
    return float(layers * per_layer + len(lengths) * 2 * h * h)


def _unit(v: np.ndarray) -> np.ndarray:
    return v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)


def agreement(vectors: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    cosines = (_unit(vectors) * _unit(reference)).sum(axis=1)
    return {
        "mean_cosine": float(cosines.mean()),
        "min_cosine": float(cosines.min()),
        "max_abs_diff": float(np.abs(vectors - reference).max()),
        "top10_agreement": top_k_agreement(vectors, reference),
    }


def sts_spearman(
    vectors: np.ndarray, index: dict[str, int], left: list[str], right: list[str], gold: list[float]
) -> float:
    """Spearman between gold similarity and the cosine of each pair's vectors (the STS-B dev metric)."""
    a = _unit(vectors[[index[s] for s in left]])
    b = _unit(vectors[[index[s] for s in right]])
    return spearman((a * b).sum(axis=1), np.asarray(gold))
