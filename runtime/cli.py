"""`onnxbert embed` and `onnxbert info`: file and terminal front ends to the Encoder."""

from __future__ import annotations

import argparse
import json
import platform
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO, TypeVar

import numpy as np

from .encoder import Encoder
from .errors import REEXPORT_HINT, TextError
from .manifest import Manifest, held_out_verdict, searched_top10, unknown_tokens_note
from .pooling import normalize
from .session import cpu_flags, int8_fits_16_bits, int8_kernel, int8_kernel_without_vnni
from .textfile import iter_texts, text_chunks, written_whole

__all__ = ["run_embed", "run_info"]

T = TypeVar("T")

_CHUNK = 2048  # texts per Encoder call: bounds memory on a file of any size and paces the progress line
SUMMARY_MATRIX = 16  # --summary prints the cosine matrix of up to this many texts (it grows with their square)
# A .npy written as it streams gets its header last, in this many bytes reserved before the rows: the shape is known
# only at the end when the input is a pipe. 64-byte aligned, as numpy writes it; room for any shape.
_NPY_HEADER_BYTES = 128


def _texts(args: argparse.Namespace) -> Iterator[str]:
    yield from args.texts
    if args.input:
        yield from iter_texts(Path(args.input), args.field)


def _count(args: argparse.Namespace) -> int | None:
    """How many texts there are: a regular file is read through once, so that its faults are found before any work.

    None for a pipe (`--input /dev/stdin`, `<(zcat ...)`): it can be read only once, as it streams.
    """
    if args.input and not Path(args.input).exists():
        raise ValueError(f"--input {args.input}: no such file")
    if args.input and not Path(args.input).is_file():
        return None
    return sum(1 for _ in _texts(args))


def _npy_header(rows: int, columns: int) -> bytes:
    """A .npy (format 1.0) header for float32 rows, padded to `_NPY_HEADER_BYTES`."""
    header = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {columns}), }}"
    size = _NPY_HEADER_BYTES - 10  # magic (6), version (2), header length (2)
    return b"\x93NUMPY\x01\x00" + size.to_bytes(2, "little") + header.ljust(size - 1).encode("latin1") + b"\n"


@contextmanager
def _lines_to(output: Path | None) -> Iterator[TextIO]:
    if output is None:
        yield sys.stdout
        return
    with written_whole(output) as scratch, scratch.open("w", encoding="utf-8") as sink:
        yield sink


def _write_rows(sink: TextIO, rows: Iterator[dict[str, Any]]) -> None:
    for row in rows:
        sink.write(json.dumps(row, ensure_ascii=False) + "\n")


def _summary_lines(encoder: Encoder, start: int, texts: list[str], vectors: np.ndarray) -> None:
    tokens = encoder.tokenize(texts)
    for index, text in enumerate(texts):
        head = " ".join(f"{value:+.4f}" for value in vectors[index, :4])
        print(
            f"[{start + index}] {len(tokens.ids[index]):>3} tokens  |v|={np.linalg.norm(vectors[index]):.3f}  "
            f"[{head} ...]  {text[:60]}"
        )


def _cosine_matrix(vectors: np.ndarray) -> None:
    unit = normalize(vectors)
    print("cosine similarity:")
    for index, row in enumerate(unit @ unit.T):
        print(f"[{index}] " + " ".join(f"{value:6.3f}" for value in row))


def run_embed(args: argparse.Namespace) -> int:
    """Embed arguments or a file as it streams, in chunks; write .npy / .jsonl or JSON lines to stdout."""
    output = Path(args.output) if args.output else None
    if output is not None and output.suffix not in (".npy", ".jsonl"):
        raise ValueError(f"--output {output}: use a .npy or .jsonl file name")
    if args.token_level and output is not None and output.suffix == ".npy":
        raise ValueError("--token-level rows differ in length: write them to a .jsonl file, not .npy")
    total = _count(args)
    if total == 0:
        raise ValueError("nothing to embed: give TEXT arguments or --input FILE")
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
    done = 0

    def each(run: Callable[[list[str]], T]) -> Iterator[tuple[int, list[str], T]]:
        """`run` on every chunk; a fault about one text names its place in the whole input, not in the chunk."""
        nonlocal done
        for chunk in text_chunks(_texts(args), _CHUNK):
            try:
                result = run(chunk)
            except TextError as error:
                raise TextError(done + error.index, error.reason) from None
            yield done, chunk, result
            done += len(chunk)
            if show:
                print(f"\rembedded {done}" + (f"/{total}" if total else "") + " texts", end="", file=sys.stderr)
        if show:
            print(file=sys.stderr)
        if done == 0:
            raise ValueError(f"nothing to embed: {args.input} held no text")
        if total is not None and done != total:
            raise ValueError(f"{args.input} changed while it was read: {total} texts, then {done}")

    def embed(chunk: list[str]) -> np.ndarray:
        return encoder.embed(chunk, pooling=pooling, normalize=args.normalize)

    if args.token_level:
        with _lines_to(output) as sink:
            for start, chunk, out in each(encoder.encode):
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
        return 0
    if args.summary:
        print(f"{encoder!r}, pooling={pooling}")
        first: list[np.ndarray] = []  # the first SUMMARY_MATRIX texts' vectors, for the cosine matrix
        for start, chunk, vectors in each(embed):
            _summary_lines(encoder, start, chunk, vectors)
            if start < SUMMARY_MATRIX:
                first.append(vectors[: SUMMARY_MATRIX - start])
        if 1 < done <= SUMMARY_MATRIX:
            _cosine_matrix(np.concatenate(first))
        elif done > SUMMARY_MATRIX:
            print(f"(no cosine matrix for {done} texts: it is printed for up to {SUMMARY_MATRIX})")
        return 0
    if output is not None and output.suffix == ".npy":
        with written_whole(output) as scratch, scratch.open("wb") as npy:
            npy.write(bytes(_NPY_HEADER_BYTES))
            for _, _, vectors in each(embed):
                npy.write(np.ascontiguousarray(vectors, dtype="<f4").tobytes())
            npy.seek(0)
            npy.write(_npy_header(done, encoder.hidden_size))
    else:
        with _lines_to(output) as sink:
            for start, chunk, vectors in each(embed):
                _write_rows(sink, ({"index": start + i, "embedding": vectors[i].tolist()} for i in range(len(chunk))))
    if output is not None:
        print(f"wrote {done} x {encoder.hidden_size} ({pooling}) to {output}", file=sys.stderr)
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


def _int8_budget(recipe: dict[str, Any]) -> str:
    """The budget the int8 recipe was chosen under, and the headroom its search asked of its own texts."""
    budget = recipe["budget"]
    if held_out_verdict(recipe, {}) == "no budget":
        return "budget: none (--int8-quality any): figures recorded, nothing asked"
    top10 = searched_top10(budget)
    searched = f" (the search held its own texts to {top10:g})" if top10 else ""
    return (
        f"budget: mean cosine >= {budget['min_mean_cosine']:g}, top-10 >= {budget['min_top10']:g}{searched}, "
        f"Spearman drop <= {budget['max_spearman_drop']:g}"
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
        try:
            lines = _recipe_lines(variant.precision, variant.recipe)
        except (KeyError, TypeError, ValueError, AttributeError) as error:  # a record another tool wrote or cut
            lines = [f"its recipe record is unreadable ({error!r}); {REEXPORT_HINT}"]
        for line in lines:
            print("      " + line)
    return 0


def _recipe_lines(precision: str, recipe: dict[str, Any]) -> list[str]:
    """An int8 variant's recipe: speed, budget and each held-out text's figures; nothing for fp32 / fp16."""
    lines = [_int8_speed(recipe), _int8_budget(recipe)] if precision == "int8" and "gate" in recipe else []
    for text, held in recipe.get("held_out", {}).items():
        verdict = held_out_verdict(recipe, held)
        verdict += ", gated" if held.get("gated") else ", reported only" if "gated" in held else ""
        lines.append(
            f"held-out {text} ({held['texts']} texts): mean cosine {held['mean_cosine']:.5f}, "
            f"top-10 {held['top10_agreement']:.3f} ({verdict}{unknown_tokens_note(held)})"
        )
    return lines
