"""Compare each exported variant, run through the real runtime Encoder, with the transformers model."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from transformers import BertModel

from onnxbert.runtime import Encoder

__all__ = ["GATES", "Reference", "compare", "rankdata", "reference_outputs", "spearman", "top_k_agreement"]

Float32Array = npt.NDArray[np.float32]

# fp32 must match transformers to 1e-4 (padding masked); reduced precisions are judged on sentence vectors.
# The packed twin (several texts per row) is judged on mean-pooled vectors against the same reference.
GATES: dict[str, dict[str, float]] = {
    "fp32": {"max_abs_hidden": 1e-4, "max_abs_pooler": 1e-4, "max_abs_mean_packed": 1e-4},
    "int8": {"mean_cosine": 0.99, "mean_cosine_packed": 0.99},
    "fp16": {"mean_cosine": 0.999},
}


@dataclass(frozen=True)
class Reference:
    """transformers' outputs for the verification texts, tokenized exactly as the runtime tokenizes them."""

    hidden: list[Float32Array]  # each (tokens_i, H)
    pooler: Float32Array | None  # (n, H)
    mean: Float32Array  # (n, H) mask-aware mean of `hidden`


def reference_outputs(
    model: BertModel, ids: list[npt.NDArray[np.int64]], pad_id: int, *, batch_size: int = 16
) -> Reference:
    """Run transformers on padded batches and strip padding rows again."""
    hidden: list[Float32Array] = []
    pooler: list[Float32Array] = []
    for start in range(0, len(ids), batch_size):
        chunk = ids[start : start + batch_size]
        width = max(len(row) for row in chunk)
        batch = torch.full((len(chunk), width), pad_id, dtype=torch.int64)  # (B, T)
        mask = torch.zeros((len(chunk), width), dtype=torch.int64)
        for row, tokens in enumerate(chunk):
            batch[row, : len(tokens)] = torch.from_numpy(tokens)
            mask[row, : len(tokens)] = 1
        with torch.inference_mode():
            out = model(input_ids=batch, attention_mask=mask, token_type_ids=torch.zeros_like(batch))
        states = out.last_hidden_state.float().numpy()
        hidden.extend(states[row, : len(tokens)] for row, tokens in enumerate(chunk))
        if out.pooler_output is not None:
            pooler.append(out.pooler_output.float().numpy())
    mean = np.stack([h.mean(axis=0) for h in hidden]).astype(np.float32)
    return Reference(hidden, np.concatenate(pooler) if pooler else None, mean)


def _cosines(a: Float32Array, b: Float32Array) -> Float32Array:
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return np.asarray((a * b).sum(axis=1), dtype=np.float32)


def top_k_agreement(a: Float32Array, b: Float32Array, k: int = 10) -> float:
    """Mean share of each text's k nearest neighbours (by cosine, self excluded) that both vector sets agree on."""

    def neighbours(v: Float32Array) -> npt.NDArray[np.intp]:
        unit = v / np.maximum(np.linalg.norm(v, axis=1, keepdims=True), 1e-12)
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


def compare(
    directory: Path, variant: str, texts: list[str], reference: Reference, *, provider: str = "cpu"
) -> dict[str, Any]:
    """Figures for one variant against the reference, and whether they pass that variant's gate.

    The variant's own graph (what other ONNX tools load) and, where exported, its packed twin are both judged.
    """
    encoder = Encoder(directory, variant=variant, provider=provider, packing=False)
    out = encoder.encode(texts)
    max_hidden = max(float(np.abs(h - r).max()) for h, r in zip(out.last_hidden_state, reference.hidden, strict=True))
    mean = np.stack([h.mean(axis=0) for h in out.last_hidden_state]).astype(np.float32)
    cosines = _cosines(mean, reference.mean)
    figures: dict[str, Any] = {
        "texts": len(texts),
        "provider": provider,
        "max_abs_hidden": max_hidden,
        "mean_cosine": float(cosines.mean()),
        "min_cosine": float(cosines.min()),
        "top10_agreement": top_k_agreement(mean, reference.mean, k=10),
    }
    if reference.pooler is not None and out.pooler_output is not None:
        figures["max_abs_pooler"] = float(np.abs(out.pooler_output - reference.pooler).max())
    packed = Encoder(directory, variant=variant, provider=provider, packing=True)
    if packed.packing:
        packed_mean = packed.embed(texts, pooling="mean")  # texts share rows: many short ones per row
        figures["max_abs_mean_packed"] = float(np.abs(packed_mean - reference.mean).max())
        figures["mean_cosine_packed"] = float(_cosines(packed_mean, reference.mean).mean())
    gate = GATES[variant]
    failures = []
    for name, bound in gate.items():
        value = figures.get(name)
        if value is None:
            continue
        ok = value <= bound if name.startswith("max_abs") else value >= bound
        if not ok:
            failures.append(f"{name}={value:.3g} (needs {'<=' if name.startswith('max_abs') else '>='} {bound})")
    figures["gate"] = gate
    figures["passed"] = not failures
    figures["failures"] = failures
    return figures
