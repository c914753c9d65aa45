"""`onnxbert export`: run the pipeline and print the summary table (progress goes to stderr)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from .errors import VerificationError
from .pipeline import ExportResult, export_model

__all__ = ["format_figures", "run_export", "summary_table"]


def format_figures(figures: dict[str, Any], state: str | None = None) -> str:
    """One short line of the verification figures that matter for a variant, and its state."""
    if "reason" in figures:
        return f"[{state or 'unverified'}: {figures['reason']}]"
    parts = []
    if "max_abs_hidden" in figures:
        parts.append(f"max|Δ| hidden {figures['max_abs_hidden']:.1e}")
    if "max_abs_pooler" in figures:
        parts.append(f"pooler {figures['max_abs_pooler']:.1e}")
    if "mean_cosine" in figures:
        parts.append(f"cos {figures['mean_cosine']:.4f} (min {figures['min_cosine']:.4f})")
    if "top10_agreement" in figures:
        parts.append(f"top10 {figures['top10_agreement']:.3f}")
    failures = figures.get("failures", [])
    status = state or ("failed" if failures else "passed")
    return ", ".join(parts) + f"  [{status}{': ' + '; '.join(failures) if failures else ''}]"


_SHORT_OPS = {
    "EmbedLayerNormalization": "EmbedLN",
    "SkipLayerNormalization": "SkipLN",
    "LayerNormalization": "LN",
    "Attention": "Attn",
    "MatMulIntegerToFloat": "int8MatMul",
}


def summary_table(result: ExportResult) -> str:
    """Variant, size, fusions, parity figures and time, one row per variant."""
    rows = [("variant", "file", "MB", "fusions", "verification (vs transformers fp32)", "s")]
    for name, variant in result.manifest.variants.items():
        fusions = " ".join(f"{_SHORT_OPS.get(op, op)}={n}" for op, n in variant.fusions.items() if n)
        rows.append(
            (
                name,
                variant.file,
                f"{variant.bytes / 1e6:.1f}",
                fusions,
                format_figures(variant.verification, variant.state),
                f"{result.seconds.get(name, 0.0):.1f}",
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def run_export(args: argparse.Namespace) -> int:
    """Translate parsed flags into `export_model`; a failed gate prints the figures and exits 1."""
    try:
        result = export_model(
            args.model,
            args.output,
            variants=args.variants,
            max_length=args.max_length,
            opset=args.opset,
            int8_quality=args.int8_quality,
            int8_recipe=args.int8_recipe,
            force=args.force,
            lowercase=args.lowercase,
            int8_text=args.int8_text,
            int8_text_field=args.int8_text_field,
            int8_headroom=args.int8_headroom,
        )
    except VerificationError as error:
        print(f"onnxbert export: {error}", file=sys.stderr)
        for name, figures in error.figures.items():
            print(f"  {name}: {format_figures(figures, figures.get('state'))}", file=sys.stderr)
        return 1
    default = result.manifest.default_variant or "none (no variant passed verification; load one by name)"
    print(
        f"wrote {result.directory} (default variant: {default}, "
        f"pooling: {result.manifest.default_pooling}, max_length: {result.manifest.tokenizer.max_length})"
    )
    print(summary_table(result))
    return 0
