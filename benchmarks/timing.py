"""Interleaved timing: every repeat runs each system once (A B C A B C ...), so machine drift hits all alike."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from benchmarks.systems import System

PAUSE_S = 0.05
# On a small machine ONNX Runtime's worker threads keep spinning for a while after a run, longer than PAUSE_S, and
# steal cores from whichever system runs next: a short call that follows another session's reads ~1.7x its time
# alone (MiniLM 1x16 on 2 AMD EPYC Zen 2 cores: fp32 12.4-13.3 ms against 7.1-8.2 alone). So a short call is primed:
# an untimed call of the same system first, after which the neighbour's threads have parked. Longer calls are not:
# the spin is a small share of them, and a primer would double their cost.
PRIMED_BELOW_S = 0.25
WARMUP_TEXTS = 64  # a slice is enough to warm allocators and threads; the whole corpus is not


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
) -> tuple[dict[str, list[float]], bool]:
    """Seconds per call for each system, and whether the calls were primed. Warm-up calls are not kept.

    At least `repeats` rounds; then more rounds (up to 200) until `min_seconds` x systems of wall time are spent,
    so that fast workloads get enough samples for a p99.
    """
    slowest = 0.0
    for system in systems:
        for _ in range(warmup):
            start = time.perf_counter()
            system.embed(texts[:WARMUP_TEXTS])
            slowest = max(slowest, time.perf_counter() - start)
    # Every system primed, or none: the same conditions for all. The warm-up timed the whole call when it was short.
    primed = len(texts) <= WARMUP_TEXTS and slowest < PRIMED_BELOW_S
    samples: dict[str, list[float]] = {s.name: [] for s in systems}
    # Each call follows an untimed pause, so a single-text call is latency after an idle gap (threads parked or
    # parking), what a lightly loaded service sees, not back-to-back throughput.
    rounds, began = 0, time.perf_counter()
    while rounds < repeats or (time.perf_counter() - began < min_seconds * len(systems) and rounds < 200):
        for system in systems:
            if primed:
                time.sleep(PAUSE_S)
                system.embed(texts)
            time.sleep(PAUSE_S)
            start = time.perf_counter()
            system.embed(texts)
            samples[system.name].append(time.perf_counter() - start)
        rounds += 1
    return samples, primed


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
