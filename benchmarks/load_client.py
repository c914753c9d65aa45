"""The load client of serve-load and serve-ab: closed-loop and open-loop (Poisson) HTTP clients on keep-alive
connections, and what they read of the server around each timed window (/metrics, /proc)."""

from __future__ import annotations

import asyncio
import os
import time
from collections import deque
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, cast

import numpy as np

__all__ = ["cpu_cell", "drive", "drive_open", "run_clients"]


class _Client(asyncio.Protocol):
    """One closed-loop client on one keep-alive HTTP/1.1 connection: it writes the next request from within the
    callback that completes the previous response (no coroutine, no stream buffers), as load generators such as wrk
    do. The client shares the server's cores, so its CPU is the benchmark's to keep small: asyncio streams cost
    ~120 us of CPU per request here (uvloop or not), aiohttp ~250, httpx topped out near 300 requests/s on its own."""

    def __init__(self, load: _Load) -> None:
        self.load = load
        self.buffer = bytearray()
        self.end = -1  # where the current response ends in the buffer, once its head is read
        self.body = 0  # where its body starts
        self.status = 0
        self.start = 0.0
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's transports do not subclass asyncio's
        self.send_next()

    def send_next(self) -> None:
        assert self.transport is not None
        index = next(self.load.cursor, None)  # shared iterator: each text is sent exactly once
        if index is None:
            self.transport.close()
            return
        self.start = time.perf_counter()
        self.transport.write(self.load.requests[index])

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if self.end < 0:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            head = bytes(self.buffer[:head_end]).lower()
            self.status = int(head[9:12])
            self.body = head_end + 4
            self.end = self.body + _content_length(head)
        if len(self.buffer) < self.end:
            return
        self.load.latencies.append(time.perf_counter() - self.start)
        body = self.buffer[self.body : self.end]
        self.load.failures += self.status != 200 or not body.startswith(b"[[") or body.count(b"[") != 2
        del self.buffer[: self.end]
        self.end = -1
        self.send_next()

    def connection_lost(self, error: Exception | None) -> None:
        self.load.closed()


class _Load:
    """What the clients of one level share: the requests, a cursor over them, the results."""

    def __init__(self, address: str, texts: list[str], concurrency: int) -> None:
        self.requests = [_request(address, text) for text in texts]
        self.cursor = iter(range(len(texts)))
        self.latencies: list[float] = []
        self.failures = 0
        self.open = concurrency
        self.done = asyncio.get_running_loop().create_future()

    def closed(self) -> None:
        """A client's connection ended (its request in flight, if any, is counted lost by `_drive`)."""
        self.open -= 1
        if self.open == 0 and not self.done.done():
            self.done.set_result(None)


class _OpenClient(_Client):
    """One connection of an open-loop load: it sends what the schedule hands it, then waits idle for the next."""

    load: _OpenLoad

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.load.idle.append(self)

    def send_next(self) -> None:
        self.load.ready(self)


class _OpenLoad(_Load):
    """Requests sent at scheduled (Poisson) times over a pool of keep-alive connections, whatever the answers do.

    A request sent on an idle connection is timed from when it is written; one that finds every connection busy
    waits in a backlog and is timed from its scheduled time, so the server's slowness is not hidden by the client
    sending less (the coordinated omission that closed-loop clients have)."""

    def __init__(self, address: str, texts: list[str], connections: int) -> None:
        super().__init__(address, texts, connections)
        self.idle: deque[_OpenClient] = deque()
        self.backlog: deque[tuple[int, float]] = deque()  # (request, scheduled time)

    def send(self, index: int, scheduled: float) -> None:
        if not self.idle:
            self.backlog.append((index, scheduled))
            return
        client = self.idle.pop()
        assert client.transport is not None
        client.start = time.perf_counter()
        client.transport.write(self.requests[index])

    def ready(self, client: _OpenClient) -> None:
        """A connection finished its response: it takes the oldest waiting request, or goes idle."""
        if len(self.latencies) == len(self.requests) and not self.done.done():
            self.done.set_result(None)
        if not self.backlog:
            self.idle.append(client)
            return
        index, client.start = self.backlog.popleft()
        assert client.transport is not None
        client.transport.write(self.requests[index])


async def drive_open(url: str, texts: list[str], rate: float, server_pid: int | None = None) -> dict[str, Any]:
    """Open-loop load: one single-sentence request per text at Poisson arrivals of `rate` per second (a fixed seed),
    over up to 128 keep-alive connections; the same report as `_drive`, throughput being the rate achieved."""
    address = url.removeprefix("http://")
    host, port = address.rsplit(":", 1)
    loop = asyncio.get_running_loop()
    before = _counters(url)
    load = _OpenLoad(address, texts, 128)
    for _ in range(128):
        await loop.create_connection(lambda: _OpenClient(load), host, int(port))
    arrivals = np.cumsum(np.random.default_rng(0).exponential(1 / rate, len(texts)))
    server_before = _server_cpu(server_pid)
    cpu, start = time.process_time(), time.perf_counter()
    for index, at in enumerate(arrivals):
        delay = start + at - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        load.send(index, start + at)
    await asyncio.wait_for(load.done, timeout=600)
    wall = time.perf_counter() - start
    client_cpu = time.process_time() - cpu
    server_after = _server_cpu(server_pid)
    for client in list(load.idle):
        assert client.transport is not None
        client.transport.close()
    return {"rate": rate, **_report(load, wall, client_cpu, before, _counters(url), server_before, server_after)}


def _content_length(head: bytes) -> int:
    at = head.find(b"content-length:")
    if at < 0:
        raise RuntimeError(f"response without Content-Length: {head[:80]!r}")
    end = head.find(b"\r\n", at)
    return int(head[at + 15 : end if end >= 0 else len(head)])


def _request(address: str, inputs: str | list[str]) -> bytes:
    import orjson

    body = orjson.dumps({"inputs": inputs})
    head = f"POST /embed HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n"
    return f"{head}Content-Length: {len(body)}\r\n\r\n".encode() + body


async def drive(url: str, texts: list[str], concurrency: int, server_pid: int | None = None) -> dict[str, Any]:
    """`concurrency` closed-loop clients (`_Client`) share one list of texts; each text is sent once, one per
    request, its request serialized before the clock starts; a response must be 200 with one vector.

    With `server_pid` (Linux), the server's CPU per request is read from /proc over the same window: the whole
    process, and its main thread alone — the event loop, whose work lands on the cores the inference needs."""
    address = url.removeprefix("http://")
    host, port = address.rsplit(":", 1)
    loop = asyncio.get_running_loop()
    reader, writer = await asyncio.open_connection(host, int(port))  # warm the server
    writer.write(_request(address, texts[:8]))
    await reader.readexactly(_content_length((await reader.readuntil(b"\r\n\r\n")).lower()))
    writer.close()
    before = _counters(url)
    load = _Load(address, texts, concurrency)
    server_before = _server_cpu(server_pid)
    cpu, start = time.process_time(), time.perf_counter()
    for _ in range(concurrency):
        await loop.create_connection(lambda: _Client(load), host, int(port))
    await asyncio.wait_for(load.done, timeout=600)
    wall = time.perf_counter() - start
    client_cpu = time.process_time() - cpu
    server_after = _server_cpu(server_pid)
    after = _counters(url)
    return {"concurrency": concurrency, **_report(load, wall, client_cpu, before, after, server_before, server_after)}


def _report(
    load: _Load,
    wall: float,
    client_cpu: float,
    before: dict[str, float],
    after: dict[str, float],
    server_before: tuple[float, float] | None,
    server_after: tuple[float, float] | None,
) -> dict[str, Any]:
    """One level's figures: the answers, the latencies, and what /metrics and /proc say the server did meanwhile."""
    served = {name: after[name] - before[name] for name in after}
    ms = np.asarray(load.latencies) * 1e3
    answered = len(load.latencies)
    return {
        "requests": answered,
        "failures": load.failures + len(load.requests) - answered,  # bad answers, and requests never answered
        "throughput": answered / wall,
        "p50_ms": float(np.percentile(ms, 50)),
        "p99_ms": float(np.percentile(ms, 99)),
        # What the batcher made of it: texts per Encoder call, and the share of the wall clock spent inferring
        "mean_batch_texts": served["onnxbert_batch_texts_sum"] / max(served["onnxbert_batch_texts_count"], 1),
        "inference_busy": served["onnxbert_inference_seconds_sum"] / wall,
        "client_cpu_us": client_cpu / max(answered, 1) * 1e6,
        **_server_cpu_per_request(server_before, server_after, answered),
    }


def cpu_cell(row: dict[str, Any]) -> str:
    """The server's CPU per request, its event loop's part in parentheses: "3460 (320)"."""
    if "server_cpu_us" not in row:
        return "-"
    return f"{row['server_cpu_us']:.0f} ({row['event_loop_cpu_us']:.0f})"


def _server_cpu(pid: int | None) -> tuple[float, float] | None:
    """CPU seconds of the server process (all threads) and of its main thread (the event loop), or None off Linux.

    The kernel counts in clock ticks (10 ms) and scales a process's and a thread's totals separately, so over a
    window of a few ticks the thread can even read more than the process; over a level of ~2 s the process reads
    to ~1% and the event loop (~0.3 s of CPU) to ~3%."""
    if pid is None:
        return None
    try:
        whole = Path(f"/proc/{pid}/stat").read_text()
        main = Path(f"/proc/{pid}/task/{pid}/stat").read_text()
    except OSError:
        return None
    tick = os.sysconf("SC_CLK_TCK")

    def seconds(stat: str) -> float:
        fields = stat[stat.rindex(")") + 2 :].split()  # utime and stime are the 14th and 15th fields
        return (int(fields[11]) + int(fields[12])) / tick

    return seconds(whole), seconds(main)


def _server_cpu_per_request(
    before: tuple[float, float] | None, after: tuple[float, float] | None, requests: int
) -> dict[str, float]:
    if before is None or after is None or not requests:
        return {}
    whole, main = (1e6 * (b - a) / requests for a, b in zip(before, after, strict=True))
    return {"server_cpu_us": whole, "event_loop_cpu_us": main}


def run_clients(main: Coroutine[Any, Any, dict[str, Any]]) -> dict[str, Any]:
    """Run a level's clients on uvloop where installed (it comes with uvicorn[standard]): ~40 us of client CPU per
    request against ~50 on asyncio's own loop."""
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main)
    return uvloop.run(main)


def _counters(url: str) -> dict[str, float]:
    """The server's batch and inference totals from /metrics (read outside the timed window)."""
    import httpx

    wanted = ("onnxbert_batch_texts_count", "onnxbert_batch_texts_sum", "onnxbert_inference_seconds_sum")
    text = httpx.get(f"{url}/metrics", timeout=10).text
    return {line.split()[0]: float(line.split()[1]) for line in text.splitlines() if line.startswith(wanted)}
