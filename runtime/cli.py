"""`onnxbert embed` and `onnxbert info`: file and terminal front ends to the Encoder."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import numpy as np

from .encoder import Encoder
from .manifest import Manifest, held_out_verdict, unknown_tokens_note
from .pooling import normalize
from .session import cpu_flags, int8_fits_16_bits, int8_kernel, int8_kernel_without_vnni
from .textfile import read_texts

__all__ = ["run_embed", "run_info"]

_CHUNK = 2048  # texts per Encoder call when streaming a file: bounds memory and paces the progress line


def _chunks(texts: list[str], show: bool) -> Iterator[tuple[int, list[str]]]:
    for start in range(0, len(texts), _CHUNK):
        yield start, texts[start : start + _CHUNK]
        if show:
            done = min(start + _CHUNK, len(texts))
            print(
                f"\rembedded {done}/{len(texts)} texts",
                end="" if done < len(texts) else "\n",
                file=sys.stderr,
            )


def _write_rows(sink: TextIO, rows: Iterator[dict[str, Any]]) -> None:
    for row in rows:
        sink.write(json.dumps(row, ensure_ascii=False) + "\n")


def _summary(encoder: Encoder, texts: list[str], vectors: np.ndarray, pooling: str) -> None:
    tokens = encoder.tokenize(texts)
    print(f"{encoder!r}, pooling={pooling}")
    for index, text in enumerate(texts):
        head = " ".join(f"{value:+.4f}" for value in vectors[index, :4])
        print(
            f"[{index}] {len(tokens.ids[index]):>3} tokens  |v|={np.linalg.norm(vectors[index]):.3f}  "
            f"[{head} ...]  {text[:60]}"
        )
    if len(texts) > 1:
        unit = normalize(vectors)
        print("cosine similarity:")
        for index, row in enumerate(unit @ unit.T):
            print(f"[{index}] " + " ".join(f"{value:6.3f}" for value in row))


def run_embed(args: argparse.Namespace) -> int:
    """Embed arguments or a file; write .npy / .jsonl or JSON lines to stdout."""
    texts = list(args.texts)
    if args.input:
        texts += read_texts(Path(args.input), args.field)
    if not texts:
        raise ValueError("nothing to embed: give TEXT arguments or --input FILE")
    output = Path(args.output) if args.output else None
    if output is not None and output.suffix not in (".npy", ".jsonl"):
        raise ValueError(f"--output {output}: use a .npy or .jsonl file name")
    if args.token_level and output is not None and output.suffix == ".npy":
        raise ValueError("--token-level rows differ in length: write them to a .jsonl file, not .npy")
    encoder = Encoder(
        args.directory,
        variant=args.variant,
        provider=args.provider,
        threads=args.threads,
        workers=args.workers,
        max_length=args.max_length,
    )
    pooling = args.pooling or encoder.default_pooling
    show = args.input is not None and sys.stderr.isatty()
    if args.token_level:
        sink = output.open("w", encoding="utf-8") if output else sys.stdout
        for start, chunk in _chunks(texts, show):
            out = encoder.encode(chunk)
            _write_rows(
                sink,
                (
                    {
                        "index": start + i,
                        "input_ids": out.input_ids[i].tolist(),
                        "truncated": bool(out.truncated[i]),
                        "last_hidden_state": out.last_hidden_state[i].tolist(),
                    }
                    for i in range(len(chunk))
                ),
            )
        if output:
            sink.close()
        return 0
    vectors = np.concatenate(
        [encoder.embed(chunk, pooling=pooling, normalize=args.normalize) for _, chunk in _chunks(texts, show)]
    )
    if args.summary:
        _summary(encoder, texts, vectors, pooling)
    elif output is not None and output.suffix == ".npy":
        np.save(output, vectors)
    else:
        sink = output.open("w", encoding="utf-8") if output else sys.stdout
        _write_rows(sink, ({"index": i, "embedding": vectors[i].tolist()} for i in range(len(texts))))
        if output:
            sink.close()
    if output is not None:
        print(f"wrote {len(texts)} x {vectors.shape[1]} ({pooling}) to {output}", file=sys.stderr)
    return 0


def _int8_speed(recipe: dict[str, Any]) -> str:
    """The int8 recipe's speed as measured at export, the CPU it was measured on, and the int8 kernel here."""
    speed = float(recipe["gate"]["speed_vs_fp32"])
    measured = recipe.get("measured_on", {})
    where = f"{measured.get('cpu', 'an unrecorded CPU')}, {measured.get('int8_kernel', 'int8 kernel unrecorded')}"
    slower = " (slower than fp32 there)" if speed < 1.0 else ""
    fits = int8_fits_16_bits(recipe)
    here = int8_kernel(platform.machine(), cpu_flags(), fits_16_bits=fits)
    # the graph serves every x86 CPU; which kernel those without VNNI run is a property of its weights
    requested = recipe.get("requested")  # absent from manifests written before it was recorded: no claim then
    how = "" if requested is None else f", searched ({requested})" if requested.startswith("auto") else ", pinned"
    return (
        f"recipe {recipe['name']}{how}: {speed:.2f}x fp32 at export{slower} on {where}; int8 on this CPU: {here}; "
        f"on x86 CPUs without VNNI: {int8_kernel_without_vnni(fits)}"
    )


def run_info(args: argparse.Namespace) -> int:
    """Print the manifest: source, architecture, tokenizer, and each variant's verification figures."""
    manifest = Manifest.load(Path(args.directory))
    if args.json:
        print(manifest.to_json(), end="")
        return 0
    arch = manifest.architecture
    source_format = manifest.source.get("format", "huggingface")
    print(f"model:      {manifest.source.get('model')} ({source_format})")
    print(
        f"arch:       {arch.model_type}, {arch.num_layers} layers, hidden {arch.hidden_size}, {arch.num_heads} "
        f"heads, vocab {arch.vocab_size}, pooler {'yes' if arch.has_pooler else 'no'}"
    )
    lowercase_from = manifest.source.get("lowercase", {}).get("from")
    print(
        f"tokenizer:  max_length {manifest.tokenizer.max_length}, lowercase {manifest.tokenizer.lowercase}"
        + (f" (decided by {lowercase_from})" if lowercase_from else "")
    )
    print(f"pooling:    {manifest.default_pooling} ({manifest.source.get('default_pooling_from', '')})")
    print(f"default:    {manifest.default_variant or 'none: no variant passed verification'}")
    print("versions:   " + ", ".join(f"{k} {v}" for k, v in manifest.versions.items()))
    for name, variant in manifest.variants.items():
        figures = {k: v for k, v in variant.verification.items() if k not in ("gate", "failures", "reason")}
        twin = f", packed twin {variant.packed.file}" if variant.packed else ""
        state = variant.state + (f" ({variant.reason})" if variant.reason else "")
        print(f"{name}: {state}, {variant.file} ({variant.bytes / 1e6:.1f} MB, for {variant.provider}{twin})")
        if figures:
            print("      " + json.dumps(figures, default=str))
        if variant.precision == "int8" and "gate" in variant.recipe:
            print("      " + _int8_speed(variant.recipe))
        for text, held in variant.recipe.get("held_out", {}).items():
            verdict = held_out_verdict(variant.recipe, held)
            verdict += ", gated" if held.get("gated") else ", reported only" if "gated" in held else ""
            print(
                f"      held-out {text} ({held['texts']} texts): mean cosine {held['mean_cosine']:.5f}, "
                f"top-10 {held['top10_agreement']:.3f} ({verdict}{unknown_tokens_note(held)})"
            )
    return 0
