"""A real `onnxbert serve` process on a free loopback port, driven over HTTP with httpx."""

from __future__ import annotations

import asyncio
import base64
import collections
import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest

from onnxbert.runtime import Encoder
from onnxbert.serve.process import free_port, running_server

LONG = "the quick brown fox jumps over the lazy dog " * 28  # ~250 tokens with MiniLM's vocabulary


@contextmanager
def server(directory: Path, *flags: str, wait: bool = True) -> Iterator[tuple[str, subprocess.Popen[str]]]:
    with running_server(directory, *flags, wait=wait, capture_output=True, timeout=60) as running:
        yield running.url, running.process


@pytest.fixture(scope="module")
def minilm_server(minilm_dir: Path) -> Iterator[str]:
    with server(minilm_dir) as (url, _):
        yield url


@pytest.fixture(scope="module")
def tiny_server(tiny_model_dir: Path) -> Iterator[str]:
    flags = ("--max-client-batch", "4", "--payload-limit", "20000", "--api-key", "s3cret", "--spinning")
    flags += ("--max-text-chars", "2000", "--max-embed-all-tokens", "40")
    flags += ("--refill-gap-ms", "2")
    with server(tiny_model_dir, *flags) as (url, _):
        yield url


AUTH = {"Authorization": "Bearer s3cret"}


def test_openai_round_trip(minilm_server: str, minilm_dir: Path) -> None:
    texts = ["今天天气真好啊", "A man is playing a guitar.", "x"]
    reply = httpx.post(f"{minilm_server}/v1/embeddings", json={"input": texts, "model": "minilm"}, timeout=30)
    assert reply.status_code == 200, reply.text
    body = reply.json()
    encoder = Encoder(minilm_dir)
    expected = encoder.embed(texts, normalize=True)
    assert body["object"] == "list" and body["model"] == "minilm"
    assert [d["index"] for d in body["data"]] == [0, 1, 2]
    np.testing.assert_allclose([d["embedding"] for d in body["data"]], expected, atol=1e-5)
    assert body["usage"]["prompt_tokens"] == sum(len(ids) for ids in encoder.tokenize(texts).ids)
    packed = httpx.post(
        f"{minilm_server}/v1/embeddings", json={"input": texts[0], "encoding_format": "base64"}, timeout=30
    ).json()
    decoded = np.frombuffer(base64.b64decode(packed["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(decoded, expected[0], atol=1e-5)
    assert httpx.get(f"{minilm_server}/info").json()["spinning"] is False  # the server's default: sleep when idle


def test_two_hundred_concurrent_requests_get_their_own_rows(minilm_server: str, minilm_dir: Path) -> None:
    rng = np.random.default_rng(7)
    words = [*LONG.split(), "今天", "天气", "guitar", "ocean", "market"]
    requests = [
        [" ".join(rng.choice(words, size=int(rng.integers(1, 120)))) for _ in range(int(rng.integers(1, 4)))]
        for _ in range(200)
    ]

    async def fire() -> list[httpx.Response]:
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=minilm_server, timeout=120, limits=limits) as client:
            return await asyncio.gather(
                *(
                    client.post("/embed", json={"inputs": texts, "normalize": i % 3 == 0})  # batches mix both
                    for i, texts in enumerate(requests)
                )
            )

    replies = asyncio.run(fire())
    encoder = Encoder(minilm_dir)
    for i, (texts, reply) in enumerate(zip(requests, replies, strict=True)):
        assert reply.status_code == 200, reply.text
        np.testing.assert_allclose(np.array(reply.json()), encoder.embed(texts, normalize=i % 3 == 0), atol=1e-5)
    metrics = httpx.get(f"{minilm_server}/metrics").text
    batched = [line for line in metrics.splitlines() if line.startswith("onnxbert_batch_texts_count")]
    assert batched and float(batched[0].split()[-1]) < 200  # requests were coalesced into fewer Encoder calls


def test_load_benchmark_client_counts_answers_and_reads_the_batching(minilm_server: str) -> None:
    """serve-load's client (no timing asserted): every text sent once and checked, the server's batching read back."""
    from benchmarks.load_client import drive

    texts = [f"sentence number {i} about the ocean" for i in range(48)]
    run = asyncio.run(drive(minilm_server, texts, 8))
    assert run["requests"] == 48 and run["failures"] == 0
    assert 1 <= run["mean_batch_texts"] <= 8  # 8 closed-loop clients never have more than 8 texts in flight
    assert 0 < run["inference_busy"] <= 1.05
    assert run["client_cpu_us"] > 0
    rejected = asyncio.run(drive(minilm_server, [*texts[:5], "word " * 600, *texts[5:10]], 3))  # 422: too long
    assert rejected["requests"] == 11 and rejected["failures"] == 1


@pytest.mark.export  # the benchmarks read their text through the export extra
def test_serve_ab_drives_two_servers_in_alternating_rounds(tiny_model_dir: Path, tmp_path: Path) -> None:
    """serve-ab (no timing asserted): both sides answer every request, rounds pair up, a bad flag ends the run."""
    from benchmarks.serve_ab import _sign_test, run_ab

    settings = {"concurrency": 4, "requests": 24, "rounds": 2}
    result = run_ab(tiny_model_dir, "--threads 1", "--threads 1 --packing", **settings, out=tmp_path)
    assert [len(result["runs"][side]) for side in "AB"] == [2, 2] and len(result["ratios"]) == 2
    assert all(run["requests"] == 24 and run["failures"] == 0 for side in "AB" for run in result["runs"][side])
    assert result["sides"]["A"]["mean_batch_texts"] <= 4  # 4 closed-loop clients
    # Each server's CPU read from /proc over its window. The kernel counts in ticks (10 ms) and rescales the
    # process's and a thread's totals separately, so on windows this short only the sums are meaningful.
    timed = result["runs"]["A"] + result["runs"]["B"]
    assert all(run["server_cpu_us"] >= 0 and run["event_loop_cpu_us"] >= 0 for run in timed)
    assert sum(run["server_cpu_us"] for run in timed) > 0
    assert "B faster in" in (tmp_path / "serve_ab.md").read_text(encoding="utf-8")
    assert _sign_test(10, 12) == pytest.approx(158 / 4096) and _sign_test(2, 12) == _sign_test(10, 12)
    assert _sign_test(6, 12) == 1.0
    # Open loop: every request answered at about the scheduled rate, sides compared on p50
    paced = run_ab(tiny_model_dir, "--threads 1", "--threads 1 --refill-gap-ms 0", **settings, out=tmp_path, rate=200)
    assert all(run["requests"] == 24 and run["failures"] == 0 for side in "AB" for run in paced["runs"][side])
    assert all(run["throughput"] < 400 for side in "AB" for run in paced["runs"][side])  # paced, not flat out
    assert paced["metric"] == "p50_ms" and "B/A p50 latency" in (tmp_path / "serve_ab.md").read_text(encoding="utf-8")
    with pytest.raises(SystemExit, match=r"server B .* exited"):
        run_ab(tiny_model_dir, "", "--no-such-flag", **settings, out=tmp_path)
    with pytest.raises(SystemExit, match="positive"):
        run_ab(tiny_model_dir, "", "", **settings, out=tmp_path, rate=0)


def test_tei_endpoints_match_the_encoder(tiny_server: str, tiny_model_dir: Path) -> None:
    encoder = Encoder(tiny_model_dir)
    texts = ["hello world", "今天天气真好啊"]
    pooled = httpx.post(f"{tiny_server}/embed", json={"inputs": texts, "normalize": False}, headers=AUTH)
    assert pooled.status_code == 200, pooled.text
    np.testing.assert_allclose(pooled.json(), encoder.embed(texts), atol=1e-5)
    unit = httpx.post(f"{tiny_server}/embed", json={"inputs": "dog", "pooling": "mean"}, headers=AUTH).json()
    np.testing.assert_allclose(unit, encoder.embed("dog", pooling="mean", normalize=True), atol=1e-5)
    tokens = httpx.post(f"{tiny_server}/embed_all", json={"inputs": texts}, headers=AUTH).json()
    expected = encoder.encode(texts).last_hidden_state
    assert [len(t) for t in tokens] == [len(e) for e in expected]
    for got, want in zip(tokens, expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-5)
    split = httpx.post(f"{tiny_server}/tokenize", json={"inputs": "hello world"}, headers=AUTH).json()
    assert [t["text"] for t in split[0]] == ["[CLS]", "hello", "world", "[SEP]"]
    assert split[0][1] == {"id": 14, "text": "hello", "special": False, "start": 0, "stop": 5}
    info = httpx.get(f"{tiny_server}/info", headers=AUTH).json()
    assert info["hidden_size"] == 32 and info["variant"] == "fp32" and info["max_client_batch_size"] == 4
    assert info["spinning"] is True  # --spinning reached the session (read back from its options)
    assert info["refill_gap_ms"] == 2 and info["max_wait_ms"] == 0 and info["max_batch_texts"] == 32
    assert "onnxbert_requests_total" in httpx.get(f"{tiny_server}/metrics").text
    assert httpx.get(f"{tiny_server}/openapi.json").json()["paths"].keys() >= {"/v1/embeddings", "/embed"}


@pytest.mark.parametrize(
    ("path", "payload", "status", "message"),
    [
        ("/embed", {"inputs": []}, 400, "inputs is empty"),
        ("/embed", {"inputs": ["ok", "   ", "\u0000"]}, 422, "inputs[1] has no text"),  # TEI refuses them too
        ("/v1/embeddings", {"input": ""}, 422, "input has no text"),
        ("/v1/embeddings", {"input": []}, 400, "input is empty"),  # OpenAI's field name, not TEI's
        ("/embed", {"inputs": ["a", "b", "c", "d", "e"]}, 422, "max_client_batch=4"),
        ("/embed", {"inputs": [1, 2]}, 422, "invalid request"),
        ("/embed", {"inputs": "x " * 600, "truncate": False}, 422, "602 tokens, over max_length=512"),
        ("/embed", b'{"inputs": ["ok", "bad \\ud800"]}', 422, "inputs[1] cannot be encoded"),  # lone surrogate
        ("/v1/embeddings", {"input": [[1, 2, 3]]}, 422, "invalid request"),
        ("/v1/embeddings", {"input": "x", "dimensions": 8}, 422, "dimensions=8"),
        ("/embed", {"inputs": "y" * 30000}, 413, "exceeds the 20000-byte limit"),
    ],
)
def test_errors_have_a_status_and_a_reason(
    tiny_server: str, path: str, payload: object, status: int, message: str
) -> None:
    if isinstance(payload, bytes):  # JSON that Python's encoder refuses to produce, sent as raw bytes
        reply = httpx.post(
            f"{tiny_server}{path}", content=payload, headers={**AUTH, "content-type": "application/json"}
        )
    else:
        reply = httpx.post(f"{tiny_server}{path}", json=payload, headers=AUTH)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    text = error["message"] if isinstance(error, dict) else error
    assert message in text


def test_fast_path_and_fastapi_route_give_the_same_answers(tiny_server: str, tiny_model_dir: Path) -> None:
    """Plain JSON takes Guard's fast path; anything unusual is replayed to the FastAPI route. Same answers."""
    encoder = Encoder(tiny_model_dir)
    raw = encoder.embed(["hello world"])

    def post(path: str, body: bytes, content_type: str = "application/json") -> httpx.Response:
        return httpx.post(f"{tiny_server}{path}", content=body, headers={**AUTH, "content-type": content_type})

    fast = post("/embed", b'{"inputs": ["hello world"], "normalize": false}')
    routed = post("/embed", b'{"inputs": ["hello world"], "normalize": "false"}')  # pydantic's lax bool: replayed
    other_type = post("/embed", b'{"inputs": ["hello world"], "normalize": false}', "text/plain")
    assert fast.status_code == routed.status_code == 200, (fast.text, routed.text)
    np.testing.assert_allclose(fast.json(), raw, atol=1e-5)
    np.testing.assert_allclose(routed.json(), raw, atol=1e-5)
    assert other_type.status_code == 415 and other_type.json()["error_type"] == "UnsupportedMediaType"
    extra = post("/embed", b'{"inputs": "hello world", "extra": 1}')  # unknown field: replayed, ignored there
    np.testing.assert_allclose(extra.json(), encoder.embed(["hello world"], normalize=True), atol=1e-5)
    broken = post("/embed", b'{"inputs": ')
    assert broken.status_code == 422 and "invalid request" in broken.json()["error"]
    chunks = post("/v1/embeddings", b'{"input": "hello world", "encoding_format": "base64", "user": "u"}')
    vector = np.frombuffer(base64.b64decode(chunks.json()["data"][0]["embedding"]), dtype="<f4")
    np.testing.assert_allclose(vector, encoder.embed("hello world", normalize=True)[0], atol=1e-5)
    wrong_format = post("/v1/embeddings", b'{"input": "hello world", "encoding_format": "int8"}')
    assert wrong_format.status_code == 422 and "encoding_format" in wrong_format.json()["error"]["message"]


def test_long_answers_are_serialized_in_slices_the_event_loop_runs_between() -> None:
    from onnxbert.serve.core import json_in_slices

    texts = [np.random.default_rng(0).random((150, 8), dtype=np.float32), np.ones((3, 8), np.float32)]
    ticks = 0

    async def serialize() -> tuple[bytes, bytes]:
        nonlocal ticks

        async def tick() -> None:
            nonlocal ticks
            while True:
                ticks += 1
                await asyncio.sleep(0)

        ticker = asyncio.create_task(tick())
        await asyncio.sleep(0)
        ticks = 0
        try:
            rows = await json_in_slices(texts, rows=64)  # 3 + 1 slices
            records = await json_in_slices(iter([[{"id": 1}], [], [{"id": 2, "text": "二"}]]))
        finally:
            ticker.cancel()
        return rows, records

    rows, records = asyncio.run(serialize())
    parsed = json.loads(rows)
    assert [len(t) for t in parsed] == [150, 3]
    np.testing.assert_array_equal(np.array(parsed[0], np.float32), texts[0])  # float32 printed exactly
    assert json.loads(records) == [[{"id": 1}], [], [{"id": 2, "text": "二"}]]
    assert ticks >= 6  # another task ran between the slices, not only once the answer was whole


def test_fast_path_takes_only_plainly_valid_bodies() -> None:
    from onnxbert.serve.guard import _embed_fields, _openai_fields

    assert _embed_fields({"inputs": ["a", "b"], "pooling": "cls"}) == {
        "inputs": ["a", "b"],
        "normalize": True,
        "truncate": False,
        "pooling": "cls",
    }
    for odd in ({"inputs": [1]}, {"inputs": "a", "normalize": 1}, {"inputs": "a", "pooling": "sum"}, {"x": 1}, {}):
        assert _embed_fields(odd) is None, odd
    assert _openai_fields({"input": "a", "model": "m", "user": "u"}) == {
        "inputs": "a",
        "model": "m",
        "encoding_format": "float",
        "dimensions": None,
    }
    for odd in ({"input": "a", "dimensions": True}, {"input": "a", "encoding_format": "int8"}, {"input": [[1]]}):
        assert _openai_fields(odd) is None, odd


def test_api_key_is_required(tiny_server: str) -> None:
    assert httpx.post(f"{tiny_server}/embed", json={"inputs": "hi"}).status_code == 401
    wrong = httpx.post(f"{tiny_server}/embed", json={"inputs": "hi"}, headers={"Authorization": "Bearer nope"})
    assert wrong.status_code == 401 and "API key" in wrong.json()["error"]
    assert httpx.get(f"{tiny_server}/health").status_code == 200  # probes need no key


def test_token_level_answers_are_bounded(tiny_server: str) -> None:
    ok = httpx.post(f"{tiny_server}/embed_all", json={"inputs": ["hello world"] * 4}, headers=AUTH)  # 16 tokens
    assert ok.status_code == 200 and [len(rows) for rows in ok.json()] == [4, 4, 4, 4]
    big = httpx.post(f"{tiny_server}/embed_all", json={"inputs": ["hello world " * 10] * 2}, headers=AUTH)
    assert big.status_code == 422 and "44 tokens exceed max_embed_all_tokens=40" in big.json()["error"]


def test_over_long_text_is_refused_before_tokenizing(tiny_server: str) -> None:
    reply = httpx.post(f"{tiny_server}/embed", json={"inputs": ["ok", "y" * 2001]}, headers=AUTH)
    assert reply.status_code == 422
    assert "inputs[1] has 2001 characters, over max_text_chars=2000" in reply.json()["error"]
    info = httpx.get(f"{tiny_server}/info", headers=AUTH).json()
    assert info["max_text_chars"] == 2000 and info["max_queue_tokens"] == 65_536
    assert (info["max_header_bytes"], info["max_headers"], info["header_timeout_s"]) == (32_768, 100, 10.0)
    assert (info["body_timeout_s"], info["idle_timeout_s"], info["payload_limit"]) == (30.0, 5, 20_000)


@pytest.mark.parametrize(
    ("method", "path", "body", "status", "shape"),
    [
        ("GET", "/no/such/route", None, 404, "tei"),
        ("GET", "/v1/no-such-route", None, 404, "openai"),
        ("GET", "/embed", None, 405, "tei"),
        ("POST", "/v1/embeddings", b'{"input": "\xff\xfe"}', 400, "openai"),  # not UTF-8
        ("POST", "/v1/embeddings", b"[" * 50_000 + b"]" * 50_000, 413, "openai"),  # over the 20 kB limit
        ("POST", "/embed", b"[" * 5_000 + b"]" * 5_000, 400, "tei"),  # nested deeper than any parser goes
    ],
)
def test_every_error_has_its_api_family_shape(
    tiny_server: str, method: str, path: str, body: bytes | None, status: int, shape: str
) -> None:
    headers = {**AUTH, "content-type": "application/json"}
    reply = httpx.request(method, f"{tiny_server}{path}", content=body, headers=headers)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    if shape == "openai":
        assert error["code"] == status and isinstance(error["message"], str) and error["type"]
    else:
        assert isinstance(error, str) and reply.json()["error_type"]
    if status == 400:
        assert "not valid JSON" in str(error)


def test_metrics_label_known_routes_and_count_clients_that_left(tiny_server: str) -> None:
    for i in range(3):
        httpx.get(f"{tiny_server}/probe-{i}-" + "q" * 100)
    host, port = tiny_server.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as client:  # headers, then gone before the body
        client.sendall(b"POST /embed HTTP/1.1\r\nhost: x\r\nauthorization: Bearer s3cret\r\n")
        client.sendall(b"content-type: application/json\r\ncontent-length: 100\r\n\r\n{")
    time.sleep(0.5)
    text = httpx.get(f"{tiny_server}/metrics").text
    assert "probe-" not in text and 'endpoint="other",status="401"' in text  # one label for every unknown path
    assert 'endpoint="/embed",status="499"' in text
    assert 'status="500"' not in text


def test_pooler_without_weights_is_refused_at_admission(tiny_model_dir: Path, tmp_path: Path) -> None:
    import json
    import shutil

    copy = Path(shutil.copytree(tiny_model_dir, tmp_path / "no-pooler"))
    manifest = json.loads((copy / "onnxbert.json").read_text(encoding="utf-8"))
    manifest["architecture"]["has_pooler"] = False  # as exported from a checkpoint saved without pooler weights
    manifest["outputs"] = [o for o in manifest["outputs"] if o["name"] != "pooler_output"]
    manifest["default_pooling"] = "cls"
    (copy / "onnxbert.json").write_text(json.dumps(manifest), encoding="utf-8")
    with server(copy) as (url, _):
        assert httpx.get(f"{url}/info").json()["poolings"] == ["cls", "mean", "max"]
        reply = httpx.post(f"{url}/embed", json={"inputs": "hello", "pooling": "pooler"})
        assert reply.status_code == 422 and "offers cls, mean, max" in reply.json()["error"]
        assert httpx.post(f"{url}/embed", json={"inputs": "hello", "pooling": "mean"}).status_code == 200


@pytest.mark.parametrize(
    ("flag", "env"), [(["--api-key", ""], {}), ([], {"ONNXBERT_API_KEY": " "}), (["--api-key", "clé"], {})]
)
def test_empty_or_non_ascii_api_key_is_a_start_up_error(
    tiny_model_dir: Path, flag: list[str], env: dict[str, str]
) -> None:
    command = [sys.executable, "-m", "onnxbert", "serve", str(tiny_model_dir), "--port", str(free_port()), *flag]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert done.returncode == 1
    assert "API key" in done.stderr


def test_max_wait_lets_an_idle_batcher_gather_concurrent_requests(tiny_model_dir: Path) -> None:
    texts = [f"request {i} about the sea" for i in range(8)]
    with server(tiny_model_dir, "--max-wait-ms", "300") as (url, _):

        async def fire() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=8)) as client:

                async def post(index: int) -> httpx.Response:
                    await asyncio.sleep(0.1 if index else 0)  # the first finds the batcher idle, alone
                    return await client.post("/embed", json={"inputs": texts[index]})

                return await asyncio.gather(*(post(i) for i in range(len(texts))))

        replies = asyncio.run(fire())
        metrics = httpx.get(f"{url}/metrics").text
    expected = Encoder(tiny_model_dir).embed(texts, normalize=True)
    for reply, want in zip(replies, expected, strict=True):
        assert reply.status_code == 200, reply.text
        np.testing.assert_allclose(reply.json()[0], want, atol=1e-5)
    calls = next(line for line in metrics.splitlines() if line.startswith("onnxbert_batch_texts_count"))
    assert float(calls.split()[-1]) == 1  # the first request waited 300 ms; the other 7, sent 100 ms later, joined it


def test_refill_keeps_closed_loop_clients_in_one_batch(tiny_model_dir: Path) -> None:
    """The real batcher and encoder, no HTTP: eight clients that each send their next request as soon as they have an
    answer (after 0, 10 or 20 ms) are all in every batch with refill on; with it off the early ones run alone."""
    from onnxbert.runtime import Pooling
    from onnxbert.serve import ServerSettings
    from onnxbert.serve.batcher import Batcher, Job
    from onnxbert.serve.metrics import Metrics

    encoder = Encoder(tiny_model_dir)

    async def clients(refill_gap_ms: float) -> tuple[float, float]:
        metrics = Metrics()
        batcher = Batcher(encoder, ServerSettings(refill_gap_ms=refill_gap_ms), metrics)
        batcher.start()

        async def client(i: int) -> None:
            for k in range(5):
                text = f"client {i} asks question {k}"
                job = Job(False, Pooling(encoder.default_pooling), encoder.tokenize([text]))
                batcher.submit(job)
                np.testing.assert_allclose(await job.future, encoder.embed([text]), atol=1e-5)  # its own row
                await asyncio.sleep(0.01 * (i % 3))

        await asyncio.gather(*(client(i) for i in range(8)))
        await batcher.stop()
        calls = metrics.registry.get_sample_value("onnxbert_batch_texts_count")
        texts = metrics.registry.get_sample_value("onnxbert_batch_texts_sum")
        assert calls is not None and texts == 40
        return calls, texts

    assert asyncio.run(clients(refill_gap_ms=30)) == (5, 40)  # every batch held all eight
    calls, _ = asyncio.run(clients(refill_gap_ms=0))
    assert calls > 5


def test_full_queue_answers_429_with_retry_after(minilm_dir: Path) -> None:
    with server(minilm_dir, "--max-queue", "2") as (url, _):

        async def fire() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=40)) as client:
                return await asyncio.gather(*(client.post("/embed", json={"inputs": [LONG, LONG]}) for _ in range(40)))

        replies = asyncio.run(fire())
        statuses = [r.status_code for r in replies]
        assert set(statuses) <= {200, 429} and 429 in statuses and 200 in statuses
        refused = next(r for r in replies if r.status_code == 429)
        assert int(refused.headers["Retry-After"]) >= 1 and refused.json()["error_type"] == "Overloaded"
        metrics = httpx.get(f"{url}/metrics").text
        tokenized = next(line for line in metrics.splitlines() if line.startswith("onnxbert_tokenize_seconds_count"))
        # refused before tokenizing: most 429s never reach the tokenizer (a few can, when the queue fills meanwhile)
        assert float(tokenized.split()[1]) < len(replies) - statuses.count(429) / 2


def test_requests_in_flight_are_bounded_before_their_bodies_are_read(tiny_model_dir: Path) -> None:
    with server(tiny_model_dir, "--max-concurrent-requests", "2", "--body-timeout", "20") as (url, _):
        host, port = url.removeprefix("http://").split(":")
        stalled = b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 50\r\n\r\n{"
        sockets = [socket.create_connection((host, int(port))) for _ in range(2)]
        for sock in sockets:
            sock.sendall(stalled)  # admitted, their bodies still arriving
        time.sleep(0.5)
        refused = httpx.post(f"{url}/embed", json={"inputs": "hello"}, timeout=10)
        assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
        assert refused.json() == {"error": "2 requests in flight (max_concurrent_requests)", "error_type": "Overloaded"}
        openai = httpx.post(f"{url}/v1/embeddings", json={"input": "hello"}, timeout=10)
        assert openai.status_code == 429 and openai.json()["error"]["type"] == "Overloaded"
        assert httpx.get(f"{url}/health", timeout=10).status_code == 200  # orchestrators still get an answer
        assert 'onnxbert_requests_total{endpoint="/embed",status="429"} 1.0' in httpx.get(f"{url}/metrics").text
        for sock in sockets:
            sock.close()  # gone: their places are free again
        deadline = time.monotonic() + 10
        while (answer := httpx.post(f"{url}/embed", json={"inputs": "hello"}, timeout=10)).status_code == 429:
            assert time.monotonic() < deadline, "places were not freed when the clients left"
            time.sleep(0.1)
        assert answer.status_code == 200 and len(answer.json()[0]) == 32
        assert httpx.get(f"{url}/info", timeout=10).json()["max_concurrent_requests"] == 2


def test_open_connections_are_bounded_before_their_requests_are_read(tiny_model_dir: Path) -> None:
    with server(tiny_model_dir, "--max-connections", "3") as (url, _):
        host, port = url.removeprefix("http://").split(":")
        sockets = [socket.create_connection((host, int(port))) for _ in range(3)]
        for sock in sockets:
            sock.sendall(b"POST /embed HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * 30_000)  # heads still arriving
        time.sleep(0.5)
        refused = httpx.get(f"{url}/health", timeout=10)
        assert refused.status_code == 503 and refused.headers["Retry-After"] == "1"
        assert refused.text == "over 3 open connections"
        for sock in sockets:
            sock.close()
        deadline = time.monotonic() + 10
        while (answer := httpx.get(f"{url}/info", timeout=10)).status_code == 503:
            assert time.monotonic() < deadline, "connections were not freed when the clients left"
            time.sleep(0.1)
        assert answer.status_code == 200 and answer.json()["max_connections"] == 3
        assert _refusals(url)["max_connections"] >= 1


def test_the_open_file_limit_is_raised_to_fit_max_connections_or_the_shortfall_said() -> None:
    resource = pytest.importorskip("resource")
    from onnxbert.serve.main import open_file_room

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 2048:
        pytest.skip(f"the hard open-file limit ({hard}) is too low to test with")
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (1024, hard))  # a common default soft limit
        assert open_file_room(1500) is None and resource.getrlimit(resource.RLIMIT_NOFILE)[0] == 1500 + 256
        if hard != resource.RLIM_INFINITY:
            warning = open_file_room(hard)  # more than the hard limit allows
            assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == hard
            assert warning is not None and f"under --max-connections {hard}" in warning
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_queue_is_bounded_by_tokens_too(tiny_model_dir: Path) -> None:
    from onnxbert.runtime import Encoder, Pooling
    from onnxbert.serve.batcher import Batcher, Job, QueueFullError
    from onnxbert.serve.metrics import Metrics
    from onnxbert.serve.settings import ServerSettings

    encoder = Encoder(tiny_model_dir)
    settings = ServerSettings(max_queue=1000, max_queue_tokens=300)

    async def fill() -> int:
        batcher = Batcher(encoder, settings, Metrics())  # not started: nothing leaves the queue
        tokens = encoder.tokenize(["hello world " * 40])  # 82 tokens
        queued = 0
        try:
            while queued < 100:
                batcher.submit(Job(False, Pooling(encoder.default_pooling), tokens))
                queued += 1
        except QueueFullError:
            return queued
        return -1  # never refused

    assert asyncio.run(fill()) == 3  # 3 x 82 = 246 tokens fit under 300; a fourth would make 328


def test_health_before_during_and_after_load(minilm_dir: Path) -> None:
    with server(minilm_dir, wait=False) as (url, _process):
        seen: list[int] = []
        deadline = time.monotonic() + 60
        while (not seen or seen[-1] != 200) and time.monotonic() < deadline:
            try:
                seen.append(httpx.get(f"{url}/health", timeout=1).status_code)
            except httpx.TransportError:
                time.sleep(0.01)
        assert seen and seen[-1] == 200 and set(seen) <= {200, 503}  # 503 while loading, never anything else

        async def load_and_probe() -> tuple[list[int], list[int]]:
            async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=64)) as client:
                work = [asyncio.ensure_future(client.post("/embed", json={"inputs": LONG})) for _ in range(48)]
                probes = []
                while not all(w.done() for w in work):
                    probes.append((await client.get("/health")).status_code)
                    await asyncio.sleep(0.02)
                return [(await w).status_code for w in work], probes

        statuses, probes = asyncio.run(load_and_probe())
        assert statuses == [200] * 48
        assert probes and set(probes) == {200}
        assert httpx.get(f"{url}/health").status_code == 200


def test_sigterm_drains_in_flight_requests_and_exits_zero(minilm_dir: Path) -> None:
    with server(minilm_dir) as (url, process):

        async def fire_then_terminate() -> list[httpx.Response]:
            async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=40)) as client:
                work = [asyncio.ensure_future(client.post("/embed", json={"inputs": [LONG] * 4})) for _ in range(30)]
                while True:  # every request admitted (tokenized at admission, then queued) before the signal
                    metrics = (await client.get("/metrics")).text
                    admitted = sum(
                        float(line.split()[-1])
                        for line in metrics.splitlines()
                        if line.startswith("onnxbert_tokenize_seconds_count")
                    )
                    if admitted >= 30:
                        break
                    await asyncio.sleep(0.01)
                os.kill(process.pid, signal.SIGTERM)
                return await asyncio.gather(*work)

        replies = asyncio.run(fire_then_terminate())
        assert [r.status_code for r in replies] == [200] * 30  # none lost
        assert process.wait(timeout=60) == 0
        assert "drained" in (process.stderr.read() if process.stderr else "")


def test_a_drain_that_times_out_says_so_and_exits_one(tiny_model_dir: Path) -> None:
    # An idle batcher waiting 5 s for company keeps the one request in flight past the 1 s drain.
    with server(tiny_model_dir, "--max-wait-ms", "5000", "--drain-timeout", "1") as (url, process):
        host, port = url.removeprefix("http://").split(":")
        body = b'{"inputs": "hello"}'
        head = b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 19\r\n\r\n"
        with socket.create_connection((host, int(port))) as sock:
            sock.sendall(head + body)
            time.sleep(0.5)  # admitted and waiting in the batcher
            process.send_signal(signal.SIGTERM)
            assert process.wait(timeout=20) == 1
        errors = process.stderr.read() if process.stderr else ""
        assert "did not finish within 1 s" in errors and "drained, exiting" not in errors


def test_disconnected_client_frees_its_place(minilm_dir: Path) -> None:
    with server(minilm_dir, "--max-queue", "8") as (url, _):

        async def scenario() -> tuple[int, float, int]:
            async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                busy = asyncio.ensure_future(client.post("/embed", json={"inputs": [LONG] * 64}))
                await asyncio.sleep(0.3)  # the worker is now running the 64 long texts
                async with httpx.AsyncClient(base_url=url, timeout=60) as leaving:
                    waiting = asyncio.ensure_future(leaving.post("/embed", json={"inputs": [LONG] * 8}))
                    await asyncio.sleep(0.2)  # queued: the queue is full
                    full = await client.post("/embed", json={"inputs": ["one more"]})
                    waiting.cancel()
                await asyncio.sleep(0.3)
                metrics = (await client.get("/metrics")).text
                queued = next(
                    float(line.split()[-1]) for line in metrics.splitlines() if line.startswith("onnxbert_queue_texts")
                )
                admitted = await client.post("/embed", json={"inputs": [LONG] * 8})
                await busy
                return full.status_code, queued, admitted.status_code

        full, queued, admitted = asyncio.run(scenario())
        assert full == 429  # the leaving client's 8 texts filled the queue
        assert queued == 0  # ... and its place was freed when it went away
        assert admitted == 200


def test_model_that_fails_to_load_exits_nonzero(tiny_model_dir: Path, tmp_path: Path) -> None:
    import shutil

    broken = Path(shutil.copytree(tiny_model_dir, tmp_path / "broken"))
    graph = broken / "model.onnx"
    graph.write_bytes(graph.read_bytes()[:1000])
    process = subprocess.run(
        [sys.executable, "-m", "onnxbert", "serve", str(broken), "--port", str(free_port()), "--log-level", "warning"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert process.returncode == 1
    assert "failed to load" in process.stderr and "truncated or replaced" in process.stderr


def _raw(url: str, data: bytes, *, wait: float = 10.0) -> tuple[bytes, float]:
    """Send raw bytes on a fresh connection; the server's reply until it closes, and the seconds it took."""
    host, port = url.removeprefix("http://").split(":")
    start = time.perf_counter()
    with socket.create_connection((host, int(port)), timeout=wait) as sock:
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):  # refused mid-send: the reply is readable
            sock.sendall(data)
        reply = b""
        while chunk := sock.recv(65536):
            reply += chunk
    return reply, time.perf_counter() - start


def _refusals(url: str) -> dict[str, float]:
    """onnxbert_http_refusals_total by reason, from /metrics."""
    lines = httpx.get(f"{url}/metrics", timeout=10).text.splitlines()
    found = [line.split() for line in lines if line.startswith("onnxbert_http_refusals_total{")]
    return collections.defaultdict(float, {name.split('"')[1]: float(value) for name, value in found})


@pytest.fixture(scope="module")
def strict_http_server(tiny_model_dir: Path) -> Iterator[str]:
    flags = ("--header-timeout", "0.5", "--body-timeout", "0.5", "--idle-timeout", "1", "--max-headers", "20")
    with server(tiny_model_dir, *flags, "--max-header-bytes", "4096") as (url, _):
        yield url


def test_oversized_or_overfull_request_heads_get_431_at_once(strict_http_server: str) -> None:
    huge = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 8_000_000 + b"\r\n\r\n"
    reply, seconds = _raw(strict_http_server, huge)
    assert reply.startswith(b"HTTP/1.1 431 ") and seconds < 2.0  # refused before the parser sees 8 MB
    many = b"GET /health HTTP/1.1\r\nHost: x\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(30)) + b"\r\n"
    assert _raw(strict_http_server, many)[0].startswith(b"HTTP/1.1 431 ")
    fine = b"GET /health HTTP/1.1\r\nHost: x\r\nX-Ok: " + b"a" * 3000 + b"\r\nConnection: close\r\n\r\n"
    assert _raw(strict_http_server, fine)[0].startswith(b"HTTP/1.1 200 ")
    counted = _refusals(strict_http_server)  # operators see them: the app never did
    assert counted["head_bytes"] == 1 and counted["header_count"] == 1


def test_slow_heads_and_bodies_time_out_with_408(strict_http_server: str) -> None:
    reply, seconds = _raw(strict_http_server, b"GET /health HTTP/1.1\r\nHost: x\r\n")  # never finishes its head
    assert reply.startswith(b"HTTP/1.1 408 ") and 0.4 < seconds < 3.0
    partial = b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 99\r\n\r\n{"
    reply, seconds = _raw(strict_http_server, partial)
    assert reply.startswith(b"HTTP/1.1 408 ") and 0.4 < seconds < 3.0
    reply, seconds = _raw(strict_http_server, b"")  # connects, says nothing
    assert reply.startswith(b"HTTP/1.1 408 ") and seconds < 3.0
    assert httpx.get(f"{strict_http_server}/health", timeout=10).status_code == 200  # the server is unharmed
    counted = _refusals(strict_http_server)
    assert counted["head_timeout"] >= 2 and counted["body_timeout"] >= 1


def test_sigterm_does_not_wait_for_requests_still_arriving(tiny_model_dir: Path) -> None:
    with server(tiny_model_dir) as (url, process):  # default deadlines: 10 s head, 30 s body
        host, port = url.removeprefix("http://").split(":")
        sockets = []
        for head in (b"GET /health HTTP/1.1\r\nHo", b"POST /embed HTTP/1.1\r\nHost: x\r\nContent-Length: 50\r\n\r\n{"):
            for _ in range(50):
                sock = socket.create_connection((host, int(port)))
                sock.sendall(head)
                sockets.append(sock)
        time.sleep(0.3)
        start = time.perf_counter()
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
        assert time.perf_counter() - start < 5.0  # not the 30 s drain timeout: none of them was admitted
        _, errors = process.communicate(timeout=10)
        assert "drained" in errors and "Traceback" not in errors
        for sock in sockets:
            sock.close()
