"""Load benchmark of `onnxbert serve`: a bounded async client on 127.0.0.1 sending one sentence per request.

Reported beside the in-process `Encoder.embed` throughput on the same texts (one call, length-sorted batching),
measured in the same rounds. The reference is the better of packed and padded sorted batching, so that packing
cannot flatter the share by slowing the reference. Goal: at concurrency 32 the server reaches >= 80% of it.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.env import environment
from benchmarks.load_client import cpu_cell, drive, run_clients
from benchmarks.models import prepare
from benchmarks.workloads import sentences
from onnxbert.serve.process import ServerProcess, running_server


class _InProcess:
    """The in-process references, timed in the same rounds as the server so that drifts in machine speed hit all
    alike: `Encoder.embed` over all texts (length-sorted batching, packed and padded), and the same texts in shuffled
    groups of 32, one call each — what a perfect server could do at concurrency 32: closed-loop clients never have
    more than 32 requests in flight, so no batch can hold more, and its texts arrive in no length order — and in
    groups of 16: against a batcher that is never idle, 32 clients split into two cohorts of about 16, one queueing
    while the other's batch runs (the server's /metrics show 15-16 texts per batch at concurrency 32)."""

    def __init__(self, directory: Path, texts: list[str], threads: int, variant: str, packing: bool) -> None:
        from onnxbert.runtime import Encoder
        from onnxbert.serve.settings import ServerSettings

        self.texts = texts
        self.encoder = Encoder(directory, variant=variant, provider="cpu", threads=threads)
        self.padded = Encoder(directory, variant=variant, provider="cpu", threads=threads, packing=False)
        runs = ServerSettings().max_run_texts  # as `onnxbert serve` runs a batch
        self.grouped = Encoder(
            directory, variant=variant, provider="cpu", threads=threads, max_batch_size=runs, packing=packing
        )
        order = np.random.default_rng(0).permutation(len(texts))
        shuffled = [texts[i] for i in order]
        self.groups = {size: [shuffled[i : i + size] for i in range(0, len(texts), size)] for size in (16, 32)}
        for encoder in (self.encoder, self.padded, self.grouped):
            encoder.embed(texts[:64])

    def sorted_rate(self) -> float:
        return len(self.texts) / _timed(lambda: self.encoder.embed(self.texts))

    def padded_rate(self) -> float:
        return len(self.texts) / _timed(lambda: self.padded.embed(self.texts))

    def groups_rate(self, size: int) -> float:
        return len(self.texts) / _timed(lambda: [self.grouped.embed(g) for g in self.groups[size]])


def _timed(call: Any) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


@dataclass(frozen=True)
class LoadSettings:
    """What serve-load measures: the model, the client levels and rounds, and the server's flags."""

    model: str = "minilm"
    concurrency: tuple[int, ...] = (1, 8, 32, 128)
    requests: int = 1000
    threads: int = 2
    variant: str = "fp32"
    rounds: int = 3
    packing: bool = True
    spinning: bool = False

    def server_flags(self) -> list[str]:
        """`onnxbert serve` flags that match the in-process reference."""
        return [
            *("--variant", self.variant, "--threads", str(self.threads)),
            "--packing" if self.packing else "--no-packing",
            "--spinning" if self.spinning else "--no-spinning",
        ]


@dataclass
class _Rounds:
    """Every timing of a run: the in-process references and each level's runs, each share against its bracket."""

    local: _InProcess
    sorted_rates: list[float] = field(default_factory=list)
    padded_rates: list[float] = field(default_factory=list)
    best_rates: list[float] = field(default_factory=list)  # the better of packed and padded sorted batching
    group_rates: list[float] = field(default_factory=list)
    half_rates: list[float] = field(default_factory=list)  # groups of 16: what 32 clients settle into without refill
    group_shares: list[float] = field(default_factory=list)
    half_shares: list[float] = field(default_factory=list)
    runs: dict[int, list[dict[str, Any]]] = field(default_factory=dict)

    def reference(self) -> float:
        self.sorted_rates.append(self.local.sorted_rate())
        self.padded_rates.append(self.local.padded_rate())
        self.best_rates.append(max(self.sorted_rates[-1], self.padded_rates[-1]))
        return self.best_rates[-1]

    def one_round(self, server: ServerProcess, texts: list[str], concurrency: tuple[int, ...]) -> None:
        # Every figure is divided by the mean of the reference timed just before and just after it: the machine's
        # speed drifts within minutes.
        before = self.reference()
        self.group_rates.append(self.local.groups_rate(32))
        self.half_rates.append(self.local.groups_rate(16))
        after = self.reference()
        self.group_shares.append(self.group_rates[-1] / ((before + after) / 2))
        self.half_shares.append(self.half_rates[-1] / ((before + after) / 2))
        for c in concurrency:
            before = after
            run = run_clients(drive(server.url, texts, c, server.process.pid))
            after = self.reference()
            run["reference"] = (before + after) / 2
            run["share_of_in_process"] = run["throughput"] / run["reference"]
            self.runs.setdefault(c, []).append(run)

    def rows(self) -> list[dict[str, Any]]:
        rows = []
        for c, runs in self.runs.items():
            row = {key: _median([run[key] for run in runs]) for key in runs[0] if key != "concurrency"}
            row |= {key: sum(run[key] for run in runs) for key in ("requests", "failures")}  # totals, not medians
            rows.append({"concurrency": c, **row, "rounds": runs})
        return rows


def run_load(settings: LoadSettings, cache: Path, out: Path) -> dict[str, Any]:
    """`rounds` rounds, each timing in-process groups of 32 and of 16, then every concurrency level, with the
    in-process sorted reference timed before and after each; the report gives each figure's median over rounds and
    each share as the median of its own ratios to the mean of the reference around it."""
    directory = prepare(settings.model, cache).directory
    texts = sentences(settings.requests)
    rounds = _Rounds(_InProcess(directory, texts, settings.threads, settings.variant, settings.packing))
    with running_server(directory, *settings.server_flags()) as server:
        widest = max(settings.concurrency)
        run_clients(drive(server.url, texts[:256], widest, server.process.pid))  # warm arenas at the widest batch
        for _ in range(settings.rounds):
            rounds.one_round(server, texts, settings.concurrency)
    result = {
        **asdict(settings),
        "texts": len(texts),
        "in_process_throughput": _median(rounds.best_rates),
        "in_process_sorted_packed": _median(rounds.sorted_rates),
        "in_process_sorted_padded": _median(rounds.padded_rates),
        "in_process_groups_of_32": _median(rounds.group_rates),
        "groups_share": _median(rounds.group_shares),
        "in_process_groups_of_16": _median(rounds.half_rates),
        "groups_16_share": _median(rounds.half_shares),
        "in_process_rounds": {
            "sorted_packed": rounds.sorted_rates,
            "sorted_padded": rounds.padded_rates,
            "groups_of_32": rounds.group_rates,
            "groups_of_16": rounds.half_rates,
        },
        "rows": rounds.rows(),
        "environment": environment(settings.threads),
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "serve_load.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out / "serve_load.md").write_text(markdown(result), encoding="utf-8")
    return result


def _median(values: list[float]) -> float:
    return float(np.median(values))


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"# onnxbert serve load ({result['model']} {result['variant']}, {result['texts']} single-sentence "
        "requests, "
        f"{result['threads']} inference threads, packing {'on' if result['packing'] else 'off'}, spinning "
        f"{'on' if result['spinning'] else 'off'})",
        "",
        f"In-process `Encoder.embed` on the same texts (one call, length-sorted batches): "
        f"{result['in_process_sorted_packed']:.0f} sentences/s packed, {result['in_process_sorted_padded']:.0f} "
        f"padded; the reference is the better of the two each time it is timed (median "
        f"{result['in_process_throughput']:.0f}). In shuffled groups of 32, one call each (the most 32 closed-loop "
        f"clients can offer a batcher, in no length order): {result['in_process_groups_of_32']:.0f} sentences/s, "
        f"{result['groups_share']:.0%} of the reference; in groups of 16 (what 32 clients settle into against a "
        f"busy batcher: two cohorts, one queueing while the other's batch runs): "
        f"{result['in_process_groups_of_16']:.0f} sentences/s, {result['groups_16_share']:.0%}.",
        "",
        f"Medians of {result['rounds']} rounds; each round times the in-process groups, then every concurrency "
        "level, and times the reference before and after each of them: a share is the figure over the mean of the "
        "reference around it (this machine's speed drifts within minutes), and the reported share is the median of "
        "the rounds' shares.",
        "",
        "| concurrency | requests/s | share of in-process | texts per batch | inference busy | p50 ms | p99 ms "
        "| server CPU us/request (event loop) | client CPU us/request | failures |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['concurrency']} | {row['throughput']:.0f} | {row['share_of_in_process']:.0%} | "
            f"{row['mean_batch_texts']:.1f} | {row['inference_busy']:.0%} | {row['p50_ms']:.1f} | "
            f"{row['p99_ms']:.1f} | {cpu_cell(row)} | {row.get('client_cpu_us', float('nan')):.0f} | "
            f"{row['failures']} |"
        )
    lines += [
        "",
        "Texts per batch and inference busy come from the server's /metrics (onnxbert_batch_texts, "
        "onnxbert_inference_seconds) over each level's timed window. The client runs on the same machine and "
        "competes with the server for its cores; its CPU per request is measured in the same window, as is the server's "
        "(from /proc: the whole process, and in parentheses its main thread, the event loop).",
    ]
    return "\n".join(lines) + "\n"
