"""Packed row width: fp32 and int8 through `Encoder.embed` at each width, in alternating rounds, in one run.

    python -m benchmarks row-width [--directory DIR] [--widths 24,32,48,64] [--rounds 3] [--out DIR]

runtime/packing.py lays texts end to end in rows of ROW_TOKENS. Attention's masked (T, T) scores cost more than their
FLOPs, so narrow rows save time until they stop filling. This times each width on whole corpora (STS-B dev, Python
documentation, Chinese reviews: 16 to 46 tokens a text) and on server-sized calls (random groups of 32 STS-B
sentences, which take the balanced-rows path), fp32 and int8, order reversed every round; medians are reported.
"""

from __future__ import annotations

import json
import random
import statistics
import time
from pathlib import Path
from typing import Any

SERVER_GROUP = 32  # sentences per call in the server-sized workload
SERVER_TEXTS = 1024


def _corpora() -> dict[str, list[str]]:
    from onnxbert.export.sts import sts_pairs, unique_sentences
    from onnxbert.export.texts import chinese_reviews, python_docs

    return {
        "sts-dev": unique_sentences(sts_pairs("dev"), 10**6),
        "python-docs": python_docs(2000),
        "chinese-reviews": chinese_reviews(2000),
    }


def run_row_width(
    directory: Path,
    widths: list[int],
    rounds: int,
    threads: int,
    out: Path,
    corpora: dict[str, list[str]] | None = None,
) -> dict[str, Any]:
    """`corpora`: name -> texts (default: STS-B dev, Python docs, Chinese reviews); server-sized groups are drawn from
    the first."""
    from benchmarks.env import environment, int8_isa
    from onnxbert.runtime import Encoder, packing

    corpora = corpora or _corpora()
    sts = next(iter(corpora.values()))
    rng = random.Random(0)
    groups = [rng.sample(sts, min(SERVER_GROUP, len(sts))) for _ in range(SERVER_TEXTS // SERVER_GROUP)]
    workloads: dict[str, list[list[str]]] = {name: [texts] for name, texts in corpora.items()}
    workloads[f"groups of {SERVER_GROUP} ({next(iter(corpora))})"] = groups
    encoders = {variant: Encoder(directory, variant=variant, threads=threads) for variant in ("fp32", "int8")}
    for encoder in encoders.values():
        encoder.embed(sts[:256])
    default_widths = packing.pack_rows.__defaults__
    seconds: dict[str, dict[str, dict[int, list[float]]]] = {
        name: {variant: {width: [] for width in widths} for variant in encoders} for name in workloads
    }
    try:
        for round_ in range(rounds):
            for name, calls in workloads.items():
                for width in widths if round_ % 2 == 0 else widths[::-1]:
                    packing.pack_rows.__defaults__ = (width,)  # plan_layouts calls pack_rows with its default
                    for variant in encoders if round_ % 2 == 0 else list(encoders)[::-1]:
                        start = time.perf_counter()
                        for texts in calls:
                            encoders[variant].embed(texts)
                        seconds[name][variant][width].append(time.perf_counter() - start)
    finally:
        packing.pack_rows.__defaults__ = default_widths
    env = environment(threads)
    result = {
        "environment": env,
        "int8_isa": int8_isa(env["cpu"]["flags"]),
        "directory": str(directory),
        "current_row_tokens": packing.ROW_TOKENS,
        "rounds": rounds,
        "texts": {name: sum(len(texts) for texts in calls) for name, calls in workloads.items()},
        "seconds": {
            name: {v: {str(w): times for w, times in by_width.items()} for v, by_width in by_variant.items()}
            for name, by_variant in seconds.items()
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "row_width.json").write_text(json.dumps(result, indent=1), encoding="utf-8")
    (out / "row_width.md").write_text(markdown(result), encoding="utf-8")
    return result


def markdown(result: dict[str, Any]) -> str:
    env = result["environment"]
    widths = list(next(iter(next(iter(result["seconds"].values())).values())))
    lines = [
        "# Packed row width",
        "",
        f"CPU: {env['cpu']['model']} ({', '.join(env['cpu']['flags'])}; int8 kernel: {result['int8_isa']}), "
        f"{env['threads']} threads. Model: `{result['directory']}`. Median seconds of {result['rounds']} alternating "
        f"rounds; the runtime's ROW_TOKENS is {result['current_row_tokens']}.",
        "",
        "| workload | texts | variant | " + " | ".join(f"{w} tokens" for w in widths) + " | fastest |",
        "|---|---|---|" + "---|" * len(widths) + "---|",
    ]
    for name, by_variant in result["seconds"].items():
        for variant, by_width in by_variant.items():
            medians = {w: statistics.median(times) for w, times in by_width.items()}
            best = min(medians, key=medians.__getitem__)
            cells = " | ".join(f"{medians[w]:.3f}" for w in widths)
            lines.append(f"| {name} | {result['texts'][name]} | {variant} | {cells} | {best} |")
    lines.append("")
    lines.append("int8 / fp32 speed at each width: " + "; ".join(_ratios(result, widths)))
    return "\n".join(lines) + "\n"


def _ratios(result: dict[str, Any], widths: list[str]) -> list[str]:
    parts = []
    for name, by_variant in result["seconds"].items():
        figures = [
            f"{w} {statistics.median(by_variant['fp32'][w]) / statistics.median(by_variant['int8'][w]):.2f}x"
            for w in widths
        ]
        parts.append(f"{name}: {', '.join(figures)}")
    return parts
