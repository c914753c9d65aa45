"""Padding-free batches: several texts share one graph row, each attending only to itself.

A batch of short texts padded to its longest member spends most of its compute on padding (a server's batch of
requests from many clients has random lengths). Packing lays texts end to end in rows of about ROW_TOKENS tokens;
each text keeps positions 0..n-1 and a block-diagonal (B, T, T) attention mask keeps it from seeing its neighbours.
Every row of a run is as wide as its widest, so a small call (a server's batch) spreads its texts evenly over the
rows; a large one fills rows of ROW_TOKENS, where the ragged ends are a small share.
This needs the directory's packed graph (`model.packed.onnx`: the same weights, plus `position_ids` and
`packed_mask` inputs); results match padded runs to float rounding (8e-7 on all-MiniLM-L6-v2).

The same feeds express an ordinary padded batch (one text per row), so one session serves both layouts.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from .batching import plan_batches
from .tokenize import Tokenized

__all__ = ["PACKED_INPUTS", "ROW_TOKENS", "Layout", "layout", "pack_rows", "plan_layouts", "segment_pool"]

Float32Array = npt.NDArray[np.float32]
Int64Array = npt.NDArray[np.int64]

PACKED_INPUTS = {"position_ids": "int64", "packed_mask": "int32"}

# Row width for packing: attention's masked (T, T) scores cost more than their FLOPs say, so narrow rows win while they
# still fill. all-MiniLM-L6-v2, 2 threads, alternating rounds: 24 and 32 were fastest, within 5% of each other (AMX
# Xeon, STS-B dev int8: 2.58 s at 64, 2.19 s at 32); benchmarks/results/reference/row_width.md has every workload.
ROW_TOKENS = 32

# Calls of up to this many tokens (a server's batch) get balanced rows (`_balanced_rows`): filled rows leave a last row
# mostly empty but as wide as the rest (random groups of 16 STS-B sentences, rows of 64: 1.164 cells per token,
# balanced 1.017, 474 -> 502 sentences/s in-process, MiniLM fp32).
BALANCED_TOKENS = 1024

# A row of width w costs about w * (1 + w / ATTENTION_TOKENS) token-columns: attention grows with w squared. Fitted
# on MiniLM fp32 runs of B rows by T tokens (2 threads): one row of 128 took 1.09x two of 64, one of 256 1.16x four.
ATTENTION_TOKENS = 1024


@dataclass(frozen=True)
class Layout:
    """One graph run: where each text sits (row, first column, length) and the feeds that put it there."""

    index: Int64Array  # (n,) positions in the caller's list
    row: Int64Array  # (n,)
    start: Int64Array  # (n,)
    length: Int64Array  # (n,)
    feeds: dict[str, npt.NDArray[np.integer[Any]]]  # input_ids etc. (B, T); packed_mask (B, T, T)

    @property
    def width(self) -> int:
        """T: the run's row width."""
        return int(self.feeds["input_ids"].shape[1])


def pack_rows(lengths: Int64Array, row_tokens: int = ROW_TOKENS) -> list[Int64Array]:
    """Texts grouped into rows: balanced rows for up to BALANCED_TOKENS tokens, else rows of ~row_tokens."""
    lengths = np.maximum(np.asarray(lengths, dtype=np.int64), 1)
    if len(lengths) == 0:
        return []
    if int(lengths.sum()) <= BALANCED_TOKENS:
        return _balanced_rows(lengths, row_tokens)
    return _best_fit_rows(lengths, row_tokens)


def _balanced_rows(lengths: Int64Array, row_tokens: int) -> list[Int64Array]:
    """The cheapest of k balanced rows, over the k giving rows of 3/4 to 3/2 row_tokens.

    Rows are never narrower than the longest text; k rows of width w cost k * w * (1 + w / ATTENTION_TOKENS).
    """
    total, longest = int(lengths.sum()), int(lengths.max())
    order = np.argsort(-lengths, kind="stable").tolist()
    sizes = lengths.tolist()
    fewest = max(1, math.ceil(total / max(longest, row_tokens * 3 // 2)))
    most = max(fewest, min(len(sizes), math.ceil(total / max(longest, row_tokens * 3 // 4))))
    spreads = [_spread(order, sizes, k) for k in range(fewest, most + 1)]
    _, rows = min(spreads, key=lambda spread: len(spread[1]) * spread[0] * (1 + spread[0] / ATTENTION_TOKENS))
    return [np.asarray(members, dtype=np.int64) for members in rows]


def _spread(order: list[int], sizes: list[int], k: int) -> tuple[int, list[list[int]]]:
    """The widest row's tokens and the rows: texts in `order` (longest first), each onto the emptiest of k rows.

    This is LPT scheduling: the widest row ends at most one text's length past the narrowest.
    """
    fill = [(0, row) for row in range(k)]  # heap of (tokens so far, row)
    rows: list[list[int]] = [[] for _ in range(k)]
    for text in order:
        tokens, row = heapq.heappop(fill)
        rows[row].append(text)
        heapq.heappush(fill, (tokens + sizes[text], row))
    return max(tokens for tokens, _ in fill), rows


def _best_fit_rows(lengths: Int64Array, row_tokens: int) -> list[Int64Array]:
    """Best-fit decreasing: a row opened by a text of n tokens holds max(row_tokens, n).

    Later texts go to the row they fill best (the lowest-numbered on a tie). Open rows wait in one heap per count of
    free tokens (fewer than row_tokens), so a text looks at most row_tokens heaps, not every row: linear in the texts
    (scanning every row took 2 s for 100,000 texts).
    """
    order = np.argsort(-lengths, kind="stable").tolist()
    sizes = lengths.tolist()
    waiting: list[list[int]] = [[] for _ in range(row_tokens)]  # waiting[f]: rows with f tokens free, a heap
    rows: list[list[int]] = []
    for text in order:
        need = sizes[text]
        free = next((f for f in range(need, row_tokens) if waiting[f]), None)
        if free is None:
            row, free = len(rows), max(row_tokens, need)
            rows.append([text])
        else:
            row = heapq.heappop(waiting[free])
            rows[row].append(text)
        if free > need:
            heapq.heappush(waiting[free - need], row)
    return [np.asarray(members, dtype=np.int64) for members in rows]


def layout(tokens: Tokenized, rows: list[Int64Array], pad_id: int, *, packing_inputs: bool) -> Layout:
    """Feeds for one run whose rows hold the given texts end to end, right-padded to the widest row.

    `packing_inputs`: also position_ids and packed_mask (the packed graph's inputs).
    """
    index = np.concatenate(rows)
    sizes = [len(members) for members in rows]
    row = np.repeat(np.arange(len(rows), dtype=np.int64), sizes)
    length = tokens.lengths[index].astype(np.int64)
    before = np.cumsum(length) - length  # tokens of earlier texts, all rows
    firsts = np.cumsum([0, *sizes[:-1]])  # each row's first text, in `index` order
    start = before - np.repeat(before[firsts], sizes)
    width = int((start + length).max())
    ids = np.full((len(rows), width), pad_id, dtype=np.int64)
    slots = np.repeat(row * width + start, length) + np.arange(int(length.sum())) - np.repeat(before, length)
    ids.reshape(-1)[slots] = np.concatenate([tokens.ids[text] for text in index])
    mask = np.zeros((len(rows), width), dtype=np.int64)
    mask.reshape(-1)[slots] = 1
    feeds: dict[str, npt.NDArray[np.integer[Any]]] = {"input_ids": ids, "attention_mask": mask}
    feeds["token_type_ids"] = np.zeros_like(ids)
    if packing_inputs:
        positions = np.zeros((len(rows), width), dtype=np.int64)
        positions.reshape(-1)[slots] = np.arange(len(slots)) - np.repeat(before, length)
        segment = np.full((len(rows), width), -1, dtype=np.int64)  # which text each token belongs to; -1 padding
        segment.reshape(-1)[slots] = np.repeat(np.arange(len(index)), length)
        feeds["position_ids"] = positions
        feeds["packed_mask"] = (segment[:, :, None] == segment[:, None, :]).astype(np.int32)  # padding sees padding
    return Layout(index, row, start, length, feeds)


def plan_layouts(
    tokens: Tokenized, *, packed: bool, packing_inputs: bool, max_batch_tokens: int, max_batch_size: int, pad_id: int
) -> Iterator[Layout]:
    """Runs over all texts: packed rows, or one text per row; runs cut by `plan_batches` over the row widths.

    Each run's feeds are built only when the caller asks for that run, so memory follows the run, not the corpus.
    """
    lengths = tokens.lengths
    rows = pack_rows(lengths) if packed else [np.array([i], dtype=np.int64) for i in range(len(lengths))]
    counts = np.array([len(members) for members in rows], dtype=np.int64)
    widths = np.add.reduceat(lengths[np.concatenate(rows)], np.cumsum(counts) - counts) if rows else counts
    for run in plan_batches(widths, max_batch_tokens=max_batch_tokens, max_batch_size=max_batch_size):
        yield layout(tokens, [rows[i] for i in run], pad_id, packing_inputs=packing_inputs)


def segment_pool(hidden: Float32Array, run: Layout, method: str) -> Float32Array:
    """(n, H) cls / mean / max of each text's own tokens in a run's (B, T, H) output, in `run.index` order."""
    flat = hidden.reshape(-1, hidden.shape[-1])  # (B * T, H)
    first = run.row * run.width + run.start
    if method == "cls":
        return np.ascontiguousarray(flat[first], dtype=np.float32)
    if method == "mean":
        return _segment_means(hidden, run)
    # reduceat over [first, end) of each text: texts never overlap, so sorted starts and ends interleave.
    order = np.argsort(first, kind="stable")
    bounds = np.stack([first[order], first[order] + run.length[order]], axis=1).reshape(-1)
    if bounds[-1] == len(flat):
        bounds = bounds[:-1]  # reduceat's last segment runs to the end anyway (and B * T is not a valid index)
    reduced = np.maximum.reduceat(flat, bounds, axis=0)[::2]  # (n, H) in `order`
    out = np.empty_like(reduced)
    out[order] = reduced
    return out.astype(np.float32, copy=False)


def _segment_means(hidden: Float32Array, run: Layout) -> Float32Array:
    """Each text's mean as one batched GEMM: a (B, S, T) 0/1 matrix, S texts per row at most, times (B, T, H).

    ~3x faster than add.reduceat over the flat output (STS-B dev through MiniLM: 10 against 28 ms).
    """
    texts, tokens = len(run.index), int(run.length.sum())
    per_row = np.bincount(run.row, minlength=hidden.shape[0])
    slot = np.empty(texts, dtype=np.int64)  # each text's place among its row's texts
    slot[np.argsort(run.row, kind="stable")] = np.arange(texts) - np.repeat(np.cumsum(per_row) - per_row, per_row)
    offset = np.arange(tokens) - np.repeat(np.cumsum(run.length) - run.length, run.length)  # token within its text
    picks = np.zeros((hidden.shape[0], int(per_row.max(initial=1)), hidden.shape[1]), dtype=np.float32)
    picks[np.repeat(run.row, run.length), np.repeat(slot, run.length), np.repeat(run.start, run.length) + offset] = 1
    sums = np.matmul(picks, hidden)[run.row, slot]  # (n, H) in `run.index` order
    means: Float32Array = sums / run.length[:, None].astype(np.float32)  # >= 1 token each: the tokenizer refuses none
    return means
