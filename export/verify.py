"""Compare each exported variant, run through the runtime's Encoder, with the transformers model.

A variant's state is what was measured: `passed` its gate, `failed` it (nothing is then written), or `unverified`
with the reason (fp16 needs CUDA to run). A gate figure that should exist and does not is a failure, not a pass.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from transformers import AutoTokenizer, PreTrainedModel

from onnxbert.runtime.manifest import Manifest, Variant
from onnxbert.runtime.tokenize import TextTokenizer

from .convert import input_names
from .errors import VerificationError
from .quality import cosines, top_k_agreement
from .stage import open_variant

__all__ = ["GATES", "Reference", "Verdict", "check_tokenizer", "compare", "reference_outputs"]

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


@dataclass(frozen=True)
class Verdict:
    """A variant's state and the figures behind it."""

    state: str  # passed, failed or unverified
    figures: dict[str, Any]


def check_tokenizer(checkpoint: Path, tokenizer: TextTokenizer, texts: list[str]) -> dict[str, Any]:
    """The runtime's ids must be transformers' ids for the checkpoint, text for text; else VerificationError."""
    theirs = AutoTokenizer.from_pretrained(str(checkpoint))
    expected = theirs(texts, truncation=True, max_length=tokenizer.max_length)["input_ids"]
    ours = tokenizer.encode(texts).ids
    differ = [i for i, (a, b) in enumerate(zip(ours, expected, strict=True)) if a.tolist() != list(b)]
    figures: dict[str, Any] = {"texts": len(texts), "against": type(theirs).__name__, "mismatches": len(differ)}
    if differ:
        first = differ[0]
        figures |= {"state": "failed", "failures": [f"{len(differ)} of {len(texts)} texts tokenize differently"]}
        raise VerificationError(
            f"the exported tokenizer disagrees with transformers' {type(theirs).__name__} on {len(differ)} of "
            f"{len(texts)} verification texts; first: {texts[first]!r} -> {ours[first].tolist()} vs "
            f"{list(expected[first])}. Nothing was written",
            {"tokenizer": figures},
        )
    return {**figures, "state": "passed"}


def reference_outputs(
    model: PreTrainedModel, ids: list[npt.NDArray[np.int64]], pad_id: int, *, batch_size: int = 16
) -> Reference:
    """Run transformers on padded batches and strip padding rows again."""
    hidden: list[Float32Array] = []
    pooler: list[Float32Array] = []
    names = input_names(model)
    for start in range(0, len(ids), batch_size):
        chunk = ids[start : start + batch_size]
        width = max(len(row) for row in chunk)
        batch = torch.full((len(chunk), width), pad_id, dtype=torch.int64)  # (B, T)
        mask = torch.zeros((len(chunk), width), dtype=torch.int64)
        for row, tokens in enumerate(chunk):
            batch[row, : len(tokens)] = torch.from_numpy(tokens)
            mask[row, : len(tokens)] = 1
        feeds = {"input_ids": batch, "attention_mask": mask, "token_type_ids": torch.zeros_like(batch)}
        with torch.inference_mode():
            out = model(**{name: feeds[name] for name in names})
        states = out.last_hidden_state.float().numpy()
        hidden.extend(states[row, : len(tokens)] for row, tokens in enumerate(chunk))
        if getattr(out, "pooler_output", None) is not None:
            pooler.append(out.pooler_output.float().numpy())
    mean = np.stack([h.mean(axis=0) for h in hidden]).astype(np.float32)
    return Reference(hidden, np.concatenate(pooler) if pooler else None, mean)


def _gate(variant: Variant, has_pooler: bool) -> dict[str, float]:
    """The bounds that apply to this variant: pooler figures where the model has one, packed where it has a twin."""
    gate = dict(GATES[variant.precision])
    if not has_pooler:
        gate.pop("max_abs_pooler", None)
    if variant.packed is None:
        gate = {name: bound for name, bound in gate.items() if not name.endswith("_packed")}
    return gate


def compare(
    directory: Path, base: Manifest, variant: Variant, texts: list[str], reference: Reference, *, provider: str
) -> Verdict:
    """Figures for one variant against the reference, and whether they pass that variant's gate.

    The variant's own graph (what other ONNX tools load) and, where exported, its packed twin are both judged.
    """
    encoder = open_variant(directory, base, variant, provider=provider, packing=False)
    out = encoder.encode(texts)
    max_hidden = max(float(np.abs(h - r).max()) for h, r in zip(out.last_hidden_state, reference.hidden, strict=True))
    mean = np.stack([h.mean(axis=0) for h in out.last_hidden_state]).astype(np.float32)
    similarity = cosines(mean, reference.mean)
    figures: dict[str, Any] = {
        "texts": len(texts),
        "provider": provider,
        "max_abs_hidden": max_hidden,
        "mean_cosine": float(similarity.mean()),
        "min_cosine": float(similarity.min()),
        "top10_agreement": top_k_agreement(mean, reference.mean, k=10),
    }
    if reference.pooler is not None and out.pooler_output is not None:
        figures["max_abs_pooler"] = float(np.abs(out.pooler_output - reference.pooler).max())
    if variant.packed is not None:
        packed = open_variant(directory, base, variant, provider=provider, packing=True)
        packed_mean = packed.embed(texts, pooling="mean")  # texts share rows: many short ones per row
        figures["max_abs_mean_packed"] = float(np.abs(packed_mean - reference.mean).max())
        figures["mean_cosine_packed"] = float(cosines(packed_mean, reference.mean).mean())
    gate = _gate(variant, base.architecture.has_pooler)
    failures = []
    for name, bound in gate.items():
        value = figures.get(name)
        upper = name.startswith("max_abs")
        if value is None:
            failures.append(f"{name} was not measured")
        elif (value > bound) if upper else (value < bound):
            failures.append(f"{name}={value:.3g} (needs {'<=' if upper else '>='} {bound})")
    figures["gate"] = gate
    figures["failures"] = failures
    return Verdict("failed" if failures else "passed", figures)
