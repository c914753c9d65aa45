"""Which int8 recipe keeps quality, at what speed? Every candidate measured on real text against fp32.

    python -m benchmarks int8-sensitivity [--model minilm] [--pairs N] [--out DIR]

Candidates: ONNX Runtime's stock `quantize_dynamic` (what most exporters ship), each recipe on onnxbert's ladder,
and per-group / per-layer probes (one group or one layer's mode changed) that show where quality is lost. Each is
judged exactly as export's int8 gate judges (export/judge.py): placed with its packed twin in a scratch model
directory, embedded by the public Encoder, compared with the fp32 variant on the STS-B dev sentences (all 1,500 pairs
unless --pairs): mean / worst cosine, top-10 neighbour agreement, STS-B Spearman, and one timed embed call.
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

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic
from tokenizers import Tokenizer

from benchmarks.env import cpu_info
from benchmarks.models import prepare
from onnxbert.export.calibration import calibrate
from onnxbert.export.int8 import Recipe, quantize
from onnxbert.export.int8_gate import LADDER, calibration_tokens
from onnxbert.export.int8_text import default_int8_text
from onnxbert.export.judge import Judge, SelectionText
from onnxbert.export.progress import Progress
from onnxbert.export.sts import StsPairs, sts_pairs
from onnxbert.export.targets import GROUPS, find_targets
from onnxbert.runtime import Manifest, Pooling

STOCK = "ORT quantize_dynamic, all ops (stock)"


def _candidates(layers: int) -> list[Recipe]:
    base = next(r for r in LADDER if r.name == "static+rows")
    found = list(LADDER)
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


def _first_pairs(count: int | None) -> StsPairs:
    pairs = sts_pairs("dev")
    return StsPairs(pairs.left[:count], pairs.right[:count], pairs.scores[:count]) if count else pairs


def _row(label: str, figures: dict[str, Any]) -> dict[str, Any]:
    keys = ("mean_cosine", "min_cosine", "spearman_drop", "seconds", "speed_vs_fp32")
    return {"candidate": label, "top10": figures["top10_agreement"], **{key: figures[key] for key in keys}}


def run_sensitivity(model: str, pairs: int | None, cache: Path, out: Path, threads: int) -> list[dict[str, Any]]:
    source = prepare(model, cache).directory
    manifest = Manifest.load(source)
    fused = source / "model.onnx"
    tokenizer = Tokenizer.from_file(str(source / "tokenizer.json"))
    targets = find_targets(onnx.load(str(fused)), manifest.architecture.num_layers)
    stats = calibrate(
        fused,
        targets,
        calibration_tokens(
            source / "tokenizer.json", manifest.tokenizer.max_length, default_int8_text(tokenizer).calibration
        ),
        manifest.tokenizer.pad_id,
    )
    weights: dict[Any, Any] = {}
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
            }
        ]
        for recipe in [None, *_candidates(manifest.architecture.num_layers)]:
            graph = judge.slot()
            if recipe is None:
                _stock(fused, graph)
            else:
                quantize(fused, graph, recipe, targets, stats, weights)
            rows.append(_row(STOCK if recipe is None else recipe.name, judge.measure(graph)))
            r = rows[-1]
            print(
                f"{r['candidate']:42s} cos {r['mean_cosine']:.5f} (min {r['min_cosine']:.4f}) top10 {r['top10']:.3f} "
                f"Spearman {-r['spearman_drop']:+.4f} {r['speed_vs_fp32']:.2f}x fp32",
                flush=True,
            )
    _write(out, model, len(text.sentences), threads, rows)
    return rows


def _write(out: Path, model: str, count: int, threads: int, rows: list[dict[str, Any]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    cpu = cpu_info()
    record = {"model": model, "texts": count, "threads": threads, "cpu": cpu, "rows": rows}
    (out / "int8_sensitivity.json").write_text(json.dumps(record, indent=2))
    lines = [
        f"# int8 recipes and probes ({model}, {count} STS-B dev sentences, {threads} threads, vs the fp32 variant)",
        "",
        f"CPU: {cpu['model']} ({', '.join(cpu['flags'])}). Each candidate judged as export's gate judges it: placed",
        "with its packed twin in a model directory and embedded by the public Encoder; speed is one warm embed call.",
        "",
        "| candidate | mean cosine | worst cosine | top-10 agreement | Spearman drop | speed vs fp32 |",
        "|---|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['candidate']} | {r['mean_cosine']:.5f} | {r['min_cosine']:.4f} | {r['top10']:.3f} | "
        f"{r['spearman_drop']:.4f} | {r['speed_vs_fp32']:.2f}x |"
        for r in rows
    ]
    (out / "int8_sensitivity.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
