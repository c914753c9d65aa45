"""Corpus embedding in-process and on a real local Ray cluster (ray.init(num_cpus=2), loopback, usage stats off)."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")

from onnxbert.distributed import CorpusJob, embed_corpus, embed_dataset  # noqa: E402
from onnxbert.distributed.corpus import read_texts  # noqa: E402
from onnxbert.runtime import Encoder  # noqa: E402

WORDS = ["the", "man", "is", "playing", "a", "guitar", "dog", "runs", "hello", "world", "今天", "好", "cat", "sat"]


def texts(count: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [" ".join(rng.choice(WORDS, size=int(rng.integers(1, 40)))) for _ in range(count)]


def write_inputs(folder: Path, sizes: tuple[int, int, int]) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    a, b, c = texts(sizes[0], 1), texts(sizes[1], 2), texts(sizes[2], 3)
    first = folder / "a.jsonl"
    first.write_text("".join(json.dumps({"text": t}) + "\n" for t in a), encoding="utf-8")
    second = folder / "b.txt"
    second.write_text("\n".join(b) + "\n", encoding="utf-8")
    third = folder / "c.parquet"
    pq.write_table(pa.table({"text": c, "id": list(range(len(c)))}), third)
    return [first, second, third]


def read_output(path: Path) -> tuple[list[str], np.ndarray]:
    table = pq.read_table(path)
    return table.column("text").to_pylist(), np.asarray(table.column("embedding").to_pylist(), dtype=np.float32)


def test_parquet_inputs_hold_text_in_every_row(tmp_path: Path) -> None:
    """A null or a number is not embedded as its string ("None", "3"): the file, row and column are named."""
    for name, table, message in [
        ("null.parquet", pa.table({"text": ["a", None, "c"]}), "row 2 of column 'text' is null"),
        # read a few hundred rows at a time: a fault's row counts the batches before it
        ("late.parquet", pa.table({"text": ["a"] * 700 + [None]}), "row 701 of column 'text' is null"),
        ("numbers.parquet", pa.table({"text": [1, 2, 3]}), "column 'text' holds int64, not text"),
        ("other.parquet", pa.table({"body": ["a"]}), "has no column 'text'"),
    ]:
        pq.write_table(table, tmp_path / name)
        with pytest.raises(ValueError, match=message):
            read_texts(tmp_path / name, "text")
    pq.write_table(pa.table({"text": pa.array(["a", "b"], type=pa.large_string())}), tmp_path / "large.parquet")
    assert read_texts(tmp_path / "large.parquet", "text") == ["a", "b"]
    many = [f"text {i}" for i in range(1000)]
    pq.write_table(pa.table({"text": many}), tmp_path / "many.parquet")
    assert read_texts(tmp_path / "many.parquet", "text") == many


def test_embed_corpus_in_process(tiny_model_dir: Path, tmp_path: Path) -> None:
    inputs = write_inputs(tmp_path / "in", (30, 20, 25))
    (empty := tmp_path / "in" / "empty.txt").write_bytes(b"")
    job = CorpusJob(tiny_model_dir, normalize=True, chunk=8)  # a file streams through in chunks of 8 texts
    done = embed_corpus(job, [*inputs, empty], tmp_path / "out", progress=False)
    assert [p.name for p in done["written"]] == ["a.parquet", "b.parquet", "c.parquet", "empty.parquet"]
    encoder = Encoder(tiny_model_dir)
    for source, seed, count in zip(inputs, (1, 2, 3), (30, 20, 25), strict=True):
        got_texts, vectors = read_output(tmp_path / "out" / f"{source.stem}.parquet")
        assert got_texts == texts(count, seed)
        np.testing.assert_allclose(vectors, encoder.embed(got_texts, normalize=True), atol=1e-6)
        assert pq.ParquetFile(tmp_path / "out" / f"{source.stem}.parquet").num_row_groups == -(-count // 8)
    assert pq.read_table(tmp_path / "out" / "empty.parquet").num_rows == 0
    again = embed_corpus(job, inputs, tmp_path / "out", progress=False)
    assert again["written"] == [] and len(again["skipped"]) == 3
    bad = tmp_path / "in" / "late.jsonl"  # a fault on the last line is found before anything is embedded
    bad.write_text('{"text": "fine"}\n' * 20 + "{broken\n", encoding="utf-8")
    with pytest.raises(ValueError, match=r"late\.jsonl:21: not a JSON record"):
        embed_corpus(job, [bad], tmp_path / "out", progress=False)
    broken = Path(shutil.copytree(tiny_model_dir, tmp_path / "broken-model"))
    (broken / "model.onnx").unlink()  # the Encoder cannot load: a fault found first never gets that far
    with pytest.raises(ValueError, match=r"late\.jsonl:21: not a JSON record"):
        embed_corpus(CorpusJob(broken), [bad], tmp_path / "out", progress=False)
    assert not list((tmp_path / "out").glob("*late*"))  # neither an output nor a scratch file


def test_an_output_from_other_text_a_model_or_options_is_refused_not_skipped(
    tiny_model_dir: Path, tmp_path: Path
) -> None:
    source = write_inputs(tmp_path / "in", (5, 4, 3))[1]  # b.txt
    job, out = CorpusJob(tiny_model_dir), tmp_path / "out"
    embed_corpus(job, [source], out, progress=False)
    written = (out / "b.parquet").read_bytes()
    copy = Path(shutil.copy(source, tmp_path / "b.txt"))  # the same content elsewhere: the same source
    assert embed_corpus(job, [copy], out, progress=False)["skipped"] == [out / "b.parquet"]
    other_model = Path(shutil.copytree(tiny_model_dir, tmp_path / "other-model"))
    manifest = other_model / "onnxbert.json"
    manifest.write_text(manifest.read_text(encoding="utf-8") + "\n", encoding="utf-8")  # loads the same, reads other
    edited = tmp_path / "edited" / "b.txt"
    edited.parent.mkdir()
    edited.write_text(source.read_text(encoding="utf-8") + "one more line\n", encoding="utf-8")
    for other_job, files, what in [
        (job, [edited], r"with a different content of b\.txt: remove it to embed .*b\.txt again"),
        (CorpusJob(other_model), [source], "with a different model directory:"),
        (CorpusJob(tiny_model_dir, normalize=True), [source], r"different normalize \(False; this run True\)"),
        (CorpusJob(tiny_model_dir, pooling="cls"), [source], r"different pooling \(None; this run 'cls'\)"),
        (job, [write_inputs(tmp_path / "first", (2, 2, 2))[0], edited], "content of b.txt"),  # before a.jsonl's work
    ]:
        with pytest.raises(ValueError, match=what):
            embed_corpus(other_job, files, out, progress=False)
        assert (out / "b.parquet").read_bytes() == written and not (out / "a.parquet").exists()
    pq.write_table(pa.table({"text": ["x"]}), out / "c.parquet")  # a file this command did not write
    with pytest.raises(ValueError, match="holds no record of what it was embedded from"):
        embed_corpus(job, [tmp_path / "in" / "c.parquet"], out, progress=False)


def test_outputs_are_ordinary_files_under_the_umask(tiny_model_dir: Path, tmp_path: Path) -> None:
    inputs = write_inputs(tmp_path / "in", (3, 2, 2))
    previous = os.umask(0o022)
    try:
        embed_corpus(CorpusJob(tiny_model_dir), inputs[:1], tmp_path / "out", progress=False)
    finally:
        os.umask(previous)
    assert (tmp_path / "out" / "a.parquet").stat().st_mode & 0o777 == 0o644  # not mkstemp's private 0600


def test_killed_run_resumes_and_does_only_the_rest(tiny_model_dir: Path, tmp_path: Path) -> None:
    inputs = write_inputs(tmp_path / "in", (50, 60_000, 40))  # the second file is slow enough to kill during
    out = tmp_path / "out"
    command = [sys.executable, "-m", "onnxbert", "embed-corpus", str(tiny_model_dir), *map(str, inputs), "-o", str(out)]
    process = subprocess.Popen(command, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not (out / "a.parquet").exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (out / "a.parquet").exists() and not (out / "b.parquet").exists()
    first_written = os.stat(out / "a.parquet").st_mtime_ns
    resumed = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "a.jsonl: done already, skipped" in resumed.stderr
    assert os.stat(out / "a.parquet").st_mtime_ns == first_written  # not redone
    assert sorted(p.name for p in out.iterdir()) == ["a.parquet", "b.parquet", "c.parquet"]  # no temp files left
    assert len(read_output(out / "b.parquet")[0]) == 60_000


API_KEY = "test-key-0123"
PROXY_LIMIT = 3_000_000  # above the replicas' 2 MB, so which of the two answered a 413 shows in its message


@pytest.fixture(scope="module")
def local_ray() -> Iterator[None]:
    """A local Ray; its Serve proxies load onnxbert's body limit (the environment reaches them through the raylet)."""
    ray = pytest.importorskip("ray")
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    os.environ["RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"] = "onnxbert.distributed.ray_serve:proxy_middlewares"
    os.environ["ONNXBERT_PROXY_PAYLOAD_LIMIT"] = str(PROXY_LIMIT)
    ray.init(num_cpus=2, include_dashboard=False, configure_logging=False, _node_ip_address="127.0.0.1")
    try:
        yield
    finally:
        ray.shutdown()


@pytest.mark.slow
def test_ray_data_map_batches_matches_encoder_in_order(local_ray: None, minilm_dir: Path) -> None:
    import ray.data

    sentences = texts(2000, 9)
    ds = ray.data.from_items([{"text": t, "row": i} for i, t in enumerate(sentences)])
    out = embed_dataset(ds, minilm_dir, actors=2, cpus_per_actor=1, batch_size=128, normalize=True).take_all()
    assert [row["row"] for row in out] == list(range(2000))
    vectors = np.stack([row["embedding"] for row in out])
    np.testing.assert_allclose(vectors, Encoder(minilm_dir).embed(sentences, normalize=True), atol=1e-5)


@pytest.mark.slow
def test_embed_corpus_on_ray_writes_what_in_process_writes(
    local_ray: None, tiny_model_dir: Path, tmp_path: Path
) -> None:
    inputs = write_inputs(tmp_path / "in", (30, 20, 25))
    embed_corpus(CorpusJob(tiny_model_dir), inputs, tmp_path / "local", progress=False)
    # one Ray Dataset per 16 texts: chunks come back in order
    embed_corpus(CorpusJob(tiny_model_dir, ray_chunk=16), inputs, tmp_path / "ray", use_ray=True, progress=False)
    for name in ("a.parquet", "b.parquet", "c.parquet"):
        local_texts, local = read_output(tmp_path / "local" / name)
        ray_texts, on_ray = read_output(tmp_path / "ray" / name)
        assert ray_texts == local_texts
        np.testing.assert_allclose(on_ray, local, atol=1e-5)


@pytest.mark.slow
def test_embed_corpus_on_ray_prints_only_its_own_lines(tiny_model_dir: Path, tmp_path: Path) -> None:
    pytest.importorskip("ray")
    inputs = write_inputs(tmp_path / "in", (30, 20, 25))
    command = [sys.executable, "-m", "onnxbert", "embed-corpus", str(tiny_model_dir), *map(str, inputs)]
    env = {k: v for k, v in os.environ.items() if k != "RAY_BACKEND_LOG_LEVEL"}
    done = subprocess.run(
        [*command, "--output", str(tmp_path / "out"), "--ray"], capture_output=True, text=True, env=env
    )
    assert done.returncode == 0, done.stderr
    noise = [line for line in done.stderr.splitlines() if not line.startswith("[") or " E " in line or "INFO" in line]
    assert noise == [], noise  # Ray's INFO lines, progress bars and "Failed to kill actor" errors stay out
    ours = [line for line in done.stderr.splitlines() if "texts ->" in line]
    assert len(ours) == 3


def _proxy_rss_bytes() -> int:
    """The resident memory of the (one) Ray Serve proxy actor's process."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if b"ProxyActor" in cmdline.read_bytes():
                status = (cmdline.parent / "status").read_text()
                return int(next(line for line in status.splitlines() if line.startswith("VmRSS")).split()[1]) * 1024
        except (OSError, StopIteration):
            continue
    raise AssertionError("no Ray Serve proxy process found")


def _chunked_head(port: int) -> bytes:
    return (
        f"POST /v1/embeddings HTTP/1.1\r\nhost: 127.0.0.1:{port}\r\ncontent-type: application/json\r\n"
        f"authorization: Bearer {API_KEY}\r\ntransfer-encoding: chunked\r\n\r\n"
    ).encode()


def _read_reply(connection: Any) -> bytes:
    """One HTTP response with a content-length, read whole (or what came before the connection ended)."""
    reply = b""
    with contextlib.suppress(ConnectionResetError):
        while chunk := connection.recv(65536):
            reply += chunk
            head, _, body = reply.partition(b"\r\n\r\n")
            fields = dict(line.split(b":", 1) for line in head.lower().split(b"\r\n")[1:] if b":" in line)
            if b"content-length" in fields and len(body) >= int(fields[b"content-length"]):
                break
    return reply


@pytest.mark.slow
def test_ray_serve_round_trip(local_ray: None, minilm_dir: Path) -> None:
    import socket
    import threading

    import httpx
    from ray import serve

    from onnxbert.distributed.ray_serve import EmbeddingDeployment, embeddings_app

    with __import__("socket").socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    try:
        with pytest.raises(ValueError, match="empty"):
            embeddings_app(minilm_dir, api_key=" ")
        with pytest.raises(ValueError, match="max_client_batch=0 must be a positive int"):
            embeddings_app(minilm_dir, max_inputs=0)
        app = embeddings_app(minilm_dir, threads=1, model_name="minilm", api_key=API_KEY, max_inputs=8)
        serve.run(app, route_prefix="/v1/embeddings")
        url = f"http://127.0.0.1:{port}/v1/embeddings"
        for offered in ({}, {"authorization": f"Bearer {API_KEY}x"}, {"authorization": API_KEY}):
            denied = httpx.post(url, json={"input": "a"}, headers=offered, timeout=60)
            assert denied.status_code == 401 and denied.json()["error"]["type"] == "Unauthorized"
        post = functools.partial(httpx.post, headers={"authorization": f"Bearer {API_KEY}"}, timeout=60)
        sentences = ["今天天气真好啊", "A man is playing a guitar."]
        reply = post(url, json={"input": sentences})
        assert reply.status_code == 200, reply.text
        body = reply.json()
        assert body["model"] == "minilm" and [d["index"] for d in body["data"]] == [0, 1]
        expected = Encoder(minilm_dir).embed(sentences, normalize=True)
        np.testing.assert_allclose([d["embedding"] for d in body["data"]], expected, atol=1e-5)
        packed = post(url, json={"input": sentences[0], "encoding_format": "base64"}).json()
        decoded = np.frombuffer(__import__("base64").b64decode(packed["data"][0]["embedding"]), dtype="<f4")
        np.testing.assert_allclose(decoded, expected[0], atol=1e-5)
        assert packed["usage"]["prompt_tokens"] == len(Encoder(minilm_dir).tokenize(sentences[0]).ids[0])
        empty = post(url, json={"input": []})
        assert empty.status_code == 400 and "empty" in empty.json()["error"]["message"]
        # the limits of `onnxbert serve`: body bytes (declared, or counted as a chunked body arrives), inputs, text
        huge = b'{"input": "' + b"x" * 2_100_000 + b'"}'
        for content in (huge, iter([huge[:1_000_000], huge[1_000_000:]])):  # an iterator goes out chunked
            refused = post(url, content=content)
            assert refused.status_code == 413 and refused.json()["error"]["type"] == "PayloadTooLarge"
        cut = post(url, json={"input": "a", "dimensions": 8})  # not silently a full-width vector
        assert cut.status_code == 422 and "dimensions=8: this model returns 384" in cut.json()["error"]["message"]
        assert post(url, json={"input": "a", "dimensions": 384}).status_code == 200
        many = post(url, json={"input": ["a"] * 9})  # the app's limit, not the server's default 64
        assert many.status_code == 422 and "max_client_batch=8" in many.json()["error"]["message"]
        long = post(url, json={"input": "x " * 60_000})
        assert long.status_code == 422 and "max_text_chars=100000" in long.json()["error"]["message"]
        assert (EmbeddingDeployment.max_ongoing_requests, EmbeddingDeployment.max_queued_requests) == (64, 512)
        # the proxy's own limit: a declared size past it never reaches a replica
        declared = post(url, content=b"x" * (PROXY_LIMIT + 1))
        assert declared.status_code == 413 and f"{PROXY_LIMIT}-byte" in declared.json()["error"]["message"]
        # with every place on the replica held by a trickling body, a fast 200 MB chunked body waits for a replica:
        # Ray's proxy alone would read it all into memory; its body limit answers instead
        places = EmbeddingDeployment.max_ongoing_requests
        holders = [socket.create_connection(("127.0.0.1", port)) for _ in range(places)]
        for holder in holders:
            holder.sendall(_chunked_head(port) + b"1\r\n[\r\n")
        time.sleep(3)
        before = _proxy_rss_bytes()
        flood = socket.create_connection(("127.0.0.1", port))
        flood.settimeout(30)

        def send_flood() -> None:
            chunk = b"100000\r\n" + b"x" * 0x100000 + b"\r\n"
            with contextlib.suppress(OSError):  # the proxy closes the connection once it has answered
                flood.sendall(_chunked_head(port))
                for _ in range(200):
                    flood.sendall(chunk)

        sender = threading.Thread(target=send_flood)
        sender.start()
        reply = _read_reply(flood)
        sender.join()
        grown = _proxy_rss_bytes() - before
        assert reply.startswith(b"HTTP/1.1 413") and f"{PROXY_LIMIT}-byte".encode() in reply, reply
        assert grown < 64 << 20, f"the proxy grew {grown >> 20} MB"
        # and past max_queued_requests waiting for a place, Ray answers 503 at once
        for _ in range(EmbeddingDeployment.max_queued_requests):
            holders.append(socket.create_connection(("127.0.0.1", port)))
            holders[-1].sendall(_chunked_head(port) + b"1\r\n[\r\n")
        time.sleep(3)
        assert post(url, json={"input": "a"}, timeout=10).status_code == 503
        for connection in [*holders, flood]:
            connection.close()
        for _ in range(40):  # the places free as Ray sees the clients gone
            if (status := post(url, json={"input": "a"}).status_code) != 503:
                break
            time.sleep(0.5)
        assert status == 200
    finally:
        serve.shutdown()


def test_encoder_actor_token_level_and_pooled(tiny_model_dir: Path) -> None:
    from onnxbert.distributed import EncoderActor

    batch = {"text": np.array(["hello world", "今天天气真好啊"], dtype=object), "id": np.array([7, 8])}
    tokens = EncoderActor(tiny_model_dir, token_level=True, output_column="tokens")(batch)
    expected = Encoder(tiny_model_dir).encode(["hello world", "今天天气真好啊"]).last_hidden_state
    assert tokens["id"].tolist() == [7, 8] and [t.shape for t in tokens["tokens"]] == [(4, 32), (9, 32)]
    for got, want in zip(tokens["tokens"], expected, strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)
    pooled = EncoderActor(tiny_model_dir, pooling="mean", normalize=True)(batch)["embedding"]
    np.testing.assert_allclose(
        pooled, Encoder(tiny_model_dir).embed(list(batch["text"]), pooling="mean", normalize=True), atol=1e-6
    )


@pytest.mark.parametrize(
    ("column", "match"),
    [
        (np.array(["hello", None], dtype=object), "holds None, not a text"),  # a null row, not embedded as "None"
        (np.array([3, 4]), "holds 3, not a text"),
        (np.array([b"hello"], dtype=object), "holds b'hello', not a text"),
    ],
)
def test_encoder_actor_refuses_a_row_without_text(tiny_model_dir: Path, column: np.ndarray, match: str) -> None:
    from onnxbert.distributed import EncoderActor

    with pytest.raises(ValueError, match=match):
        EncoderActor(tiny_model_dir)({"text": column})
    with pytest.raises(ValueError, match=r"no column 'body' \(it has \['text'\]\); pass column="):
        EncoderActor(tiny_model_dir, column="body")({"text": column})
    strings = EncoderActor(tiny_model_dir)({"text": np.array(["hello", "world"])})  # a fixed-width str array
    assert strings["embedding"].shape == (2, 32)


def _drive_proxy_limit(app: Any, path: str, chunks: list[bytes], declared: int | None = None) -> list[dict[str, Any]]:
    """Run one request through ProxyBodyLimit (limit 1,000 bytes) in front of `app`; the messages sent back."""
    from onnxbert.distributed.ray_serve import ProxyBodyLimit

    arriving = [{"type": "http.request", "body": c, "more_body": i < len(chunks) - 1} for i, c in enumerate(chunks)]
    sent: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return arriving.pop(0) if arriving else {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    headers = [] if declared is None else [(b"content-length", str(declared).encode())]
    scope = {"type": "http", "method": "POST", "path": path, "headers": headers}
    asyncio.run(ProxyBodyLimit(app, limit=1000)(scope, receive, send))
    return sent


def test_proxy_body_limit_answers_413_once_and_hides_the_rest_from_the_app() -> None:
    pytest.importorskip("ray")
    seen: list[str] = []

    async def reader(scope: Any, receive: Any, send: Any) -> None:  # reads the whole body, then answers its size
        size = 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                seen.append("disconnect")
                break
            size += len(message["body"])
            if not message["more_body"]:
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": str(size).encode()})

    def statuses(sent: list[dict[str, Any]]) -> list[int]:
        return [m["status"] for m in sent if m["type"] == "http.response.start"]

    fits = _drive_proxy_limit(reader, "/v1/embeddings", [b"x" * 400] * 2)
    assert statuses(fits) == [200] and fits[-1]["body"] == b"800" and seen == []
    over = _drive_proxy_limit(reader, "/v1/embeddings", [b"x" * 400] * 3)
    assert statuses(over) == [413] and seen == ["disconnect"]  # the app's own answer to the disconnect is dropped
    error = json.loads(b"".join(m.get("body", b"") for m in over))["error"]
    assert error["type"] == "PayloadTooLarge" and "1000-byte" in error["message"]
    tei_shape = _drive_proxy_limit(reader, "/embed", [b"x" * 1001])
    assert json.loads(tei_shape[-1]["body"])["error_type"] == "PayloadTooLarge"
    seen.clear()
    assert statuses(_drive_proxy_limit(reader, "/v1/embeddings", [b"x"], declared=1001)) == [413] and seen == []

    async def answers_first(scope: Any, receive: Any, send: Any) -> None:  # e.g. a 401 before reading the body
        await send({"type": "http.response.start", "status": 401, "headers": []})
        while (await receive())["type"] != "http.disconnect":
            pass
        await send({"type": "http.response.body", "body": b"no"})

    early = _drive_proxy_limit(answers_first, "/v1/embeddings", [b"x" * 600] * 3)
    assert statuses(early) == [401] and early[-1]["body"] == b"no"  # one answer, the app's, finished
