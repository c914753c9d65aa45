"""Build a staged model directory: graph variants, tokenizer, config, and a manifest with verification figures."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import onnxruntime as ort
from tokenizers import Tokenizer

from onnxbert.runtime.manifest import (
    FORMAT_VERSION,
    Architecture,
    Manifest,
    PackedGraph,
    TensorSpec,
    TokenizerSettings,
    Variant,
    sha256_file,
)
from onnxbert.runtime.pooling import Pooling
from onnxbert.runtime.tokenize import TextTokenizer

from .convert import INPUT_NAMES, export_graph, load_model
from .errors import ExportError
from .int8_gate import Int8Budget, choose_int8
from .optimize import check_fusions, fuse, fusion_counts, operator_counts, to_fp16
from .packed import write_packed
from .sentences import VERIFICATION_SENTENCES
from .source import Checkpoint
from .tokenizer import default_pooling, load_tokenizer, lowercases, resolve_max_length, write_tokenizer_config
from .verify import Reference, compare, reference_outputs

if TYPE_CHECKING:
    from .pipeline import Progress

__all__ = ["Built", "Int8Options", "build_directory"]

FILES = {"fp32": "model.onnx", "int8": "model.int8.onnx", "fp16": "model.fp16.onnx"}
_PROVIDERS = {"fp32": "cpu", "int8": "cpu", "fp16": "cuda"}


@dataclass(frozen=True)
class Built:
    """A staged directory's manifest and per-variant build + verify seconds."""

    manifest: Manifest
    seconds: dict[str, float]


@dataclass(frozen=True)
class _Shape:
    layers: int
    heads: int
    hidden: int


@dataclass(frozen=True)
class Int8Options:
    """What the int8 variant must keep of fp32 quality, and which recipe to try ('auto': fastest within budget)."""

    budget: Int8Budget
    recipe: str = "auto"


@dataclass(frozen=True)
class _Text:
    """The staged tokenizer and what the int8 gate needs to run graphs like the runtime does."""

    tokenizer: Path
    max_length: int
    pad_id: int
    pooling: Pooling


def _architecture(config: dict[str, Any], has_pooler: bool) -> Architecture:
    return Architecture(
        model_type=str(config["model_type"]),
        num_layers=int(config["num_hidden_layers"]),
        hidden_size=int(config["hidden_size"]),
        num_heads=int(config["num_attention_heads"]),
        intermediate_size=int(config["intermediate_size"]),
        vocab_size=int(config["vocab_size"]),
        max_position_embeddings=int(config.get("max_position_embeddings", 512)),
        type_vocab_size=int(config.get("type_vocab_size", 2)),
        has_pooler=has_pooler,
    )


def _build_variant(
    name: str, fused: Path, raw: Path, directory: Path, shape: _Shape, text: _Text, int8: Int8Options, say: Progress
) -> Variant:
    target = directory / FILES[name]
    recipe: dict[str, Any]
    if name == "fp32":
        shutil.copyfile(fused, target)
        fusions, recipe = check_fusions(target, shape.layers), {"method": "fp32", "skip_layernorm": "split"}
    elif name == "int8":
        recipe = choose_int8(
            fused,
            target,
            num_layers=shape.layers,
            tokenizer_path=text.tokenizer,
            max_length=text.max_length,
            pad_id=text.pad_id,
            pooling=text.pooling,
            budget=int8.budget,
            recipe=int8.recipe,
            say=say,
        )
        counts = operator_counts(target)
        fusions = {**fusion_counts(counts), "MatMulIntegerToFloat": counts.get("MatMulIntegerToFloat", 0)}
    else:
        fusions = to_fp16(raw, target, num_heads=shape.heads, hidden_size=shape.hidden, num_layers=shape.layers)
        recipe = {"method": "fp16", "keep_io_types": True}
    return Variant(
        file=target.name,
        sha256=sha256_file(target),
        bytes=target.stat().st_size,
        precision=name,
        provider=_PROVIDERS[name],
        fusions=fusions,
        verification={},
        recipe=recipe,
        packed=_packed_twin(target, say) if _PROVIDERS[name] == "cpu" else None,
    )


def _packed_twin(graph: Path, say: Progress) -> PackedGraph | None:
    """The variant's padding-free twin (CPU only: CUDA's Attention with a 3D mask is unverified here)."""
    twin = write_packed(graph)
    if isinstance(twin, str):
        say.say(f"{graph.name}: no packed twin ({twin}); the runtime pads its batches")
        return None
    return PackedGraph(file=twin.name, sha256=sha256_file(twin), bytes=twin.stat().st_size)


def _verify(directory: Path, name: str, texts: list[str], reference: Reference) -> dict[str, Any]:
    if name != "fp16":
        return compare(directory, name, texts, reference, provider="cpu")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        return compare(directory, name, texts, reference, provider="cuda")
    # fp16 attention kernels are CUDA-only in onnxruntime: the structure was checked, the numbers cannot be here.
    return {"passed": True, "verified": False, "reason": "no CUDA provider on the exporting machine"}


def _stage_tokenizer(
    checkpoint: Checkpoint, directory: Path, tokenizer: Tokenizer, max_length: int | None, has_pooler: bool
) -> tuple[TokenizerSettings, _Text, str]:
    """Write tokenizer.json, tokenizer_config.json and config.json; the manifest's settings and the int8 gate's."""
    tokenizer.save(str(directory / "tokenizer.json"))
    shutil.copyfile(checkpoint.path / "config.json", directory / "config.json")
    length = resolve_max_length(checkpoint, max_length)
    write_tokenizer_config(checkpoint, directory, tokenizer, length)
    pad_token = "[PAD]" if tokenizer.token_to_id("[PAD]") is not None else "<pad>"
    pad_id = tokenizer.token_to_id(pad_token)
    settings = TokenizerSettings(
        file="tokenizer.json",
        sha256=sha256_file(directory / "tokenizer.json"),
        vocab_size=tokenizer.get_vocab_size(),
        lowercase=lowercases(tokenizer),
        max_length=length,
        pad_id=int(pad_id if pad_id is not None else checkpoint.config.get("pad_token_id", 0)),
        pad_token=pad_token,
    )
    pooling, pooling_source = default_pooling(checkpoint, has_pooler)
    text = _Text(directory / "tokenizer.json", length, settings.pad_id, Pooling.parse(pooling))
    return settings, text, pooling_source


def build_directory(
    checkpoint: Checkpoint,
    directory: Path,
    variants: list[str],
    *,
    max_length: int | None,
    opset: int,
    int8: Int8Options,
    versions: dict[str, str],
    say: Progress,
) -> Built:
    """Write every requested variant and the manifest into `directory`, each variant verified."""
    with say.step("loading model"):
        model, has_pooler = load_model(checkpoint)
        tokenizer = load_tokenizer(checkpoint)
    config = checkpoint.config
    arch = _architecture(config, has_pooler)
    shape = _Shape(arch.num_layers, arch.num_heads, arch.hidden_size)
    if tokenizer.get_vocab_size() > arch.vocab_size:
        raise ExportError(
            f"the tokenizer has {tokenizer.get_vocab_size()} tokens but the model only {arch.vocab_size} embedding "
            "rows: ids past the table would read out of bounds"
        )
    settings, text, pooling_source = _stage_tokenizer(checkpoint, directory, tokenizer, max_length, has_pooler)
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(dir=directory) as work:
        raw, fused = Path(work) / "raw.onnx", Path(work) / "fused.onnx"
        with say.step(f"exporting graph (opset {opset})"):
            outputs = export_graph(model, raw, with_pooler=has_pooler, opset=opset)
        with say.step("fusing (ONNX Runtime BERT optimizer)"):
            fuse(raw, fused, num_heads=shape.heads, hidden_size=shape.hidden, num_layers=shape.layers)
        built: dict[str, Variant] = {}
        for name in variants:
            start = time.perf_counter()
            with say.step(f"building {name}"):
                built[name] = _build_variant(name, fused, raw, directory, shape, text, int8, say)
            seconds[name] = time.perf_counter() - start
    manifest = Manifest(
        format_version=FORMAT_VERSION,
        source={
            "model": checkpoint.model_id,
            "revision": checkpoint.revision,
            "files": checkpoint.files,
            "default_pooling_from": pooling_source,
        },
        architecture=arch,
        inputs=[TensorSpec(name, "int64", ["batch", "sequence"]) for name in INPUT_NAMES],
        outputs=[TensorSpec("last_hidden_state", "float32", ["batch", "sequence", arch.hidden_size])]
        + ([TensorSpec("pooler_output", "float32", ["batch", arch.hidden_size])] if "pooler_output" in outputs else []),
        tokenizer=settings,
        default_pooling=text.pooling.value,
        default_variant="fp32" if "fp32" in built else variants[0],
        variants=built,
        versions=versions,
    )
    manifest.save(directory)
    texts = list(VERIFICATION_SENTENCES)
    with say.step(f"running transformers on {len(texts)} verification texts"):
        tokens = TextTokenizer(text.tokenizer, max_length=manifest.tokenizer.max_length)
        ids = tokens.encode(texts).ids
        reference = reference_outputs(model, ids, manifest.tokenizer.pad_id)
    for name in variants:
        start = time.perf_counter()
        with say.step(f"verifying {name}"):
            figures = _verify(directory, name, texts, reference)
        seconds[name] += time.perf_counter() - start
        built[name] = replace(built[name], verification=figures)
    manifest = replace(manifest, variants=built)
    manifest.save(directory)
    return Built(manifest, seconds)
