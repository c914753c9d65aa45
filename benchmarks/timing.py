"""Interleaved timing: every repeat runs each system once (A B C A B C ...), so machine drift hits all alike."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks.systems import System

PAUSE_S = 0.05


def percentiles(samples: Sequence[float]) -> dict[str, float]:
    values = np.asarray(samples, dtype=np.float64) * 1e3
    return {
        "p50_ms": float(np.percentile(values, 50)),
        "p90_ms": float(np.percentile(values, 90)),
        "p99_ms": float(np.percentile(values, 99)),
        "mean_ms": float(values.mean()),
        "calls": len(values),
    }


def interleaved(
    systems: Sequence[System], texts: list[str], *, repeats: int, warmup: int = 1, min_seconds: float = 0.0
) -> dict[str, list[float]]:
    """Seconds per call for each system. Warm-up calls (first-run allocations, thread spin-up) are not kept.

    At least `repeats` rounds; then more rounds (up to 200) until `min_seconds` x systems of wall time are spent,
    so that fast workloads get enough samples for a p99.
    """
    for system in systems:
        for _ in range(warmup):
            system.embed(texts[:64])  # a slice is enough to warm allocators and threads; the whole corpus is not
    samples: dict[str, list[float]] = {s.name: [] for s in systems}
    # ONNX Runtime's idle worker threads spin for a while after each run; on a small machine that spin would be
    # charged to whichever system runs next. A short untimed pause lets them park before the next call.
    rounds, began = 0, time.perf_counter()
    while rounds < repeats or (time.perf_counter() - began < min_seconds * len(systems) and rounds < 200):
        for system in systems:
            time.sleep(PAUSE_S)
            start = time.perf_counter()
            system.embed(texts)
            samples[system.name].append(time.perf_counter() - start)
        rounds += 1
    return samples


def summarize(samples: dict[str, list[float]], *, sequences: int, real_tokens: int, flops: float) -> dict[str, Any]:
    rows = {}
    for name, values in samples.items():
        stats = percentiles(values)
        seconds = stats["p50_ms"] / 1e3
        stats.update(
            sequences_per_s=sequences / seconds,
            real_tokens_per_s=real_tokens / seconds,
            gflops=flops / seconds / 1e9,
        )
        rows[name] = stats
    return rows
