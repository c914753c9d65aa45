"""Hostile and unlucky traffic against a real `onnxbert serve`, all at once, while ordinary clients are timed.

    python -m benchmarks adversarial [--model minilm] [--seconds 20] [--out DIR]

The five attacks of issue #16 (items 1-5), each bounded in count and time, run together for --seconds:
  huge-texts    clients posting one 1.9 MB text with truncate=false (tokenizing it would stall the event loop)
  junk-paths    unauthenticated GETs of ever-new paths (each once a metrics label)
  embed-all     /embed_all requests of 64 texts x 300 words from clients that never read the answer
  huge-headers  8 MB request heads
  slow-loris    sockets that send part of a request head or body and stall, reopened when the server closes them
Meanwhile /health is probed every 20 ms, ordinary /embed requests are checked against the in-process Encoder, and the
server's RSS is sampled. Then SIGTERM with 100 slow-loris sockets open: how long the drain took, and the exit status.
Targets (the issue's): /health p99 < 100 ms, peak RSS < 2x its value after warm-up, every ordinary answer correct,
every attack refused with its status, a drain of seconds that exits 0.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np

from benchmarks.env import cpu_info
from benchmarks.workloads import sentences
from onnxbert.runtime import Encoder
from onnxbert.serve.process import start_server

_PROSE = "the quick brown fox jumps over the lazy dog and keeps on running through the field"
_STALLED = (
    b"GET /health HTTP/1.1\r\nHo",
    b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 99\r\n\r\n{",
)
EXPECTED = {"huge-texts": 422, "junk-paths": 404, "embed-all": 422, "huge-headers": 431, "slow-loris": 408}


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def _post(path: str, body: bytes, host: str) -> bytes:
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    )
    return head.encode() + body


async def _status(host: str, port: int, request: bytes) -> int:
    """Send one raw request on a fresh connection; its status code (0: closed before one came). Only the status
    line is read: the rest of the answer is left unread, as a client that never reads its answers leaves it."""
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        with contextlib.suppress(ConnectionError):  # refused mid-send; the answer may already be there
            await writer.drain()
        line = await reader.readline()
        return int(line.split()[1]) if line.startswith(b"HTTP/1.1 ") else 0
    except ConnectionError:
        return 0
    finally:
        writer.close()


class _Attacks:
    def __init__(self, host: str, port: int, deadline: float) -> None:
        self.host, self.port, self.deadline = host, port, deadline
        self.statuses: dict[str, collections.Counter[int]] = collections.defaultdict(collections.Counter)
        self.sent: collections.Counter[str] = collections.Counter()

    def going(self) -> bool:
        return time.monotonic() < self.deadline

    async def _loop(self, name: str, request: Any, limit: int) -> None:
        while self.going() and self.sent[name] < limit:
            self.sent[name] += 1
            try:
                code = await asyncio.wait_for(_status(self.host, self.port, request()), timeout=60)
            except (TimeoutError, OSError):
                code = -1
            self.statuses[name][code] += 1

    async def huge_texts(self) -> None:
        body = json.dumps({"inputs": "ab " * 633_000, "truncate": False}).encode()
        await self._loop("huge-texts", lambda: _post("/embed", body, self.host), 200)

    async def junk_paths(self) -> None:
        counter = iter(range(10**9))
        await self._loop(
            "junk-paths", lambda: f"GET /{next(counter)}{'q' * 200} HTTP/1.1\r\nHost: x\r\n\r\n".encode(), 20_000
        )

    async def embed_all(self) -> None:
        words = _PROSE.split()
        text = " ".join(words[i % len(words)] for i in range(300))
        body = json.dumps({"inputs": [text] * 64}).encode()
        await self._loop("embed-all", lambda: _post("/embed_all", body, self.host), 400)

    async def huge_headers(self) -> None:
        head = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8_000_000 + b"\r\n\r\n"
        await self._loop("huge-headers", lambda: head, 50)

    async def slow_loris(self, sockets: int) -> None:
        """Half send part of a head, half a head and part of a body; each reopens when the server closes it."""
        await asyncio.gather(
            *(self._loop("slow-loris", lambda part=_STALLED[i % 2]: part, 10_000) for i in range(sockets))
        )


async def _probe_health(url: str, deadline: float) -> list[float]:
    seconds = []
    async with httpx.AsyncClient(timeout=30) as client:
        while time.monotonic() < deadline:
            start = time.perf_counter()
            reply = await client.get(f"{url}/health")
            seconds.append(time.perf_counter() - start if reply.status_code == 200 else float("inf"))
            await asyncio.sleep(0.02)
    return seconds


async def _ordinary(url: str, texts: list[str], expected: np.ndarray, deadline: float) -> dict[str, Any]:
    seconds, worst, wrong, done = [], 0.0, 0, 0
    async with httpx.AsyncClient(timeout=60) as client:
        while time.monotonic() < deadline:
            pick = [(done * 3 + k) % len(texts) for k in range(3)]
            start = time.perf_counter()
            reply = await client.post(f"{url}/embed", json={"inputs": [texts[i] for i in pick]})
            seconds.append(time.perf_counter() - start)
            done += 1
            if reply.status_code != 200:
                wrong += 1
                continue
            error = float(np.abs(np.asarray(reply.json(), dtype=np.float32) - expected[pick]).max())
            worst = max(worst, error)
            wrong += error > 1e-4
    return {"requests": done, "wrong": wrong, "max_abs_error": worst, **_percentiles(seconds)}


def _percentiles(seconds: list[float]) -> dict[str, float]:
    ms = np.asarray(seconds) * 1000
    return {"p50_ms": float(np.percentile(ms, 50)), "p99_ms": float(np.percentile(ms, 99)), "max_ms": float(ms.max())}


async def _sample_rss(pid: int, deadline: float) -> float:
    peak = 0.0
    while time.monotonic() < deadline:
        peak = max(peak, _rss_mb(pid))
        await asyncio.sleep(0.1)
    return peak


async def _scenario(url: str, pid: int, seconds: float, texts: list[str], expected: np.ndarray) -> dict[str, Any]:
    host, port = url.removeprefix("http://").split(":")
    deadline = time.monotonic() + seconds
    attacks = _Attacks(host, int(port), deadline)
    attack_tasks = [
        *(asyncio.create_task(attacks.huge_texts()) for _ in range(2)),
        *(asyncio.create_task(attacks.junk_paths()) for _ in range(4)),
        *(asyncio.create_task(attacks.embed_all()) for _ in range(8)),
        *(asyncio.create_task(attacks.huge_headers()) for _ in range(2)),
        asyncio.create_task(attacks.slow_loris(100)),
    ]
    health, ordinary, peak = await asyncio.gather(
        _probe_health(url, deadline), _ordinary(url, texts, expected, deadline), _sample_rss(pid, deadline)
    )
    for task in attack_tasks:
        task.cancel()
    await asyncio.gather(*attack_tasks, return_exceptions=True)
    return {
        "health": {"probes": len(health), **_percentiles(health)},
        "ordinary": ordinary,
        "peak_rss_mb": peak,
        "attacks": {name: {"sent": attacks.sent[name], "statuses": dict(attacks.statuses[name])} for name in EXPECTED},
    }


async def _drain(url: str, process: Any) -> dict[str, Any]:
    host, port = url.removeprefix("http://").split(":")
    writers = []
    for i in range(100):
        _, writer = await asyncio.open_connection(host, int(port))
        writer.write(_STALLED[i % 2])
        writers.append(writer)
    await asyncio.sleep(0.3)
    start = time.perf_counter()
    process.send_signal(signal.SIGTERM)
    while process.poll() is None and time.perf_counter() - start < 60:
        await asyncio.sleep(0.02)
    for writer in writers:
        writer.close()
    return {"seconds": time.perf_counter() - start, "exit_status": process.poll()}


def run_adversarial(
    directory: Path, seconds: float, out: Path, model: str, server_flags: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Warm the server up, measure RSS, run every attack at once for `seconds`, then SIGTERM it.

    `server_flags`: beyond the defaults (a short run shortens --header-timeout and --body-timeout so that the
    slow-loris sockets are refused within it).
    """
    texts = sentences(200)
    expected = Encoder(directory).embed(texts, normalize=True)
    server = start_server(directory, *server_flags)
    try:
        server.wait_ready()
        pid = server.process.pid
        with httpx.Client(timeout=60) as client:  # warm-up: every code path the ordinary clients take
            for start in range(0, len(texts), 8):
                client.post(f"{server.url}/embed", json={"inputs": texts[start : start + 8]}).raise_for_status()
        warm = _rss_mb(pid)
        result = asyncio.run(_scenario(server.url, pid, seconds, texts, expected))
        result["drain"] = asyncio.run(_drain(server.url, server.process))
    finally:
        server.stop()
    result |= {"model": model, "seconds": seconds, "warm_rss_mb": warm, "cpu": cpu_info(), "flags": list(server_flags)}
    result["rss_ratio"] = result["peak_rss_mb"] / warm
    result["verdicts"] = verdicts(result)
    out.mkdir(parents=True, exist_ok=True)
    (out / "adversarial.json").write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    (out / "adversarial.md").write_text(markdown(result), encoding="utf-8")
    return result


def verdicts(result: dict[str, Any]) -> dict[str, bool]:
    """Each target of the scenario, met or not."""
    attacks = result["attacks"]
    answered = all(
        set(attack["statuses"]) <= {EXPECTED[name], 0} and attack["statuses"].get(EXPECTED[name], 0) > 0
        for name, attack in attacks.items()
    )
    ordinary = result["ordinary"]
    return {
        "health p99 < 100 ms": result["health"]["p99_ms"] < 100,
        "peak RSS < 2x warm": result["rss_ratio"] < 2,
        "ordinary answers all correct": ordinary["wrong"] == 0 and ordinary["requests"] > 0,
        "every attack refused with its status": answered,
        "drain < 5 s, exit 0": result["drain"]["seconds"] < 5 and result["drain"]["exit_status"] == 0,
    }


def markdown(result: dict[str, Any]) -> str:
    health, ordinary, cpu = result["health"], result["ordinary"], result["cpu"]
    lines = [
        f"# Adversarial traffic ({result['model']}, {result['seconds']:.0f} s, every attack at once)",
        "",
        f"CPU: {cpu['model']} ({', '.join(cpu['flags'])}), one run; server flags beyond the defaults: "
        f"{' '.join(result['flags']) or 'none'}.",
        "",
        "| measure | value |",
        "|---|---|",
        f"| /health p50 / p99 / max | {health['p50_ms']:.1f} / {health['p99_ms']:.1f} / {health['max_ms']:.1f} ms "
        f"({health['probes']} probes) |",
        f"| ordinary /embed (3 texts) p50 / p99 | {ordinary['p50_ms']:.1f} / {ordinary['p99_ms']:.1f} ms, "
        f"{ordinary['requests']} requests, {ordinary['wrong']} wrong (max error {ordinary['max_abs_error']:.1e}) |",
        f"| RSS after warm-up / peak | {result['warm_rss_mb']:.0f} / {result['peak_rss_mb']:.0f} MB "
        f"({result['rss_ratio']:.2f}x) |",
        f"| SIGTERM with 100 slow-loris sockets open | exit {result['drain']['exit_status']} after "
        f"{result['drain']['seconds']:.2f} s |",
        "",
        "| attack | requests | answered (status: count; 0 = closed unanswered) | expected |",
        "|---|---|---|---|",
    ]
    for name, attack in result["attacks"].items():
        statuses = ", ".join(f"{code}: {count}" for code, count in sorted(attack["statuses"].items()))
        lines.append(f"| {name} | {attack['sent']} | {statuses} | {EXPECTED[name]} |")
    lines += ["", "| target | met |", "|---|---|"]
    lines += [f"| {name} | {'yes' if met else '**no**'} |" for name, met in result["verdicts"].items()]
    return "\n".join(lines) + "\n"
