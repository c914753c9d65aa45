"""`onnxbert embed` and `onnxbert info` through the real console entry point."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import TextIO

import numpy as np
import pytest

from onnxbert.cli import main
from onnxbert.runtime import Encoder
from onnxbert.runtime.cli import SUMMARY_MATRIX
from onnxbert.runtime.textfile import read_texts


def test_embed_texts_to_stdout(tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["embed", str(tiny_model_dir), "hello world", "今天天气真好啊", "--pooling", "mean"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    expected = Encoder(tiny_model_dir).embed(["hello world", "今天天气真好啊"], pooling="mean")
    assert [row["index"] for row in rows] == [0, 1]
    np.testing.assert_allclose([row["embedding"] for row in rows], expected, atol=1e-6)


def test_texts_may_follow_options(tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["embed", str(tiny_model_dir), "--token-level", "hello", "今天"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [row["index"] for row in rows] == [0, 1]
    assert [len(row["last_hidden_state"]) for row in rows] == [3, 4]  # [CLS] hello [SEP]; [CLS] 今 天 [SEP]


def test_embed_lines_file_to_npy(tiny_model_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "texts.txt"
    source.write_text("hello\nthe dog runs\n\n今天\n", encoding="utf-8")
    target = tmp_path / "out.npy"
    assert main(["embed", str(tiny_model_dir), "--input", str(source), "--output", str(target), "--normalize"]) == 0
    vectors = np.load(target)
    assert vectors.shape == (4, 32)  # the empty line is a text too: line i is row i
    expected = Encoder(tiny_model_dir).embed(["hello", "the dog runs", "", "今天"], normalize=True)
    np.testing.assert_allclose(vectors, expected, atol=1e-6)
    bulk = tmp_path / "bulk.npy"  # one-thread runs, two at once: the same vectors
    assert (
        main(
            [
                "embed",
                str(tiny_model_dir),
                "-i",
                str(source),
                "-o",
                str(bulk),
                "--normalize",
                "--threads",
                "1",
                "--workers",
                "2",
            ]
        )
        == 0
    )
    np.testing.assert_allclose(np.load(bulk), expected, atol=1e-6)
    assert main(["embed", str(tiny_model_dir), "x", "--workers", "0"]) == 1


def test_a_file_larger_than_a_chunk_streams_to_npy_and_a_late_fault_writes_nothing(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    lines = [f"text number {i} " + "word " * (i % 7) for i in range(5000)]  # 2048 texts a chunk: three chunks
    source = tmp_path / "many.txt"
    source.write_text("\n".join(lines) + "\n", encoding="utf-8")
    target = tmp_path / "many.npy"
    assert main(["embed", str(tiny_model_dir), "-i", str(source), "-o", str(target)]) == 0
    expected = Encoder(tiny_model_dir).embed(lines)
    np.testing.assert_allclose(np.load(target), expected, atol=1e-6)
    np.testing.assert_allclose(np.load(target, mmap_mode="r")[4999], expected[4999], atol=1e-6)
    before = target.read_bytes()
    bad = tmp_path / "late.jsonl"  # the fault is on the last line: found before anything is embedded or written
    bad.write_text("".join(json.dumps({"text": t}) + "\n" for t in lines) + "{not json\n", encoding="utf-8")
    assert main(["embed", str(tiny_model_dir), "-i", str(bad), "-o", str(target)]) == 1
    assert "late.jsonl:5001: not a JSON record" in capsys.readouterr().err
    # before any work: the file is read through before the model is even loaded
    assert main(["embed", str(tmp_path / "no-model"), "-i", str(bad), "-o", str(target)]) == 1
    assert "late.jsonl:5001: not a JSON record" in capsys.readouterr().err
    assert target.read_bytes() == before  # the earlier output is untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["late.jsonl", "many.npy", "many.txt"]  # no scratch left
    assert main(["embed", str(tiny_model_dir), "-i", str(tmp_path / "absent.txt")]) == 1
    assert "absent.txt: no such file" in capsys.readouterr().err


def _writer_of(fifo: Path, reader: subprocess.Popen[bytes]) -> TextIO:
    """The FIFO's writing end, once `reader` has opened it to read (an error, not a hang, if it never does)."""
    deadline = time.monotonic() + 120
    while True:
        try:
            descriptor = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)  # ENXIO while no process reads it
            break
        except OSError as error:
            if error.errno != errno.ENXIO or reader.poll() is not None or time.monotonic() > deadline:
                raise
            time.sleep(0.01)
    os.set_blocking(descriptor, True)
    return open(descriptor, "w", encoding="utf-8")


def test_a_line_has_a_bound(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A text over MAX_TEXT_BYTES (one line, JSONL record or Parquet value) is refused, never read into memory whole:
    a file whose structure went wrong (a book on one line) stops with its line, not with the machine's memory."""
    from onnxbert.runtime import textfile

    monkeypatch.setattr(textfile, "MAX_TEXT_BYTES", 100)
    (tmp_path / "edge.txt").write_bytes(b"a" * 100 + b"\r\n" + b"b" * 100)  # 100 bytes each: the limit
    assert main(["embed", str(tiny_model_dir), "-i", str(tmp_path / "edge.txt")]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
    (tmp_path / "book.txt").write_bytes(b"short\n" + b"x" * 10_000 + b"\n")
    assert main(["embed", str(tiny_model_dir), "-i", str(tmp_path / "book.txt")]) == 1
    assert "book.txt:2: longer than 100 bytes" in capsys.readouterr().err


def test_a_pipe_is_embedded_as_it_arrives(tiny_model_dir: Path, tmp_path: Path) -> None:
    """The first chunk's vectors come out while the writer still holds the rest back: nothing waits for the whole
    input (the old reader read it all first, and this test would time out)."""
    fifo = tmp_path / "texts.fifo"
    os.mkfifo(fifo)
    lines = [f"line {i} of a stream" for i in range(2048 + 100)]
    command = [sys.executable, "-m", "onnxbert", "embed", str(tiny_model_dir), "-i", str(fifo)]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    rows: list[dict[str, object]] = []
    first_row = threading.Event()

    def read_rows() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            rows.append(json.loads(line))
            first_row.set()

    reader = threading.Thread(target=read_rows)
    reader.start()
    try:
        with _writer_of(fifo, process) as writer:
            writer.write("".join(line + "\n" for line in lines[:2048]))
            writer.flush()
            assert first_row.wait(120), "no vector came out before the input ended"
            writer.write("".join(line + "\n" for line in lines[2048:]))
        process.wait(timeout=120)
    finally:
        process.kill()
        reader.join()
    assert process.stderr is not None
    assert process.returncode == 0, process.stderr.read().decode()
    assert [row["index"] for row in rows] == list(range(len(lines)))
    np.testing.assert_allclose([row["embedding"] for row in rows], Encoder(tiny_model_dir).embed(lines), atol=1e-6)
    # a pipe into a .npy: its shape is known only at the end, and written then
    target = tmp_path / "piped.npy"
    feeder = threading.Thread(target=lambda: fifo.write_text("a\nb c\n", encoding="utf-8"))
    feeder.start()
    assert main(["embed", str(tiny_model_dir), "-i", str(fifo), "-o", str(target)]) == 0
    feeder.join()
    np.testing.assert_allclose(np.load(target), Encoder(tiny_model_dir).embed(["a", "b c"]), atol=1e-6)


def test_a_fault_in_a_later_chunk_names_the_text_by_its_place_in_the_input(
    tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Texts go to the Encoder 2,048 at a time; a text it refuses is named by its index in the file, not the chunk."""
    model = Path(shutil.copytree(tiny_model_dir, tmp_path / "model"))
    tokenizer = json.loads((model / "tokenizer.json").read_text(encoding="utf-8"))
    tokenizer["post_processor"] = None  # no [CLS] [SEP]: an empty text has no tokens at all
    (model / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    manifest = json.loads((model / "onnxbert.json").read_text(encoding="utf-8"))
    manifest["tokenizer"]["sha256"] = hashlib.sha256((model / "tokenizer.json").read_bytes()).hexdigest()
    (model / "onnxbert.json").write_text(json.dumps(manifest), encoding="utf-8")
    source = tmp_path / "texts.txt"
    source.write_text("word\n" * 2050 + "\n" + "word\n", encoding="utf-8")  # texts[2050] is the empty line
    assert main(["embed", str(model), "-i", str(source), "-o", str(tmp_path / "out.npy")]) == 1
    assert "texts[2050] has no tokens" in capsys.readouterr().err
    assert not (tmp_path / "out.npy").exists()


def test_summary_of_many_texts_leaves_out_the_cosine_matrix(
    tiny_model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    words = [f"word{i}" for i in range(SUMMARY_MATRIX + 1)]
    assert main(["embed", str(tiny_model_dir), *words, "--summary"]) == 0
    out = capsys.readouterr().out
    assert "cosine similarity" not in out and f"no cosine matrix for {SUMMARY_MATRIX + 1} texts" in out
    assert f"[{SUMMARY_MATRIX}]" in out  # every text still has its line
    assert main(["embed", str(tiny_model_dir), *words[:SUMMARY_MATRIX], "--summary"]) == 0
    assert "cosine similarity" in capsys.readouterr().out


def test_embed_jsonl_field_token_level(tiny_model_dir: Path, tmp_path: Path) -> None:
    source = tmp_path / "docs.jsonl"
    source.write_text('{"body": "hello world"}\n{"body": "the cat sat"}\n', encoding="utf-8")
    target = tmp_path / "tokens.jsonl"
    code = main(
        [
            "embed",
            str(tiny_model_dir),
            "-i",
            str(source),
            "--field",
            "body",
            "-o",
            str(target),
            "--token-level",
        ]
    )
    assert code == 0
    rows = [json.loads(line) for line in target.read_text(encoding="utf-8").splitlines()]
    assert [len(r["last_hidden_state"]) for r in rows] == [4, 5]
    assert rows[0]["input_ids"][0] == 2 and rows[0]["truncated"] is False


def test_embed_parquet_column(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """`embed --input` reads Parquet as embed-corpus does (one reader): the column's rows in order, faults named."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    source = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"id": [1, 2], "body": ["hello world", "今天"]}), source)
    target = tmp_path / "out.npy"
    assert main(["embed", str(tiny_model_dir), "-i", str(source), "--field", "body", "-o", str(target)]) == 0
    np.testing.assert_allclose(np.load(target), Encoder(tiny_model_dir).embed(["hello world", "今天"]), atol=1e-6)
    assert main(["embed", str(tiny_model_dir), "-i", str(source)]) == 1
    assert "has no column 'text'" in (err := capsys.readouterr().err) and "pass --field" in err
    assert main(["embed", str(tiny_model_dir), "-i", str(source), "--field", "id"]) == 1
    assert "column 'id' holds int64, not text" in capsys.readouterr().err
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    assert main(["embed", str(tiny_model_dir), "-i", str(tmp_path / "broken.parquet")]) == 1
    assert "broken.parquet is not a readable Parquet file" in capsys.readouterr().err


def test_embed_errors_exit_nonzero(tiny_model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["embed", str(tiny_model_dir)]) == 1
    assert "nothing to embed" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"text": 3}\n', encoding="utf-8")
    assert main(["embed", str(tiny_model_dir), "-i", str(bad)]) == 1
    assert "bad.jsonl:1" in capsys.readouterr().err
    # a line that is not JSON, one nested deeper than the parser reads, and bytes that are not UTF-8: file and line
    for name, content in [("broken.jsonl", b'{"text": "ok"}\n{"text": \n'), ("deep.jsonl", b"[" * 100_000 + b"\n")]:
        (tmp_path / name).write_bytes(content)
        assert main(["embed", str(tiny_model_dir), "-i", str(tmp_path / name)]) == 1
        assert f"{name}:{2 if name == 'broken.jsonl' else 1}: not a JSON record" in capsys.readouterr().err
    (tmp_path / "latin1.txt").write_bytes("ok\ncafé\n".encode("latin-1"))
    assert main(["embed", str(tiny_model_dir), "-i", str(tmp_path / "latin1.txt")]) == 1
    assert "latin1.txt:2: not UTF-8" in capsys.readouterr().err
    (tmp_path / "bom.txt").write_bytes("\ufeffcafé\r\nthé\n".encode())
    assert read_texts(tmp_path / "bom.txt", "text") == ["café", "thé"]  # the byte-order mark is not text
    (tmp_path / "mixed.jsonl").write_text('"a JSON string"\n{"text": "an object"}\n', encoding="utf-8")
    assert read_texts(tmp_path / "mixed.jsonl") == ["a JSON string", "an object"]  # as export's --int8-text reads them
    assert main(["embed", str(tmp_path / "missing"), "x"]) == 1
    assert main(["embed", str(tiny_model_dir), "x", "-o", str(tmp_path / "x.npy"), "--token-level"]) == 1


def test_console_script_info_and_summary(tiny_model_dir: Path) -> None:
    info = subprocess.run(
        [sys.executable, "-m", "onnxbert", "info", str(tiny_model_dir), "--json"],
        capture_output=True,
        text=True,
    )
    assert info.returncode == 0, info.stderr
    assert json.loads(info.stdout)["format"] == "onnxbert"
    summary = subprocess.run(
        [sys.executable, "-m", "onnxbert", "embed", str(tiny_model_dir), "hello", "dog", "--summary"],
        capture_output=True,
        text=True,
    )
    assert summary.returncode == 0, summary.stderr
    assert "cosine similarity" in summary.stdout and "1.000" in summary.stdout


@pytest.mark.skipif(not Path("/proc/self/status").is_file(), reason="Linux reports the umask in /proc")
def test_an_output_takes_the_umask_without_setting_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from onnxbert.runtime import textfile

    def process_wide(mask: int) -> int:  # another thread's file made meanwhile would get this mask
        raise AssertionError(f"os.umask({mask:o}) called while writing an output")

    previous = os.umask(0o027)
    try:
        monkeypatch.setattr(textfile.os, "umask", process_wide)
        with textfile.written_whole(tmp_path / "out.npy") as scratch:
            scratch.write_bytes(b"x")
    finally:
        monkeypatch.undo()
        os.umask(previous)
    assert (tmp_path / "out.npy").stat().st_mode & 0o777 == 0o640


def test_chunks_close_at_a_count_or_a_number_of_characters() -> None:
    """A file of long lines is not held 2,048 lines at a time: a chunk also closes once it holds CHUNK_CHARS."""
    from onnxbert.runtime.textfile import CHUNK_CHARS, text_chunks

    sizes = [len(chunk) for chunk in text_chunks((f"t{i}" for i in range(10)), 4)]
    assert sizes == [4, 4, 2]
    long = ["x" * 400] * 10
    assert [len(chunk) for chunk in text_chunks(long, 4, chars=1000)] == [3, 3, 3, 1]
    assert [len(chunk) for chunk in text_chunks(["x" * 5000, "y"], 4, chars=1000)] == [1, 1]
    assert list(text_chunks([], 4)) == [] and 1 << 20 < CHUNK_CHARS < 1 << 26
