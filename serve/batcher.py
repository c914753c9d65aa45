"""Dynamic batching: requests from many clients coalesced into one Encoder call, run off the event loop.

Requests arrive already tokenized (at admission, so over-long text and token counts are known before queueing).
One worker takes every queued request of the same kind up to a token budget, runs them as one Encoder call in a
single inference thread (the Encoder sorts them by length inside), and hands each request exactly its own rows.

After a batch it waits briefly for the clients it answered (`_refill`): a client that sends its next request as soon
as it has an answer is back within a round trip, and waiting for it keeps batches whole instead of letting the
clients split into two half-size cohorts that alternate on the inference thread.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from onnxbert.runtime import Encoder, Pooling
from onnxbert.runtime.pooling import normalize as l2_normalize
from onnxbert.runtime.tokenize import Tokenized

from .metrics import Metrics
from .settings import ServerSettings

__all__ = ["Batcher", "Job", "QueueFullError"]


def split_rows(rows: Any, sizes: list[int]) -> list[Any]:
    """One merged call's rows back per request: consecutive slices of `sizes` rows each."""
    bounds = np.cumsum([0, *sizes])
    return [rows[a:b] for a, b in itertools.pairwise(bounds)]


class QueueFullError(Exception):
    """The queue holds max_queue texts already; the client should retry after `retry_after` seconds."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"queue full, retry after {retry_after}s")
        self.retry_after = retry_after


@dataclass(eq=False)
class Job:
    """One request's texts, what to compute, and where its answer goes."""

    token_level: bool  # encode (hidden states per token) rather than embed (pooled)
    pooling: Pooling
    tokens: Tokenized
    normalize: bool = False  # L2-normalize the pooled rows (in the inference thread, the whole batch at once)
    future: asyncio.Future[Any] = field(default_factory=lambda: asyncio.get_running_loop().create_future())
    size: int = field(init=False)  # real tokens, counted against the batch's budget

    def __post_init__(self) -> None:
        self.size = int(self.tokens.lengths.sum())

    @property
    def key(self) -> tuple[bool, Pooling]:
        """Jobs with the same key can share one Encoder call."""
        return self.token_level, self.pooling


class Batcher:
    """The queue and its single inference worker."""

    def __init__(self, encoder: Encoder, settings: ServerSettings, metrics: Metrics) -> None:
        self._encoder = encoder
        self._settings = settings
        self._metrics = metrics
        self._jobs: deque[Job] = deque()
        self._queued_texts = 0
        self._wake = asyncio.Event()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="onnxbert-inference")
        self._task: asyncio.Task[None] | None = None
        self._stopping = False
        self._recent_rate = 100.0  # texts/s, for Retry-After; updated after every batch
        self._last_run = 0.0  # seconds the last batch took
        self._queued_tokens = 0
        self._arrivals = 0  # requests queued so far (never decreases): tells _refill whether any came
        self._refill_target = 0  # while refilling: wake the worker only once this many texts wait

    @property
    def queued_texts(self) -> int:
        """Texts waiting, not counting the batch being run."""
        return self._queued_texts

    def start(self) -> None:
        """Start the worker on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._work(), name="onnxbert-batcher")

    async def stop(self) -> None:
        """Finish every queued request, then stop the worker and its thread."""
        self._stopping = True
        self._wake.set()
        if self._task is not None:
            await self._task
        self._executor.shutdown(wait=True)

    def check_room(self, texts: int, tokens: int = 0) -> None:
        """Raise QueueFullError unless `texts` (and `tokens`) more fit: max_queue texts, max_queue_tokens tokens.

        Called before a request is tokenized too (with its text count), so that refusing costs almost nothing.
        """
        if self._stopping:
            raise QueueFullError(retry_after=1)
        settings, busy = self._settings, self._queued_texts > 0
        if busy and (
            self._queued_texts + texts > settings.max_queue or self._queued_tokens + tokens > settings.max_queue_tokens
        ):
            raise QueueFullError(retry_after=max(1, int(np.ceil(self._queued_texts / self._recent_rate))))

    def submit(self, job: Job) -> None:
        """Queue a job, or raise QueueFullError when the queue is full (texts or tokens)."""
        count = len(job.tokens)
        self.check_room(count, job.size)
        self._jobs.append(job)
        self._queued_texts += count
        self._queued_tokens += job.size
        self._arrivals += 1
        self._metrics.queue_texts.set(self._queued_texts)
        if not self._refill_target or self._full(self._refill_target):
            self._wake.set()

    def withdraw(self, job: Job) -> None:
        """The client went away: drop its job if it has not started (freeing its place), and its answer."""
        try:
            self._jobs.remove(job)
        except ValueError:
            pass  # already running or done; its result is simply not sent
        else:
            self._queued_texts -= len(job.tokens)
            self._queued_tokens -= job.size
            self._metrics.queue_texts.set(self._queued_texts)
        job.future.cancel()

    def _take(self) -> list[Job]:
        """The oldest job and every later job of the same kind that fits the token budget."""
        first = self._jobs[0]
        budget, most = self._settings.max_batch_tokens, self._settings.max_batch_texts
        taken: list[Job] = []
        tokens = texts = 0
        for job in list(self._jobs):
            fits = tokens + job.size <= budget and texts + len(job.tokens) <= most
            if job.key == first.key and (not taken or fits):
                taken.append(job)
                tokens += job.size
                texts += len(job.tokens)
        for job in taken:
            self._jobs.remove(job)
            self._queued_texts -= len(job.tokens)
            self._queued_tokens -= job.size
        self._metrics.queue_texts.set(self._queued_texts)
        return taken

    def _full(self, target: int) -> bool:
        """At least `target` texts wait, or a batch's worth of tokens."""
        return self._queued_texts >= target or self._queued_tokens >= self._settings.max_batch_tokens

    async def _refill(self, target: int) -> None:
        """Wait until `target` texts are queued, while requests keep coming, at most as long as the last batch ran.

        That cap is never under two gaps, whatever the last batch took. Requests keep coming while one arrived within
        the gap, or while the event loop was too busy to check on time (answering the last batch and admitting the
        next requests is its work; it is late, not idle). Open-loop traffic, whose clients do not come straight back,
        stops the wait after one quiet gap.
        """
        loop = asyncio.get_running_loop()
        gap = self._settings.refill_gap_ms / 1000
        deadline = loop.time() + max(self._last_run, 2 * gap)
        self._refill_target = target
        try:
            while not self._full(target) and not self._stopping:
                seen, start = self._arrivals, loop.time()
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), gap)  # set by submit once `target` texts wait
                except TimeoutError:
                    now = loop.time()
                    if (self._arrivals == seen and now - start < 2 * gap) or now > deadline:
                        return
        finally:
            self._refill_target = 0

    async def _work(self) -> None:
        loop = asyncio.get_running_loop()
        target = 0  # texts the next batch should hold: those queued when the last one ended, and those it answered
        while True:
            if not self._jobs:
                if self._stopping:
                    return
                self._wake.clear()
                await self._wake.wait()
                if self._settings.max_wait_ms > 0 and not self._stopping:
                    # The worker was idle: let concurrent requests arriving right now join this batch.
                    await asyncio.sleep(self._settings.max_wait_ms / 1000)
                continue
            if target and self._settings.refill_gap_ms > 0:
                await self._refill(target)
            target = 0
            jobs = self._take()
            try:
                results = await loop.run_in_executor(self._executor, self._infer, jobs)
            except Exception as error:  # every waiting client gets the failure instead of hanging
                for job in jobs:
                    if not job.future.done():
                        job.future.set_exception(error)
                continue
            answered = 0
            for job, result in zip(jobs, results, strict=True):
                if not job.future.done():
                    job.future.set_result(result)
                    answered += len(job.tokens)
            target = min(self._settings.max_batch_texts, self._queued_texts + answered)

    def _infer(self, jobs: list[Job]) -> list[Any]:
        """Runs in the inference thread: one Encoder call for all jobs, split back per job."""
        merged = Tokenized.concat([job.tokens for job in jobs])
        start = time.perf_counter()
        if jobs[0].token_level:
            out = self._encoder.encode_tokens(merged)
            rows: Any = out.last_hidden_state
        else:
            rows = self._encoder.embed_tokens(merged, jobs[0].pooling)
            unit = np.repeat([job.normalize for job in jobs], [len(job.tokens) for job in jobs])
            if unit.any():
                rows[unit] = l2_normalize(rows[unit])
        elapsed = time.perf_counter() - start
        self._last_run = elapsed
        self._recent_rate = max(len(merged) / max(elapsed, 1e-6), 1.0)
        self._metrics.inference_seconds.observe(elapsed)
        self._metrics.batch_texts.observe(len(merged))
        self._metrics.batch_tokens.observe(float(merged.lengths.sum()))
        self._metrics.tokens.inc(float(merged.lengths.sum()))
        return split_rows(rows, [len(job.tokens) for job in jobs])
