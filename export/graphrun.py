"""Run a graph file over tokenized text in length-sorted batches: int8 calibration and the int8 quality gate.

The same tokenizer, batching, padding and pooling as the runtime Encoder, on a graph that is not yet part of a
model directory (a candidate being judged).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from onnxbert.runtime.batching import plan_batches
from onnxbert.runtime.encoder import padded_batch
from onnxbert.runtime.pooling import Pooling, pool
from onnxbert.runtime.session import Provider, create_session
from onnxbert.runtime.tokenize import Tokenized

__all__ = ["Batch", "cpu_session", "embed", "run_batches"]

Float32Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Batch:
    """One run: the texts' positions (B,), their mask (B, T) and the named outputs."""

    index: npt.NDArray[np.int64]
    mask: npt.NDArray[np.int64]
    outputs: dict[str, Float32Array]


def cpu_session(graph: Path | bytes) -> ort.InferenceSession:
    """A CPU session on a graph file, or on serialized bytes (calibration adds outputs in memory)."""
    return create_session(graph, provider=Provider.CPU, threads=None, memory_arena=True, spinning=False)


def run_batches(
    session: ort.InferenceSession, tokens: Tokenized, pad_id: int, *, max_batch_tokens: int = 8192
) -> Iterator[Batch]:
    """Every output of the session for each length-sorted batch of `tokens`."""
    names = [o.name for o in session.get_outputs()]
    wanted = {i.name for i in session.get_inputs()}
    for index in plan_batches(tokens.lengths, max_batch_tokens=max_batch_tokens, max_batch_size=32):
        ids, mask = padded_batch(tokens, index, pad_id)
        feeds = {"input_ids": ids, "attention_mask": mask, "token_type_ids": np.zeros_like(ids)}
        results = session.run(None, {name: value for name, value in feeds.items() if name in wanted})
        yield Batch(index, mask, dict(zip(names, results, strict=True)))


def embed(graph: Path, tokens: Tokenized, pad_id: int, pooling: Pooling) -> tuple[Float32Array, float]:
    """Pooled vectors (n, H) in input order, and the seconds one warm pass over all texts took."""
    if not tokens.ids:
        raise ValueError("embed needs at least one text")
    session = cpu_session(graph)
    next(run_batches(session, tokens, pad_id))  # warm-up: first-run allocations are not the graph's speed
    out = np.empty((0, 0), dtype=np.float32)
    start = time.perf_counter()
    for batch in run_batches(session, tokens, pad_id):
        pooled = pool(batch.outputs["last_hidden_state"], batch.mask, pooling, batch.outputs.get("pooler_output"))
        if not out.size:
            out = np.empty((len(tokens.ids), pooled.shape[1]), dtype=np.float32)
        out[batch.index] = pooled
    return out, time.perf_counter() - start
