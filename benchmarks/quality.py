"""Quality next to speed: agreement with PyTorch fp32 and STS-B dev Spearman."""

from __future__ import annotations

from typing import Any

import numpy as np

from onnxbert.export import quality

__all__ = ["agreement", "model_flops", "sts_spearman"]


def model_flops(lengths: list[int], config: dict[str, Any]) -> float:
    """Multiply-adds x 2 of the encoder over sequences of the given lengths (projections, FFN, attention, pooler)."""
    h, i, layers = config["hidden_size"], config["intermediate_size"], config["num_hidden_layers"]
    per_layer = sum(t * (8 * h * h + 4 * h * i) + 4 * t * t * h for t in lengths)
    return float(layers * per_layer + len(lengths) * 2 * h * h)


def agreement(vectors: np.ndarray, reference: np.ndarray) -> dict[str, float]:
    similarity = quality.cosines(vectors, reference)
    return {
        "mean_cosine": float(similarity.mean()),
        "min_cosine": float(similarity.min()),
        "max_abs_diff": float(np.abs(vectors - reference).max()),
        "top10_agreement": quality.top_k_agreement(vectors, reference),
    }


def sts_spearman(
    vectors: np.ndarray, index: dict[str, int], left: list[str], right: list[str], gold: list[float]
) -> float:
    """Spearman between gold similarity and the cosine of each pair's vectors (the STS-B dev metric)."""
    return quality.sts_spearman(vectors, [index[s] for s in left], [index[s] for s in right], gold)
