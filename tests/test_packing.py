"""Padding-free packing: rows hold several texts, each attends only to itself; results equal padded runs."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from test_runtime import random_texts

from onnxbert.runtime import Encoder, ModelDirectoryError
from onnxbert.runtime.packing import layout, pack_rows, plan_layouts, segment_pool
from onnxbert.runtime.tokenize import Tokenized


def fake_tokens(lengths: list[int]) -> Tokenized:
    ids = [np.arange(100 * i, 100 * i + n, dtype=np.int64) for i, n in enumerate(lengths)]
    return Tokenized(ids, np.array(lengths, dtype=np.int64), np.zeros(len(lengths), dtype=bool), None)


def test_pack_rows_places_every_text_once_within_row_width() -> None:
    lengths = np.random.default_rng(0).integers(1, 90, size=300)
    rows = pack_rows(lengths, row_tokens=64)
    placed = np.concatenate(rows)
    assert sorted(placed.tolist()) == list(range(300))
    for members in rows:
        assert lengths[members].sum() <= max(64, lengths[members].max())  # a long text opens a row of its own width
    assert len(rows) <= int(np.ceil(lengths.sum() / 64)) + int((lengths > 32).sum())  # far fewer rows than texts


def test_best_fit_takes_the_fullest_row_that_fits() -> None:
    """Each text (longest first) joins the open row it fills best, the lowest-numbered on a tie: the bucketed search
    matches a scan of every row."""

    def scan(lengths: np.ndarray, row_tokens: int) -> list[list[int]]:
        rows: list[list[int]] = []
        free: list[int] = []
        for text in np.argsort(-lengths, kind="stable").tolist():
            need = int(lengths[text])
            fits = [row for row, left in enumerate(free) if left >= need]
            if fits:
                row = min(fits, key=lambda row: free[row])
                rows[row].append(text)
                free[row] -= need
            else:
                rows.append([text])
                free.append(max(row_tokens, need) - need)
        return rows

    rng = np.random.default_rng(4)
    for row_tokens, longest in [(32, 40), (32, 12), (64, 150), (16, 5)]:
        lengths = rng.integers(1, longest, size=900)  # over BALANCED_TOKENS: best-fit rows
        assert [m.tolist() for m in pack_rows(lengths, row_tokens=row_tokens)] == scan(lengths, row_tokens)


def test_small_calls_get_balanced_rows() -> None:
    # Rows of 64 would take three (30+30, 20+20+10+10, 10+10): 3 x 60 cells. Balanced: two rows of 70.
    lengths = np.array([30, 30, 20, 20, 10, 10, 10, 10])
    assert sorted(int(lengths[members].sum()) for members in pack_rows(lengths, row_tokens=64)) == [70, 70]
    # A long text sets the width of every row of its run: the short ones share one more row, not four of 64.
    lengths = np.array([300, *[15] * 15])
    assert sorted(int(lengths[members].sum()) for members in pack_rows(lengths)) == [225, 300]
    assert [len(members) for members in pack_rows(np.array([7]))] == [1]


def test_balanced_rows_waste_little_on_server_sized_calls() -> None:
    rng = np.random.default_rng(3)
    cells = tokens = 0
    for _ in range(200):  # groups of 16 sentence-like lengths: a server's batch at concurrency 32
        lengths = np.clip(rng.gamma(4.0, 4.0, size=16).astype(np.int64) + 3, 3, 80)
        rows = pack_rows(lengths)
        assert sorted(np.concatenate(rows).tolist()) == list(range(16))
        cells += len(rows) * max(int(lengths[members].sum()) for members in rows)
        tokens += int(lengths.sum())
    assert cells / tokens < 1.10  # rows of 32 filled best-fit: 1.29 on these lengths (balanced: 1.07)


def test_layout_restarts_positions_and_masks_out_neighbours() -> None:
    tokens = fake_tokens([3, 5, 2, 4])
    run = layout(tokens, [np.array([1, 0]), np.array([3, 2])], pad_id=0, packing_inputs=True)
    ids, positions, mask3 = run.feeds["input_ids"], run.feeds["position_ids"], run.feeds["packed_mask"]
    assert ids.shape == (2, 8) and mask3.shape == (2, 8, 8)
    assert ids[0].tolist() == [100, 101, 102, 103, 104, 0, 1, 2]  # text 1 then text 0, no padding
    assert ids[1, :6].tolist() == [300, 301, 302, 303, 200, 201] and ids[1, 6:].tolist() == [0, 0]
    assert positions[0].tolist() == [0, 1, 2, 3, 4, 0, 1, 2]
    assert run.feeds["attention_mask"][1].tolist() == [1, 1, 1, 1, 1, 1, 0, 0]
    assert mask3[0, 0, :].tolist() == [1, 1, 1, 1, 1, 0, 0, 0]  # text 1's tokens see only text 1
    assert mask3[0, 6, :].tolist() == [0, 0, 0, 0, 0, 1, 1, 1]
    assert mask3[1, 7, :].tolist() == [0, 0, 0, 0, 0, 0, 1, 1]  # padding sees only padding: no empty softmax row
    assert run.row.tolist() == [0, 0, 1, 1] and run.start.tolist() == [0, 5, 0, 4]


@pytest.mark.parametrize("method", ["cls", "mean", "max"])
@pytest.mark.parametrize("texts", ["few", "many", "padded"])
def test_segment_pool_uses_each_texts_own_tokens(method: str, texts: str) -> None:
    """Balanced rows (a small call), best-fit rows of several texts each, and one text per row."""
    lengths = [7, 1, 30, 12, 64, 3] if texts == "few" else np.random.default_rng(5).integers(1, 40, 120).tolist()
    tokens = fake_tokens(lengths)
    for run in plan_layouts(
        tokens, packed=texts != "padded", packing_inputs=True, max_batch_tokens=1024, max_batch_size=32, pad_id=0
    ):
        hidden = np.random.default_rng(1).standard_normal((*run.feeds["input_ids"].shape, 5)).astype(np.float32)
        got = segment_pool(hidden, run, method)
        for k, (row, start, length) in enumerate(zip(run.row, run.start, run.length, strict=True)):
            own = hidden[row, start : start + length]
            want = {"cls": own[0], "mean": own.mean(axis=0), "max": own.max(axis=0)}[method]
            np.testing.assert_allclose(got[k], want, rtol=1e-6, atol=1e-6)


def test_runs_are_built_one_at_a_time(monkeypatch: pytest.MonkeyPatch) -> None:
    """A corpus's memory is one run's feeds (its (B, T, T) mask included), not every run's at once."""
    from onnxbert.runtime import packing

    built: list[int] = []
    real = packing.layout
    monkeypatch.setattr(packing, "layout", lambda *args, **kwargs: built.append(1) or real(*args, **kwargs))
    tokens = fake_tokens([250] * 2000)  # ~60 runs of 8192 tokens
    runs = plan_layouts(tokens, packed=True, packing_inputs=True, max_batch_tokens=8192, max_batch_size=32, pad_id=0)
    first = next(runs)
    assert len(built) == 1 and first.feeds["packed_mask"].shape[0] <= 32
    assert sum(1 for _ in runs) + 1 > 50 and len(built) > 50


def test_packed_vectors_equal_padded_ones(minilm_dir: Path) -> None:
    packed = Encoder(minilm_dir, variant="fp32")
    padded = Encoder(minilm_dir, variant="fp32", packing=False)
    assert packed.packing and not padded.packing
    texts = [*random_texts(97, seed=5, longest=150), "A man is playing a guitar.", "", "今天天气真好啊"]
    for pooling in ("mean", "cls", "max", "pooler"):
        np.testing.assert_allclose(
            packed.embed(texts, pooling=pooling), padded.embed(texts, pooling=pooling), atol=1e-5
        )
    small = texts[:16]  # a server-sized call: balanced rows
    np.testing.assert_allclose(packed.embed(small), padded.embed(small), atol=1e-5)
    mixed, alone = packed.encode(texts), padded.encode(texts[3])
    np.testing.assert_allclose(mixed.last_hidden_state[3], alone.last_hidden_state[0], atol=1e-5)
    assert mixed.pooler_output is not None and alone.pooler_output is not None
    np.testing.assert_allclose(mixed.pooler_output[3], alone.pooler_output[0], atol=1e-5)


@pytest.mark.slow
def test_packed_int8_stays_with_padded_int8(minilm_int8_dir: Path) -> None:
    texts = random_texts(64, seed=6, longest=80)
    packed = Encoder(minilm_int8_dir, variant="int8").embed(texts, normalize=True)
    padded = Encoder(minilm_int8_dir, variant="int8", packing=False).embed(texts, normalize=True)
    # int8 rounds activations: neighbours' float noise can flip a rounding step, never more (measured min 0.99965).
    assert (packed * padded).sum(axis=1).min() >= 0.999


@pytest.fixture
def model_copy(tiny_model_dir: Path, tmp_path: Path) -> Path:
    return Path(shutil.copytree(tiny_model_dir, tmp_path / "copy"))


def test_directory_without_twin_runs_padded(model_copy: Path, tiny_model_dir: Path) -> None:
    manifest = json.loads((model_copy / "onnxbert.json").read_text(encoding="utf-8"))
    del manifest["variants"]["fp32"]["packed"]  # as exported before packing existed
    (model_copy / "onnxbert.json").write_text(json.dumps(manifest), encoding="utf-8")
    (model_copy / "model.packed.onnx").unlink()
    plain = Encoder(model_copy)
    assert not plain.packing
    texts = random_texts(20, seed=7)
    packed = Encoder(tiny_model_dir)
    assert packed.packing
    np.testing.assert_allclose(plain.embed(texts, pooling="mean"), packed.embed(texts, pooling="mean"), atol=1e-5)


def test_edited_or_missing_twin_is_refused(model_copy: Path) -> None:
    twin = model_copy / "model.packed.onnx"
    data = bytearray(twin.read_bytes())
    data[-3] ^= 0xFF
    twin.write_bytes(bytes(data))
    with pytest.raises(ModelDirectoryError, match=r"model\.packed\.onnx does not match the sha256"):
        Encoder(model_copy)
    assert not Encoder(model_copy, packing=False).packing  # packing=False never opens it
    twin.unlink()
    with pytest.raises(ModelDirectoryError, match=r"model\.packed\.onnx is missing"):
        Encoder(model_copy)
