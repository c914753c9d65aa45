"""Build a staged model directory: graph variants, tokenizer, config, and a manifest with verification states."""

from __future__ import annotations

import shutil
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import onnxruntime as ort
from tokenizers import Tokenizer
from transformers import PreTrainedModel

from onnxbert.runtime.manifest import (
    FORMAT_VERSION,
    Architecture,
    Manifest,
    TensorSpec,
    TokenizerSettings,
    Variant,
    sha256_file,
)
from onnxbert.runtime.pooling import Pooling
from onnxbert.runtime.tokenize import TextTokenizer

from .convert import export_graph, load_model
from .errors import ExportError
from .family import family_of
from .int8_gate import Int8Budget, choose_int8
from .int8_text import Int8Text, default_int8_text
from .judge import Judge
from .optimize import GraphShape, check_fusions, fuse, fusion_counts, operator_counts, to_fp16
from .progress import Progress
from .sentences import VERIFICATION_SENTENCES
from .source import Checkpoint
from .stage import FILES, record_variant
from .tokenizer import default_pooling, load_tokenizer, lowercases, resolve_max_length, write_tokenizer_config
from .verify import Reference, Verdict, check_tokenizer, compare, reference_outputs

__all__ = ["Built", "Int8Options", "build_directory"]

# Which verified variant `variant="auto"` loads on a CPU (CUDA prefers a passed fp16 at load time).
_DEFAULT_ORDER = ("fp32", "int8", "fp16")


@dataclass(frozen=True)
class Built:
    """A staged directory's manifest and per-variant build + verify seconds."""

    manifest: Manifest
    seconds: dict[str, float]


@dataclass(frozen=True)
class Int8Options:
    """What int8 must keep of fp32, which recipe to try ('auto': fastest within budget), and with what text.

    `user_text`: the user's text, read and split (None: the default for the model's language, export/int8_text.py).
    `top10_headroom`: what the search asks on top of the budget's top-10 on its texts (None: the text's own).
    """

    budget: Int8Budget
    recipe: str = "auto"
    user_text: Int8Text | None = None
    top10_headroom: float | None = None


@dataclass(frozen=True)
class _Work:
    """What every variant is built from: the raw and fused graphs, the base manifest, and a scratch directory."""

    raw: Path
    fused: Path
    scratch: Path
    base: Manifest
    say: Progress


def _architecture(model: PreTrainedModel, has_pooler: bool) -> Architecture:
    config = model.config  # transformers maps each family's own names (DistilBERT's dim, n_layers) onto these
    return Architecture(
        model_type=str(config.model_type),
        num_layers=int(config.num_hidden_layers),
        hidden_size=int(config.hidden_size),
        num_heads=int(config.num_attention_heads),
        intermediate_size=int(getattr(config, "intermediate_size", getattr(config, "hidden_dim", 0))),
        vocab_size=int(config.vocab_size),
        max_position_embeddings=int(config.max_position_embeddings),
        type_vocab_size=int(getattr(config, "type_vocab_size", 0)),
        has_pooler=has_pooler,
        position_offset=family_of(config.model_type).position_offset(config),
    )


def _shape(arch: Architecture) -> GraphShape:
    embedding_fused = family_of(arch.model_type).embedding_fused
    return GraphShape(arch.num_heads, arch.hidden_size, arch.num_layers, embedding_fused)


def _build_variant(name: str, directory: Path, work: _Work, int8: Int8Options) -> Variant:
    """Write one variant's graph (and packed twin) into `directory`; its record, not yet verified."""
    arch, target = work.base.architecture, directory / FILES[name]
    recipe: dict[str, Any]
    if name == "fp32":
        shutil.copyfile(work.fused, target)
        fusions = check_fusions(target, arch.num_layers, embedding_fused=_shape(arch).embedding_fused)
        recipe = {"method": "fp32", "skip_layernorm": "split"}
    elif name == "int8":
        tokenizer = directory / work.base.tokenizer.file
        text = int8.user_text or default_int8_text(Tokenizer.from_file(str(tokenizer)))
        judge = Judge(
            work.scratch / "int8",
            work.base,
            tokenizer,
            Pooling.parse(work.base.default_pooling),
            text.selection,
            work.say,
        )
        recipe = choose_int8(
            work.fused,
            target,
            num_layers=arch.num_layers,
            judge=judge,
            text=text,
            max_length=work.base.tokenizer.max_length,
            pad_id=work.base.tokenizer.pad_id,
            budget=replace(
                int8.budget,
                top10_headroom=text.top10_headroom if int8.top10_headroom is None else int8.top10_headroom,
            ),
            recipe=int8.recipe,
        )
        counts = operator_counts(target)
        fusions = {**fusion_counts(counts), "MatMulIntegerToFloat": counts.get("MatMulIntegerToFloat", 0)}
    else:
        fusions = to_fp16(work.raw, target, _shape(arch))
        recipe = {"method": "fp16", "keep_io_types": True}
    return record_variant(target, name, work.base, fusions=fusions, recipe=recipe, say=work.say)


def _verify(directory: Path, work: _Work, variant: Variant, reference: Reference) -> Verdict:
    texts = list(VERIFICATION_SENTENCES)
    if variant.provider == "cpu":
        return compare(directory, work.base, variant, texts, reference, provider="cpu")
    if "CUDAExecutionProvider" in ort.get_available_providers():
        return compare(directory, work.base, variant, texts, reference, provider="cuda")
    # fp16 attention kernels are CUDA-only in onnxruntime: the structure was checked, the numbers cannot be here.
    return Verdict("unverified", {"reason": "no CUDA provider on the exporting machine: fp16 was not run"})


def _stage_tokenizer(
    checkpoint: Checkpoint, directory: Path, tokenizer: Tokenizer, max_length: int | None, arch: Architecture
) -> TokenizerSettings:
    """Write tokenizer.json, tokenizer_config.json and config.json; the manifest's tokenizer settings."""
    tokenizer.save(str(directory / "tokenizer.json"))
    shutil.copyfile(checkpoint.path / "config.json", directory / "config.json")
    length = resolve_max_length(checkpoint, max_length, arch.max_position_embeddings - arch.position_offset)
    write_tokenizer_config(checkpoint, directory, tokenizer, length)
    pad_token = "[PAD]" if tokenizer.token_to_id("[PAD]") is not None else "<pad>"
    pad_id = tokenizer.token_to_id(pad_token)
    return TokenizerSettings(
        file="tokenizer.json",
        sha256=sha256_file(directory / "tokenizer.json"),
        vocab_size=tokenizer.get_vocab_size(),
        lowercase=lowercases(tokenizer),
        max_length=length,
        pad_id=int(pad_id if pad_id is not None else checkpoint.config.get("pad_token_id", 0)),
        pad_token=pad_token,
    )


def _reference(
    model: PreTrainedModel, checkpoint: Checkpoint, directory: Path, settings: TokenizerSettings, say: Progress
) -> tuple[Reference, TokenizerSettings]:
    """Transformers' outputs on the verification texts, after checking the tokenizers agree on them."""
    texts = list(VERIFICATION_SENTENCES)
    with say.step(f"running transformers on {len(texts)} verification texts"):
        tokens = TextTokenizer(directory / settings.file, max_length=settings.max_length)
        checked = check_tokenizer(checkpoint.path, tokens, texts)
        reference = reference_outputs(model, tokens.encode(texts).ids, settings.pad_id)
    return reference, replace(settings, verification=checked)


def _base_manifest(
    checkpoint: Checkpoint,
    arch: Architecture,
    settings: TokenizerSettings,
    inputs: list[str],
    outputs: list[str],
    versions: dict[str, str],
) -> Manifest:
    """Everything but the variants: what each variant is judged with, and the final manifest's skeleton."""
    pooling, pooling_source = default_pooling(checkpoint, arch.has_pooler)
    return Manifest(
        format_version=FORMAT_VERSION,
        source={
            "model": checkpoint.model_id,
            "format": checkpoint.format,
            **checkpoint.details,
            "revision": checkpoint.revision,
            "files": checkpoint.files,
            "default_pooling_from": pooling_source,
        },
        architecture=arch,
        inputs=[TensorSpec(name, "int64", ["batch", "sequence"]) for name in inputs],
        outputs=[TensorSpec("last_hidden_state", "float32", ["batch", "sequence", arch.hidden_size])]
        + ([TensorSpec("pooler_output", "float32", ["batch", arch.hidden_size])] if "pooler_output" in outputs else []),
        tokenizer=settings,
        default_pooling=Pooling.parse(pooling).value,
        default_variant=None,
        variants={},
        versions=versions,
    )


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
    """Write every requested variant into `directory`, each verified, then the manifest once."""
    with say.step("loading model"):
        model, has_pooler = load_model(checkpoint)
        tokenizer = load_tokenizer(checkpoint)
    arch = _architecture(model, has_pooler)
    if tokenizer.get_vocab_size() > arch.vocab_size:
        raise ExportError(
            f"the tokenizer has {tokenizer.get_vocab_size()} tokens but the model only {arch.vocab_size} embedding "
            "rows: ids past the table would read out of bounds"
        )
    settings = _stage_tokenizer(checkpoint, directory, tokenizer, max_length, arch)
    reference, settings = _reference(model, checkpoint, directory, settings, say)
    seconds: dict[str, float] = {}
    built: dict[str, Variant] = {}
    with tempfile.TemporaryDirectory(dir=directory) as scratch:
        raw, fused = Path(scratch) / "raw.onnx", Path(scratch) / "fused.onnx"
        with say.step(f"exporting graph (opset {opset})"):
            inputs, outputs = export_graph(model, raw, with_pooler=has_pooler, opset=opset)
        with say.step("fusing (ONNX Runtime BERT optimizer)"):
            fuse(raw, fused, _shape(arch))
        base = _base_manifest(checkpoint, arch, settings, inputs, outputs, versions)
        work = _Work(raw, fused, Path(scratch), base, say)
        for name in variants:
            start = time.perf_counter()
            with say.step(f"building {name}"):
                variant = _build_variant(name, directory, work, int8)
            with say.step(f"verifying {name}"):
                verdict = _verify(directory, work, variant, reference)
            built[name] = replace(variant, state=verdict.state, verification=verdict.figures)
            seconds[name] = time.perf_counter() - start
    default = next((name for name in _DEFAULT_ORDER if name in built and built[name].state == "passed"), None)
    manifest = replace(work.base, variants=built, default_variant=default)
    manifest.save(directory)
    return Built(manifest, seconds)
