"""export_model: load -> convert -> optimize -> quantize -> verify -> save, one linear pipeline."""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import onnxruntime as ort

from onnxbert.runtime.manifest import PRECISIONS, Manifest

from .errors import ExportError, VerificationError
from .int8_gate import Int8Budget, parse_recipe
from .int8_text import check_int8_text
from .progress import Progress
from .source import resolve_checkpoint

__all__ = ["ExportResult", "export_model", "parse_variants"]


@dataclass(frozen=True)
class ExportResult:
    """What was written, and how long each variant took to build and verify."""

    directory: Path
    manifest: Manifest
    seconds: dict[str, float]


def parse_variants(variants: str | Sequence[str]) -> list[str]:
    """'fp32,int8' or ['fp32', 'int8'] -> a checked, de-duplicated list in canonical order."""
    names = [v.strip() for v in (variants.split(",") if isinstance(variants, str) else variants) if v.strip()]
    unknown = sorted(set(names) - set(PRECISIONS))
    if unknown or not names:
        raise ExportError(f"variants {unknown or names!r} not understood; choose from {', '.join(PRECISIONS)}")
    return [p for p in PRECISIONS if p in names]


def _prepare_output(output: Path, force: bool) -> None:
    if output.exists() and not output.is_dir():
        raise ExportError(f"--output {output} is a file; give a directory path")
    if output.exists() and any(output.iterdir()) and not force:
        raise ExportError(f"{output} already exists and is not empty; pass --force (force=True) to replace it")
    output.parent.mkdir(parents=True, exist_ok=True)


def _versions() -> dict[str, str]:
    import onnx
    import torch
    import transformers

    from onnxbert import __version__

    return {
        "onnxbert": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": ort.__version__,
    }


def export_model(
    model: str | Path | None,
    output: str | Path,
    *,
    variants: str | Sequence[str] = ("fp32", "int8"),
    max_length: int | None = None,
    opset: int = 17,
    int8_quality: str | Int8Budget = "strict",
    int8_recipe: str = "auto",
    force: bool = False,
    lowercase: bool | None = None,
    int8_text: str | Path | None = None,
    int8_text_field: str = "text",
    int8_headroom: float | None = None,
    progress: TextIO | bool = True,
) -> ExportResult:
    """Export `model` to `output`, every variant verified first.

    `model`: a Hugging Face checkpoint directory or hub id, Google's original TensorFlow release (its folder or
    `bert_model.ckpt` prefix; needs the `tf` extra), or None for the embedded all-MiniLM-L6-v2.

    `int8_quality`: what int8 must keep of fp32, on the selection text and on held-out text: 'strict' (mean cosine
    >= 0.998, top-10 neighbours >= 0.97, Spearman within 0.005 where the text has scored pairs), 'balanced', 'any',
    or 'cos=...,top10=...,spearman=...'.
    `int8_text`: the user's text for int8 (text lines, JSONL with `int8_text_field`, or a Parquet column), split
    into calibration, selection and held-out parts; None: STS-B English, or Chinese text for a mostly-CJK vocabulary.
    `int8_headroom`: top-10 agreement the search asks of its own texts on top of `int8_quality`'s, so that text it
    never saw keeps the budget; recorded beside the budget. None: 0.005 with `int8_text` (its held-out part is the
    same file's), 0 for the default text (gated on another genre).
    `int8_recipe`: 'auto' (the fastest pair-safe recipe within the budget: a graph every x86 CPU runs exactly on its
    fast int8 kernel; 'auto-pairsafe' is the same), 'auto-vnni' (the same among the plain recipes, for servers with
    VNNI or AMX), or one recipe name, still held to the budget.
    `lowercase`: for a Google release, whether its tokenizer lower-cases (None: read from the release's name or
    vocabulary, as Google's own tokenizer checks; recorded in the manifest).
    `progress`: True for step lines on stderr, False for none, or a stream to write them to.
    Every variant is verified against the transformers model before anything is written; a failing variant
    raises VerificationError with the figures and leaves `output` untouched.
    """
    from .build import Int8Options, build_directory  # torch-heavy: imported on call so --help stays fast

    wanted = parse_variants(variants)
    text_file = Path(int8_text) if int8_text is not None else None
    for option, given in (("--int8-text", text_file), ("--int8-headroom", int8_headroom)):
        if "int8" not in wanted and given is not None:
            raise ExportError(f"{option} is for the int8 variant, which --variants does not ask for")
    budget, recipe = Int8Budget.parse(int8_quality), parse_recipe(int8_recipe)
    if int8_headroom is not None and not 0.0 <= int8_headroom < 1.0:
        raise ExportError(f"--int8-headroom {int8_headroom} is top-10 agreement to add: give a number in [0, 1)")
    user_text = check_int8_text(text_file, int8_text_field) if "int8" in wanted else None  # read once, here
    int8 = Int8Options(budget, recipe, user_text, int8_headroom)
    if opset < 17:
        raise ExportError(f"--opset {opset} is too old; the fused graph needs opset >= 17")
    target = Path(output).resolve()
    _prepare_output(target, force)
    say = Progress(sys.stderr if progress is True else (progress or None))
    with tempfile.TemporaryDirectory(prefix=f".{target.name}.source-", dir=target.parent) as converted:
        with say.step("resolving checkpoint"):
            checkpoint = resolve_checkpoint(model, converted=Path(converted), lowercase=lowercase)
        say.say(f"source: {checkpoint.model_id} ({checkpoint.format})")
        staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.staging-", dir=target.parent))
        staging.chmod(0o755)  # mkdtemp makes it private; the result is an ordinary shareable directory
        try:
            built = build_directory(
                checkpoint,
                staging,
                wanted,
                max_length=max_length,
                opset=opset,
                int8=int8,
                versions=_versions(),
                say=say,
            )
            failed = [name for name, v in built.manifest.variants.items() if v.state == "failed"]
            if failed:
                figures = {name: {"state": v.state, **v.verification} for name, v in built.manifest.variants.items()}
                raise VerificationError(f"variants {failed} failed verification; nothing was written", figures)
            if target.exists():
                shutil.rmtree(target)
            staging.rename(target)
        finally:
            if staging.exists():
                shutil.rmtree(staging)
    return ExportResult(target, Manifest.load(target), built.seconds)
