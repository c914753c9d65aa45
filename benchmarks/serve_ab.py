"""Paired A/B of two `onnxbert serve` configurations on the same machine at the same time.

On a shared machine one serve-load run moves by several points from run to run (MiniLM fp32 at concurrency 32 gave
70-81% of in-process over fourteen runs), more than most changes worth testing. Here both servers run side by side
(the idle one sleeps: spinning is off unless a side asks for it) and are driven in alternating order, A B, B A, ...,
with the same texts and the same load client as serve-load; each round's B/A ratio compares two timings taken seconds
apart, and the report gives the median ratio, its spread and how many rounds B won.
"""

from __future__ import annotations

import json
import math
import shlex
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.env import environment
from benchmarks.load_client import cpu_cell, drive, drive_open, run_clients
from benchmarks.workloads import sentences
from onnxbert.runtime import available_cpus
from onnxbert.serve.process import ServerProcess, ServerStartError, start_server


def run_ab(
    directory: Path,
    a_flags: str,
    b_flags: str,
    *,
    concurrency: int,
    requests: int,
    rounds: int,
    out: Path,
    model: str | None = None,
    rate: float | None = None,
    code: dict[str, str | None] | None = None,
) -> dict[str, Any]:
    """Drive servers A and B (`onnxbert serve DIRECTORY` plus each side's flags) in `rounds` alternating rounds.

    With `rate`, each round is open-loop instead (`drive_open`: Poisson arrivals at that rate, whatever the answers
    do) and the sides are compared on p50 latency, lower winning; otherwise on closed-loop throughput.
    `code`: per side, a folder holding another build of onnxbert to run (`start_server(code=...)`), so that two
    versions of the server are paired; None runs this checkout.
    """
    if rounds < 2:
        raise SystemExit("serve-ab needs at least 2 rounds (each side goes first in one)")
    if rate is not None and not rate > 0:
        raise SystemExit(f"--rate {rate}: an open-loop rate must be a positive number of requests/s")
    texts = sentences(requests)
    sides = {"A": shlex.split(a_flags), "B": shlex.split(b_flags)}
    servers: dict[str, ServerProcess] = {}
    runs: dict[str, list[dict[str, Any]]] = {"A": [], "B": []}
    try:
        for name, flags in sides.items():
            servers[name] = start_server(directory, *flags, code=(code or {}).get(name))
        for name, server in servers.items():
            try:
                server.wait_ready()
            except ServerStartError as error:
                raise SystemExit(f"server {name} ({' '.join(sides[name]) or 'defaults'}): {error}") from None
        for server in servers.values():
            run_clients(drive(server.url, texts, concurrency, server.process.pid))  # warm both at this level
        for i in range(rounds):
            for name in ("A", "B") if i % 2 == 0 else ("B", "A"):
                url, pid = servers[name].url, servers[name].process.pid
                clients = drive(url, texts, concurrency, pid) if rate is None else drive_open(url, texts, rate, pid)
                runs[name].append(run_clients(clients))
    finally:
        for server in servers.values():
            server.stop()
    result = _result(runs, rate, len(texts)) | {
        "model": model or directory.name,
        "directory": str(directory),
        "a_flags": a_flags,
        "b_flags": b_flags,
        "code": code or {},
        "concurrency": concurrency,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve_ab.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out / "serve_ab.md").write_text(markdown(result), encoding="utf-8")
    return result


def _result(runs: dict[str, list[dict[str, Any]]], rate: float | None, requests: int) -> dict[str, Any]:
    """The paired comparison: B over A per round (throughput, or p50 latency open-loop), its median and sign test."""
    metric = "throughput" if rate is None else "p50_ms"
    ratios = [b[metric] / a[metric] for a, b in zip(runs["A"], runs["B"], strict=True)]
    wins = sum(r > 1 if rate is None else r < 1 for r in ratios)
    return {
        "rate": rate,
        "metric": metric,
        "requests": requests,
        "rounds": len(ratios),
        "median_ratio": float(np.median(ratios)),
        "ratio_quartiles": [float(q) for q in np.percentile(ratios, [25, 75])],
        "b_wins": wins,
        # Two-sided sign test: how often a fair coin gives a split at least this uneven
        "sign_test_p": _sign_test(wins, len(ratios)),
        "ratios": ratios,
        "sides": {name: _summary(side) for name, side in runs.items()},
        "runs": runs,
        "environment": environment(available_cpus()),
    }


def _summary(runs: list[dict[str, Any]]) -> dict[str, float]:
    keys = ("throughput", "p50_ms", "p99_ms", "mean_batch_texts", "inference_busy", "client_cpu_us")
    keys += ("server_cpu_us", "event_loop_cpu_us") if "server_cpu_us" in runs[0] else ()
    return {key: float(np.median([run[key] for run in runs])) for key in keys} | {
        "failures": sum(run["failures"] for run in runs)
    }


def _sign_test(wins: int, rounds: int) -> float:
    low = min(wins, rounds - wins)
    tail = sum(math.comb(rounds, k) for k in range(low + 1)) / 2**rounds
    return min(1.0, 2 * tail)


def markdown(result: dict[str, Any]) -> str:
    a, b = result["sides"]["A"], result["sides"]["B"]
    q1, q3 = result["ratio_quartiles"]
    open_loop = result.get("rate") is not None
    load = f"open loop at {result['rate']:g} requests/s" if open_loop else f"concurrency {result['concurrency']}"
    metric, key, better = ("p50 latency", "p50_ms", "lower") if open_loop else ("throughput", "throughput", "faster")
    lines = [
        f"# onnxbert serve A/B ({result['model']}, {load}, {result['requests']} "
        f"single-sentence requests a round, {result['rounds']} rounds)",
        "",
        f"- A: `{' '.join(['onnxbert serve DIR', result['a_flags']]).strip()}`"
        + (f", onnxbert from {result['code']['A']}" if result.get("code", {}).get("A") else ""),
        f"- B: `{' '.join(['onnxbert serve DIR', result['b_flags']]).strip()}`",
        "",
        f"**B/A {metric}: median {result['median_ratio']:.3f}** (quartiles {q1:.3f}-{q3:.3f}); B {better} in "
        f"{result['b_wins']} of {result['rounds']} rounds (two-sided sign test p = {result['sign_test_p']:.2f}).",
        "",
        "| side | requests/s | p50 ms | p99 ms | texts per batch | inference busy | server CPU us/request (event loop) "
        "| client CPU us/request | failures |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for name, side in (("A", a), ("B", b)):
        lines.append(
            f"| {name} | {side['throughput']:.0f} | {side['p50_ms']:.1f} | {side['p99_ms']:.1f} | "
            f"{side['mean_batch_texts']:.1f} | {side['inference_busy']:.0%} | {cpu_cell(side)} | "
            f"{side['client_cpu_us']:.0f} | "
            f"{side['failures']} |"
        )
    unit = "p50 ms" if open_loop else "requests/s"
    lines += ["", f"Medians over rounds. Per round ({unit}):", "", "| round | A | B | B/A |", "|---|---|---|---|"]
    for i, (ra, rb, ratio) in enumerate(zip(result["runs"]["A"], result["runs"]["B"], result["ratios"], strict=True)):
        lines.append(
            f"| {i + 1} | {ra[key]:.{1 if open_loop else 0}f} | {rb[key]:.{1 if open_loop else 0}f} | {ratio:.3f} |"
        )
    if open_loop:
        lines += [
            "",
            "Open loop: requests leave at Poisson arrival times whatever the answers do, over a pool of keep-alive "
            "connections; a request that finds them all busy waits and is timed from its scheduled time.",
        ]
    return "\n".join(lines) + "\n"
