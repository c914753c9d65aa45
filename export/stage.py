"""A variant in a model directory: its graph file, its packed twin, the manifest record, and an Encoder on it.

Export judges every graph it writes (and every int8 candidate) through the runtime's own Encoder, given the manifest
in memory before onnxbert.json exists: what is judged is what users run.
"""

from __future__ import annotations

import shutil
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

from onnxbert.runtime import Encoder
from onnxbert.runtime.manifest import Manifest, PackedGraph, Variant, sha256_file

from .packed import write_packed
from .progress import Progress

__all__ = ["FILES", "PROVIDERS", "model_slot", "open_variant", "record_variant"]

FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}
PROVIDERS = {"fp32": "cpu", "int8": "cpu", "fp16": "cuda"}


def record_variant(
    graph: Path, precision: str, base: Manifest, *, fusions: dict[str, int], recipe: dict[str, Any], say: Progress
) -> Variant:
    """The manifest record of a graph already written at its place in a directory, with its packed twin (CPU).

    `base` describes the model (its architecture's position offset goes into the twin).
    """
    return Variant(
        file=graph.name,
        sha256=sha256_file(graph),
        bytes=graph.stat().st_size,
        precision=precision,
        provider=PROVIDERS[precision],
        fusions=fusions,
        verification={},
        state="unverified",
        recipe=recipe,
        packed=_packed_twin(graph, base.architecture.position_offset, say) if PROVIDERS[precision] == "cpu" else None,
    )


def _packed_twin(graph: Path, position_offset: int, say: Progress) -> PackedGraph | None:
    """The graph's padding-free twin (CPU only: CUDA's Attention with a 3D mask is unverified here)."""
    twin = write_packed(graph, position_offset)
    if isinstance(twin, str):
        say.say(f"{graph.name}: no packed twin ({twin}); the runtime pads its batches")
        return None
    return PackedGraph(file=twin.name, sha256=sha256_file(twin), bytes=twin.stat().st_size)


def model_slot(directory: Path, tokenizer: Path, precision: str) -> Path:
    """A fresh scratch model directory holding `tokenizer`; returns where its `precision` graph goes."""
    directory.mkdir(parents=True)
    shutil.copyfile(tokenizer, directory / tokenizer.name)
    return directory / FILES[precision]


def open_variant(directory: Path, base: Manifest, variant: Variant, **options: Any) -> Encoder:
    """An Encoder on `variant` of `directory`, described by `base` (architecture, tokenizer) in memory.

    `options` go to Encoder (provider, packing, threads ...).
    """
    manifest = replace(base, variants={variant.precision: variant}, default_variant=None)
    with warnings.catch_warnings():  # it is being judged: that it is not verified yet is the point, not news
        warnings.simplefilter("ignore", UserWarning)
        return Encoder(directory, manifest=manifest, variant=variant.precision, **options)
