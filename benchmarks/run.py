"""One benchmark run: prepare models, time every system on every workload (interleaved), measure quality, cold
start, the GEMM ceiling and dependency sizes, and return everything as one JSON-able dict."""

from __future__ import annotations

import datetime
import gc
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks import coldstart, held_out, isa_classes, peak, quality
from benchmarks.env import environment
from benchmarks.models import USER_TEXT, prepare, prepare_user_text
from benchmarks.systems import build_systems, peers_available
from benchmarks.timing import PAUSE_S, interleaved, summarize
from benchmarks.workloads import sts_dev, workloads
from onnxbert.runtime import Manifest


@dataclass(frozen=True)
class Settings:
    models: list[str]
    threads: int
    quick: bool
    cache: Path
    peers: bool = True
    int8_recipe: str = "auto"  # MiniLM's (bert-base always pins SPEED_RECIPE)

    @property
    def repeats(self) -> int:
        return 3 if self.quick else 10

    @property
    def min_seconds(self) -> float:
        return 0.0 if self.quick else 3.0


def log(message: str) -> None:
    print(f"[bench {datetime.datetime.now():%H:%M:%S}] {message}", file=sys.stderr, flush=True)


def _measure_model(name: str, settings: Settings, peaks: dict[str, float]) -> dict[str, Any]:
    model = prepare(name, settings.cache, settings.int8_recipe)
    config = json.loads((model.checkpoint / "config.json").read_text())
    systems = build_systems(model.checkpoint, model.directory, settings.threads, settings.peers)
    tokenizer = next(s for s in systems if s.name == "onnxbert-fp32").encoder  # type: ignore[attr-defined]
    result: dict[str, Any] = {
        "config": {
            k: config[k] for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
        },
        "systems": [s.name for s in systems],
        "workloads": {},
    }
    # bert-base is for speed only and ~5x MiniLM's cost: its real-text workload is the first 1,000 sentences.
    for workload in workloads(settings.quick, text_limit=None if model.real_weights else 1000):
        lengths = [len(ids) for ids in tokenizer.tokenize(workload.texts).ids]
        repeats = settings.repeats if workload.kind == "shape" else max(2, settings.repeats // 3)
        log(f"{name} {workload.name}: {len(workload.texts)} texts, {sum(lengths)} tokens, {repeats}+ rounds")
        samples, primed = interleaved(
            systems,
            workload.texts,
            repeats=repeats,
            min_seconds=settings.min_seconds if workload.kind == "shape" else 0.0,
        )
        flops = quality.model_flops(lengths, config)
        rows = summarize(samples, sequences=len(lengths), real_tokens=sum(lengths), flops=flops)
        for system in systems:
            ceiling = peaks["fp32_gflops"] if system.precision == "fp32" else peaks["int8_gops"]
            rows[system.name]["peak_share"] = rows[system.name]["gflops"] / ceiling
            rows[system.name]["speedup_vs_pytorch"] = rows["pytorch"]["p50_ms"] / rows[system.name]["p50_ms"]
        result["workloads"][workload.name] = {
            "kind": workload.kind,
            "sequences": len(lengths),
            "real_tokens": sum(lengths),
            "gflop": flops / 1e9,
            "primed": primed,  # an untimed call of the same system before each timed one (benchmarks/timing.py)
            "systems": rows,
        }
    result["quality"] = _quality(systems, model.real_weights, settings.quick or not model.real_weights)
    recipe = Manifest.load(model.directory).variants["int8"].recipe
    kept = ("name", "requested", "budget", "gate", "held_out", "text", "weight_levels", "weight_pair_limit")
    result["int8_recipe"] = {key: recipe[key] for key in kept if key in recipe}
    if model.real_weights:
        log(f"{name}: int8 per kernel class (CPUID masked)")
        limit = 512 if settings.quick else 10**6
        result["isa_classes"] = isa_classes.measure_classes(
            model.directory,
            settings.cache,
            settings.threads,
            rounds=1 if settings.quick else 3,
            limit=limit,
            stand_in=not settings.quick,
        )
    if model.real_weights and not settings.quick:  # a second export (minutes): full runs only
        log(f"{name}: int8 on text no search saw (the default, and gated on {USER_TEXT} with --int8-text)")
        graphs = {"default": (model.directory, None), USER_TEXT: prepare_user_text(settings.cache)}
        result["held_out_texts"] = held_out.measure(graphs, held_out.full_texts(), settings.threads, rounds=3)
    log(f"{name}: cold start")
    result["cold_start"] = coldstart.cold_starts(
        model.checkpoint, model.directory, settings.threads, runs=1 if settings.quick else 3
    )
    del systems
    gc.collect()
    return result


def _quality(systems: list[Any], real_weights: bool, quick: bool) -> dict[str, Any]:
    left, right, gold = sts_dev()
    sentences = list(dict.fromkeys(s for pair in zip(left, right, strict=True) for s in pair))
    if quick:  # a prefix of pairs keeps the metric defined and the run short
        left, right, gold = left[:300], right[:300], gold[:300]
        sentences = list(dict.fromkeys(s for pair in zip(left, right, strict=True) for s in pair))
    index = {s: i for i, s in enumerate(sentences)}
    vectors = {s.name: s.embed(sentences) for s in systems}
    reference = vectors["pytorch"]
    rows: dict[str, Any] = {"sentences": len(sentences), "pairs": len(gold), "reference": "pytorch (fp32)"}
    for name, v in vectors.items():
        rows[name] = quality.agreement(v, reference)
        if real_weights:
            rows[name]["sts_spearman"] = quality.sts_spearman(v, index, left, right, gold)
    return rows


def run(settings: Settings) -> dict[str, Any]:
    log(f"GEMM ceiling on {settings.threads} threads")
    peaks = peak.gemm_peaks(settings.threads, seconds=1.0 if settings.quick else 3.0)
    results: dict[str, Any] = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "settings": {
            "models": settings.models,
            "threads": settings.threads,
            "quick": settings.quick,
            "repeats": settings.repeats,
            "pause_s": PAUSE_S,  # idle time before each timed call
        },
        "environment": environment(settings.threads),
        "gemm_peak": peaks,
        "peers": peers_available(),
        "dependency_closure": coldstart.dependency_closures(),
        "models": {},
    }
    for name in settings.models:
        results["models"][name] = _measure_model(name, settings, peaks)
    return results
