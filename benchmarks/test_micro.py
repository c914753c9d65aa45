"""Micro-benchmarks of the runtime's stages timed apart: tokenize, run (one ONNX Runtime call), pool.

Run with `pytest benchmarks/ --benchmark-only`; they are not part of the test suite (tests/ never times anything).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from benchmarks.workloads import sentences
from onnxbert.runtime import Encoder
from onnxbert.runtime.batching import plan_batches
from onnxbert.runtime.packing import layout, segment_pool
from onnxbert.runtime.tokenize import Tokenized

pytest.importorskip("pytest_benchmark")

BATCH = 32


@pytest.fixture(scope="module")
def encoder(minilm_dir: Path) -> Encoder:
    return Encoder(minilm_dir, variant="fp32", provider="cpu")


@pytest.fixture(scope="module")
def texts() -> list[str]:
    return sentences(BATCH)


def test_tokenize_32_sentences(benchmark, encoder: Encoder, texts: list[str]) -> None:
    tokens = benchmark(encoder.tokenize, texts)
    assert len(tokens.ids) == BATCH


def test_plan_batches_10k(benchmark) -> None:
    lengths = np.random.default_rng(0).integers(3, 256, 10_000).astype(np.int64)
    batches = benchmark(plan_batches, lengths, max_batch_tokens=8192, max_batch_size=32)
    assert sum(len(b) for b in batches) == 10_000


@pytest.mark.parametrize("variant", ["fp32", "int8"])
def test_run_one_batch_32x32(benchmark, minilm_dir: Path, variant: str) -> None:
    session = Encoder(minilm_dir, variant=variant, provider="cpu", packing=False)._session  # the ORT call alone
    ids = np.full((BATCH, 32), 1037, dtype=np.int64)
    feeds = {"input_ids": ids, "attention_mask": np.ones_like(ids), "token_type_ids": np.zeros_like(ids)}
    hidden, _ = benchmark(session.run, None, feeds)
    assert hidden.shape == (BATCH, 32, 384)


@pytest.mark.parametrize("method", ["mean", "max", "cls"])
def test_pool_32x128x384(benchmark, method: str) -> None:
    rng = np.random.default_rng(0)
    hidden = rng.standard_normal((BATCH, 128, 384)).astype(np.float32)
    ids = [np.ones(int(n), dtype=np.int64) for n in rng.integers(5, 128, BATCH)]
    tokens = Tokenized(ids, np.array([len(i) for i in ids]), np.zeros(BATCH, np.bool_), None)
    run = layout(tokens, [np.array([i]) for i in range(BATCH)], 0, packing_inputs=False)  # one text per row
    pooled = benchmark(segment_pool, hidden[:, : run.width], run, method)
    assert pooled.shape == (BATCH, 384)
    assert pooled.dtype == np.float32


def test_embed_end_to_end_32(benchmark, encoder: Encoder, texts: list[str]) -> None:
    assert benchmark(encoder.embed, texts).shape == (BATCH, 384)
