"""Parity on the real all-MiniLM-L6-v2: the runtime against transformers' BertModel, and pinned golden values."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch", reason="parity tests compare with transformers")

from onnxbert.export.sts import sts_pairs, unique_sentences  # noqa: E402
from onnxbert.runtime import Encoder, Manifest  # noqa: E402

# transformers 5.24 / torch 2.13 BertModel on all-MiniLM-L6-v2: mean of last_hidden_state[:6] and pooler_output[:4]
GOLDEN = {
    "今天天气真好啊": (
        [101, 100, 1811, 1811, 100, 1921, 100, 100, 102],
        [-0.096488, 0.977936, 0.594308, -0.038631, -0.305246, 0.770696],
        [-0.015157, 0.061776, 0.001682, 0.030159],
    ),
    "A man is playing a guitar.": (
        [101, 1037, 2158, 2003, 2652, 1037, 2858, 1012, 102],
        [0.106762, -0.023971, -0.047551, -0.312446, -0.825419, 0.023046],
        [0.012012, -0.040316, 0.028556, 0.022251],
    ),
}


def sts_dev_sentences(limit: int) -> list[str]:
    """Unique sentences of the STS Benchmark dev split, read as export's int8 gate reads them."""
    return unique_sentences(sts_pairs("dev"), limit)


def reference(model: torch.nn.Module, encoder: Encoder, texts: list[str]) -> tuple[list[np.ndarray], np.ndarray]:
    """transformers outputs per text, each run alone (no padding at all) on the runtime's token ids."""
    hidden, pooler = [], []
    for ids in encoder.tokenize(texts).ids:
        batch = torch.from_numpy(ids)[None]
        with torch.inference_mode():
            out = model(input_ids=batch, attention_mask=torch.ones_like(batch), token_type_ids=torch.zeros_like(batch))
        hidden.append(out.last_hidden_state[0].numpy())
        pooler.append(out.pooler_output[0].numpy())
    return hidden, np.stack(pooler)


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return [*sts_dev_sentences(120), "今天天气真好啊", "", "   ", "x " * 400]


def test_manifest_records_passing_figures(minilm_dir: Path) -> None:
    manifest = Manifest.load(minilm_dir)
    assert manifest.default_pooling == "mean"  # read from 1_Pooling/config.json
    assert manifest.tokenizer.max_length == 256  # sentence_bert_config.json's max_seq_length
    fp32 = manifest.variants["fp32"].verification
    assert fp32["texts"] >= 64
    assert fp32["max_abs_hidden"] <= 1e-4 and fp32["max_abs_pooler"] <= 1e-4
    assert manifest.variants["fp32"].state == "passed"


def test_fp32_hidden_states_and_pooler_match_transformers(minilm_dir: Path, minilm_torch, texts: list[str]) -> None:
    encoder = Encoder(minilm_dir, variant="fp32")
    out = encoder.encode(texts)
    ref_hidden, ref_pooler = reference(minilm_torch, encoder, texts)
    assert out.truncated.tolist() == [False] * (len(texts) - 1) + [True]
    for index, (mine, theirs) in enumerate(zip(out.last_hidden_state, ref_hidden, strict=False)):
        assert mine.shape == theirs.shape, index
        assert np.abs(mine - theirs).max() <= 1e-4, index
    assert np.abs(out.pooler_output - ref_pooler).max() <= 1e-4


def test_fp32_mean_pooling_matches_transformers(minilm_dir: Path, minilm_torch, texts: list[str]) -> None:
    encoder = Encoder(minilm_dir, variant="fp32")
    ref_hidden, _ = reference(minilm_torch, encoder, texts)
    expected = np.stack([h.mean(axis=0) for h in ref_hidden])
    assert np.abs(encoder.embed(texts, pooling="mean") - expected).max() <= 1e-4
    assert np.abs(encoder.embed(texts, pooling="cls") - np.stack([h[0] for h in ref_hidden])).max() <= 1e-4
    assert np.abs(encoder.embed(texts, pooling="max") - np.stack([h.max(axis=0) for h in ref_hidden])).max() <= 1e-4


@pytest.mark.slow
def test_int8_mean_cosine_on_sts_dev(minilm_int8_dir: Path) -> None:
    assert Manifest.load(minilm_int8_dir).variants["int8"].state == "passed"
    texts = sts_dev_sentences(400)
    fp32 = Encoder(minilm_int8_dir, variant="fp32").embed(texts, normalize=True)
    int8 = Encoder(minilm_int8_dir, variant="int8").embed(texts, normalize=True)
    cosines = (fp32 * int8).sum(axis=1)
    assert cosines.mean() >= 0.99
    assert cosines.min() >= 0.9


@pytest.mark.parametrize("text", list(GOLDEN))
def test_golden_values(minilm_dir: Path, text: str) -> None:
    ids, mean_head, pooler_head = GOLDEN[text]
    encoder = Encoder(minilm_dir)
    out = encoder.encode(text)
    assert out.input_ids[0].tolist() == ids
    np.testing.assert_allclose(encoder.embed(text, pooling="mean")[0, :6], mean_head, atol=1e-4)
    np.testing.assert_allclose(out.pooler_output[0, :4], pooler_head, atol=1e-4)
