"""Which quantized nodes cost the most quality? Dynamic int8 candidates measured on real text against fp32.

    python -m benchmarks int8-sensitivity [--model minilm] [--texts 1000] [--out DIR]

Each candidate is a dynamic per-channel quantization of the directory's fused fp32 graph (op types and nodes left
in fp32 vary); it is loaded through the public Encoder from a copy of the model directory and compared with the
fp32 variant on the first N unique STS-B dev sentences: mean / worst cosine of mean-pooled vectors, top-10
neighbour agreement, and the time of one embed call over all N texts. A starting point for accuracy-guided int8.
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

import onnx
from onnxruntime.quantization import QuantType, quantize_dynamic

from benchmarks.models import prepare
from benchmarks.quality import top_k_agreement
from benchmarks.workloads import sentences
from onnxbert.runtime import Encoder, Manifest
from onnxbert.runtime.manifest import sha256_file


def _candidates(matmuls: list[str], layers: int) -> list[tuple[str, list[str] | None, list[str]]]:
    ffn2 = [n for n in matmuls if "/output/dense" in n and "attention" not in n]
    ffn1 = [n for n in matmuls if "/intermediate/dense" in n]
    attn_out = [n for n in matmuls if "/attention/output/dense" in n]
    found: list[tuple[str, list[str] | None, list[str]]] = [
        ("all ops (MatMul, Attention, EmbedLayerNorm)", None, []),
        ("MatMul + Attention", ["MatMul", "Attention"], []),
        ("MatMul only (onnxbert's default)", ["MatMul"], []),
        ("MatMul, FFN out (output.dense) fp32", ["MatMul"], ffn2),
        ("MatMul, FFN in (intermediate.dense) fp32", ["MatMul"], ffn1),
        ("MatMul, attention output fp32", ["MatMul"], attn_out),
        ("MatMul + Attention, FFN out fp32", ["MatMul", "Attention"], ffn2),
    ]
    found += [
        (f"MatMul, layer {i} fp32", ["MatMul"], [n for n in matmuls if f"layer.{i}/" in n]) for i in range(layers)
    ]
    return found


def _quantize(source: Path, target: Path, ops: list[str] | None, exclude: list[str]) -> None:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantizer's pre-processing hint is for CNNs
    try:
        quantize_dynamic(
            str(source),
            str(target),
            per_channel=True,
            weight_type=QuantType.QInt8,
            op_types_to_quantize=ops,
            nodes_to_exclude=exclude,
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
    vectors = encoder.embed(texts, pooling="mean", normalize=True)
    return vectors, time.perf_counter() - start


def run_sensitivity(model: str, count: int, cache: Path, out: Path, threads: int) -> list[dict[str, Any]]:
    source = prepare(model, cache).directory
    texts = sentences(count)
    reference, fp32_seconds = _timed_embed(Encoder(source, variant="fp32", threads=threads, spinning=False), texts)
    graph = onnx.load(str(source / "model.onnx"), load_external_data=False).graph
    matmuls = [n.name for n in graph.node if n.op_type == "MatMul"]
    layers = Manifest.load(source).architecture.num_layers
    rows = [
        {
            "candidate": "fp32",
            "mean_cosine": 1.0,
            "min_cosine": 1.0,
            "top10": 1.0,
            "seconds": fp32_seconds,
            "speed_vs_fp32": 1.0,
        }
    ]
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(shutil.copytree(source, Path(scratch) / "model"))
        for label, ops, exclude in _candidates(matmuls, layers):
            _quantize(source / "model.onnx", Path(scratch) / "candidate.onnx", ops, exclude)
            _install(work, Path(scratch) / "candidate.onnx")
            vectors, seconds = _timed_embed(Encoder(work, variant="int8", threads=threads, spinning=False), texts)
            cosines = (vectors * reference).sum(axis=1)
            rows.append(
                {
                    "candidate": label,
                    "excluded_nodes": len(exclude),
                    "mean_cosine": float(cosines.mean()),
                    "min_cosine": float(cosines.min()),
                    "top10": top_k_agreement(vectors, reference),
                    "seconds": seconds,
                    "speed_vs_fp32": fp32_seconds / seconds,
                }
            )
            print(
                f"{label:45s} cos {cosines.mean():.5f} (min {cosines.min():.4f}) top10 {rows[-1]['top10']:.3f} "
                f"{rows[-1]['speed_vs_fp32']:.2f}x fp32",
                flush=True,
            )
    out.mkdir(parents=True, exist_ok=True)
    (out / "int8_sensitivity.json").write_text(json.dumps({"model": model, "texts": count, "rows": rows}, indent=2))
    lines = [
        f"# int8 sensitivity ({model}, {count} STS-B dev sentences, {threads} threads)",
        "",
        "| candidate | mean cosine | worst cosine | top-10 agreement | speed vs fp32 |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r['candidate']} | {r['mean_cosine']:.5f} | {r['min_cosine']:.4f} | {r['top10']:.3f} | "
        f"{r['speed_vs_fp32']:.2f}x |"
        for r in rows
    ]
    (out / "int8_sensitivity.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return rows
