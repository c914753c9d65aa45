"""Which int8 recipe keeps quality, at what speed? Every candidate measured on real text against fp32.

    python -m benchmarks int8-sensitivity [--model minilm] [--pairs N] [--out DIR]

Candidates: ONNX Runtime's stock `quantize_dynamic` (what most exporters ship), each recipe on onnxbert's ladder,
and per-group / per-layer probes (one group or one layer's mode changed) that show where quality is lost; 7-bit
weights (the earlier way not to saturate on CPUs without VNNI, beside the ladder's pair-safe recipes); and the
weights alone rounded to int8 (or 7 bits) in an fp32 graph with fp32 activations: the floor any int8 activation
scheme starts from. Each is judged exactly as export's int8 gate judges (export/judge.py): placed with its packed
twin in a scratch model directory, embedded by the public Encoder, compared with the fp32 variant on the STS-B dev
sentences (all 1,500 pairs unless --pairs): mean / worst cosine, top-10 neighbour agreement, STS-B Spearman, one
timed embed call; and on export's held-out texts (Python's documentation, Chinese reviews, Shakespeare).
Calibration uses STS-B train, as export does.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import numpy_helper
from onnxruntime.quantization import QuantType, quantize_dynamic
from tokenizers import Tokenizer

from benchmarks.env import cpu_info, int8_isa
from benchmarks.models import prepare
from onnxbert.export.calibration import Calibration, calibrate, round_columns
from onnxbert.export.int8 import Recipe, quantize
from onnxbert.export.int8_gate import LADDER, calibration_tokens
from onnxbert.export.int8_text import default_int8_text
from onnxbert.export.judge import Judge, SelectionText
from onnxbert.export.progress import Progress
from onnxbert.export.sts import StsPairs, sts_pairs
from onnxbert.export.targets import GROUPS, Target, find_targets
from onnxbert.runtime import Manifest, Pooling
from onnxbert.runtime.session import PAIR_SAFE_WEIGHT_LEVELS

STOCK = "ORT quantize_dynamic, all ops (stock)"


WEIGHTS_ONLY = {"int8 weights only, fp32 activations": 127, "7-bit weights only, fp32 activations": 64}


def _candidates(layers: int) -> list[Recipe]:
    base = next(r for r in LADDER if r.name == "static+rows")
    found = list(LADDER)  # the -pairsafe recipes among them
    found.append(dataclasses.replace(base, name="static+rows-7bit", weight_levels=PAIR_SAFE_WEIGHT_LEVELS))
    found += [dataclasses.replace(base, name=f"static+rows, {g} fp32", modes={**base.modes, g: "fp32"}) for g in GROUPS]
    found += [
        dataclasses.replace(base, name=f"static+rows, {g} rows", modes={**base.modes, g: "rows"}) for g in ("ffn_in",)
    ]
    found += [dataclasses.replace(base, name=f"static+rows, alpha {a}", alpha=a) for a in (0.5, 0.65, 0.9)]
    found += [
        dataclasses.replace(base, name=f"static+rows, layers [{i}] fp32", fp32_layers=(i,)) for i in range(layers)
    ]
    return found


def _stock(source: Path, target: Path) -> None:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer's pre-processing hint is for CNNs
    try:
        quantize_dynamic(
            str(source),
            str(target),
            per_channel=True,
            weight_type=QuantType.QInt8,
            extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
        )
    finally:
        root.setLevel(level)


def _weights_only(source: Path, target: Path, targets: list[Target], stats: Calibration, levels: int) -> None:
    """The fp32 graph with each projection's weight rounded as int8 export rounds it (GPTQ), activations untouched."""
    model = onnx.load(str(source))
    weights = {init.name: init for init in model.graph.initializer}
    for t in targets:
        weight = numpy_helper.to_array(weights[t.weight]).astype(np.float32)
        rounded, scale = round_columns(weight, stats.moments[t.activation], levels=levels)
        weights[t.weight].CopyFrom(numpy_helper.from_array((rounded * scale).astype(np.float32), t.weight))
    onnx.save(model, str(target))


def _first_pairs(count: int | None) -> StsPairs:
    pairs = sts_pairs("dev")
    return StsPairs(pairs.left[:count], pairs.right[:count], pairs.scores[:count]) if count else pairs


def _row(label: str, figures: dict[str, Any], held_out: dict[str, dict[str, Any]]) -> dict[str, Any]:
    keys = ("mean_cosine", "min_cosine", "spearman_drop", "seconds", "speed_vs_fp32")
    held = {
        name: {"mean_cosine": f["mean_cosine"], "top10": f["top10_agreement"], "unknown_tokens": f["unknown_tokens"]}
        for name, f in held_out.items()
    }
    return {
        "candidate": label,
        "top10": figures["top10_agreement"],
        **{key: figures[key] for key in keys},
        "held_out": held,
    }


def run_sensitivity(model: str, pairs: int | None, cache: Path, out: Path, threads: int) -> list[dict[str, Any]]:
    source = prepare(model, cache).directory
    manifest = Manifest.load(source)
    fused = source / "model.onnx"
    tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
    targets = find_targets(onnx.load(str(fused)), manifest.architecture.num_layers)
    int8_text = default_int8_text(tokenizer)
    tokens = calibration_tokens(source / "tokenizer.json", manifest.tokenizer.max_length, int8_text.calibration)
    stats = calibrate(fused, targets, tokens, manifest.tokenizer.pad_id)
    weights: dict[Any, Any] = {}
    held_out = int8_text.held_out
    text = SelectionText.from_pairs(_first_pairs(pairs))
    with tempfile.TemporaryDirectory() as scratch:
        judge = Judge(
            Path(scratch),
            manifest,
            source / "tokenizer.json",
            Pooling.parse(manifest.default_pooling),
            text,
            Progress(sys.stderr),
            threads=threads,
        )
        judge.set_reference(fused)
        rows = [
            {
                "candidate": "fp32",
                "mean_cosine": 1.0,
                "min_cosine": 1.0,
                "top10": 1.0,
                "spearman_drop": 0.0,
                "seconds": judge.reference_seconds,
                "speed_vs_fp32": 1.0,
                "held_out": {name: {"mean_cosine": 1.0, "top10": 1.0} for name in held_out},
            }
        ]
        candidates: list[Recipe | str | None] = [None, *WEIGHTS_ONLY, *_candidates(manifest.architecture.num_layers)]
        for candidate in candidates:
            graph = judge.slot()
            if candidate is None:
                _stock(fused, graph)
            elif isinstance(candidate, str):
                _weights_only(fused, graph, targets, stats, WEIGHTS_ONLY[candidate])
            else:
                quantize(fused, graph, candidate, targets, stats, weights)
            label = STOCK if candidate is None else candidate if isinstance(candidate, str) else candidate.name
            record = candidate.describe() if isinstance(candidate, Recipe) else None  # pair-safe: no safeguard
            rows.append(_row(label, judge.measure(graph, record), judge.held_out(graph, held_out, record)))
            r = rows[-1]
            print(
                f"{r['candidate']:42s} cos {r['mean_cosine']:.5f} (min {r['min_cosine']:.4f}) top10 {r['top10']:.3f} "
                f"Spearman {-r['spearman_drop']:+.4f} {r['speed_vs_fp32']:.2f}x fp32; "
                + ", ".join(f"{name} top10 {f['top10']:.3f}" for name, f in r["held_out"].items()),
                flush=True,
            )
    _write(out, model, len(text.sentences), threads, rows)
    return rows


def _write(out: Path, model: str, count: int, threads: int, rows: list[dict[str, Any]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cpu = cpu_info()
    record = {"model": model, "texts": count, "threads": threads, "cpu": cpu, "rows": rows}
    (out / "int8_sensitivity.json").write_text(json.dumps(record, indent=2))
    held = list(rows[0]["held_out"])
    lines = [
        f"# int8 recipes and probes ({model}, {count} STS-B dev sentences, {threads} threads, vs the fp32 variant)",
        "",
        f"CPU: {cpu['model']} ({', '.join(cpu['flags'])}); int8 here: {int8_isa(cpu['flags'])}. Each candidate judged",
        "as export's gate judges it: placed with its packed twin in a model directory and embedded by the public",
        "Encoder; speed is one warm embed call. Held-out columns: top-10 agreement on export's held-out texts.",
        "",
        "| candidate | mean cosine | worst cosine | top-10 agreement | Spearman drop | speed vs fp32 | "
        + " | ".join(f"{name} top-10" for name in held)
        + " |",
        "|---|---|---|---|---|---|" + "---|" * len(held),
    ]
    lines += [
        f"| {r['candidate']} | {r['mean_cosine']:.5f} | {r['min_cosine']:.4f} | {r['top10']:.3f} | "
        f"{r['spearman_drop']:.4f} | {r['speed_vs_fp32']:.2f}x | "
        + " | ".join(f"{r['held_out'][name]['top10']:.3f}" for name in held)
        + " |"
        for r in rows
    ]
    unknown = rows[-1]["held_out"] if len(rows) > 1 else {}
    lines += [
        "",
        "Share of each held-out text's tokens that are [UNK] in this vocabulary: "
        + ", ".join(f"{name} {figures['unknown_tokens']:.0%}" for name, figures in unknown.items())
        + ". A text mostly outside the vocabulary has vectors built from one token, close together: its top-10 "
        "moves with the smallest error.",
    ]
    (out / "int8_sensitivity.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
