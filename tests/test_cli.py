"""`onnxbert embed` and `onnxbert info` through the real console entry point."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from onnxbert.cli import main
from onnxbert.runtime import Encoder
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
