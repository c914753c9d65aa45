"""Which int8 recipe keeps quality, at what speed? Every candidate measured on real text against fp32.

    python -m benchmarks int8-sensitivity [--model minilm] [--texts N] [--out DIR]

Candidates: ONNX Runtime's stock `quantize_dynamic` (what most exporters ship), each recipe on onnxbert's ladder,
and per-group / per-layer probes (one group or one layer's mode changed) that show where quality is lost. Each
graph is installed as the int8 variant of a copy of the model directory and loaded through the public Encoder;
vectors are compared with the fp32 variant on the unique STS-B dev sentences (all 2,910 unless --texts) (mean / worst cosine, top-10
neighbour agreement, STS-B Spearman on the pairs among them) and one embed call over all N texts is timed.
Calibration uses STS-B train, as export does.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

from benchmarks.models import prepare
from benchmarks.quality import spearman, top_k_agreement
from onnxbert.export.calibration import calibrate
from onnxbert.export.int8 import GROUPS, Recipe, find_targets, quantize
from onnxbert.export.int8_gate import CALIBRATION_SENTENCES, LADDER
from onnxbert.export.sts import StsPairs, sts_pairs, unique_sentences
from onnxbert.runtime import Encoder, Manifest
from onnxbert.runtime.manifest import sha256_file
from onnxbert.runtime.tokenize import TextTokenizer

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


def _install(directory: Path, graph: Path) -> None:
    """Make `graph` the directory's int8 variant, with the manifest's hash and size updated to match."""
    manifest = Manifest.load(directory)
    shutil.copyfile(graph, directory / "model.int8.onnx")
    variant = dataclasses.replace(manifest.variants["int8"], sha256=sha256_file(graph), bytes=graph.stat().st_size)
    dataclasses.replace(manifest, variants={**manifest.variants, "int8": variant}).save(directory)


def _timed_embed(encoder: Encoder, texts: list[str]) -> tuple[Any, float]:
    encoder.embed(texts[:64])
    start = time.perf_counter()
    vectors = encoder.embed(texts, normalize=True)
    return vectors, time.perf_counter() - start


def _spearman(vectors: np.ndarray, texts: list[str], pairs: StsPairs) -> float:
    row = {text: i for i, text in enumerate(texts)}
    kept = [i for i, (a, b) in enumerate(zip(pairs.left, pairs.right, strict=True)) if a in row and b in row]
    left = vectors[[row[pairs.left[i]] for i in kept]]
    right = vectors[[row[pairs.right[i]] for i in kept]]
    return spearman((left * right).sum(axis=1), [pairs.scores[i] for i in kept])


def _row(
    label: str, vectors: np.ndarray, reference: np.ndarray, seconds: float, fp32_seconds: float, drop: float
) -> dict[str, Any]:
    cosines = (vectors * reference).sum(axis=1)
    return {
        "candidate": label,
        "mean_cosine": float(cosines.mean()),
        "min_cosine": float(cosines.min()),
        "top10": top_k_agreement(vectors, reference),
        "spearman_drop": drop,
        "seconds": seconds,
        "speed_vs_fp32": fp32_seconds / seconds,
    }


def run_sensitivity(model: str, count: int | None, cache: Path, out: Path, threads: int) -> list[dict[str, Any]]:
    source = prepare(model, cache).directory
    pairs = sts_pairs("dev")
    texts = unique_sentences(pairs, count)
    reference, fp32_seconds = _timed_embed(Encoder(source, variant="fp32", threads=threads, spinning=False), texts)
    manifest = Manifest.load(source)
    fused = source / "model.onnx"
    targets = find_targets(onnx.load(str(fused)), manifest.architecture.num_layers)
    tokenizer = TextTokenizer(source / "tokenizer.json", max_length=manifest.tokenizer.max_length)
    calibration = tokenizer.encode(unique_sentences(sts_pairs("train"), CALIBRATION_SENTENCES))
    stats = calibrate(fused, targets, calibration, manifest.tokenizer.pad_id)
    cache: dict[Any, Any] = {}
    fp32_spearman = _spearman(reference, texts, pairs)
    rows = [_row("fp32", reference, reference, fp32_seconds, fp32_seconds, 0.0)]
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(shutil.copytree(source, Path(scratch) / "model"))
        graph = Path(scratch) / "candidate.onnx"
        for recipe in [None, *_candidates(manifest.architecture.num_layers)]:
            if recipe is None:
                _stock(fused, graph)
            else:
                quantize(fused, graph, recipe, targets, stats, cache)
            _install(work, graph)
            vectors, seconds = _timed_embed(Encoder(work, variant="int8", threads=threads, spinning=False), texts)
            drop = fp32_spearman - _spearman(vectors, texts, pairs)
            label = STOCK if recipe is None else recipe.name
            rows.append(_row(label, vectors, reference, seconds, fp32_seconds, drop))
            r = rows[-1]
            print(
                f"{r['candidate']:42s} cos {r['mean_cosine']:.5f} (min {r['min_cosine']:.4f}) top10 {r['top10']:.3f} "
                f"Spearman {-r['spearman_drop']:+.4f} {r['speed_vs_fp32']:.2f}x fp32",
                flush=True,
            )
    _write(out, model, len(texts), threads, rows)
    return rows


def _write(out: Path, model: str, count: int, threads: int, rows: list[dict[str, Any]]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "int8_sensitivity.json").write_text(json.dumps({"model": model, "texts": count, "rows": rows}, indent=2))
    lines = [
        f"# int8 recipes and probes ({model}, {count} STS-B dev sentences, {threads} threads, vs the fp32 variant)",
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
