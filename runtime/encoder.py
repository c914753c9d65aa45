"""The Encoder: tokenize -> batch -> run -> pool, over one ONNX Runtime session."""

from __future__ import annotations

import collections
from collections.abc import Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from .directory import check_graph_io, check_tokenizer, open_directory
from .manifest import Manifest
from .packing import Layout, plan_layouts, segment_pool
from .pooling import Pooling
from .pooling import normalize as l2_normalize
from .session import Provider, create_session, int8_fits_16_bits
from .tokenize import TextTokenizer, Tokenized, check_texts

__all__ = ["Encoder", "EncoderOutput"]

Float32Array = npt.NDArray[np.float32]


@dataclass(frozen=True)
class EncoderOutput:
    """Token-level results, one entry per input text in input order, no padding rows."""

    last_hidden_state: list[Float32Array]  # each (tokens_i, H)
    pooler_output: Float32Array | None  # (n, H); None when the model has no pooler weights
    input_ids: list[npt.NDArray[np.int64]]  # each (tokens_i,), special tokens included
    truncated: npt.NDArray[np.bool_]  # (n,) True where the text was cut at max_length
    offsets: list[list[tuple[int, int]]] | None  # character spans per token, when asked


@dataclass(frozen=True)
class _Batch:
    run: Layout  # where each text sits in the run
    hidden: Float32Array  # (B, T, H)
    pooler: Float32Array | None  # (B, H); row b's first token, so a text's own only when it has the row alone


class Encoder:
    """A BERT-family encoder loaded from an onnxbert model directory. Thread-safe: one session serves many threads.

    >>> encoder = Encoder("minilm")                       # doctest: +SKIP
    >>> encoder.embed(["hello", "world"]).shape           # doctest: +SKIP
    (2, 384)
    """

    def __init__(
        self,
        path: str | Path,
        *,
        variant: str = "auto",
        provider: str = "auto",
        threads: int | None = None,
        workers: int = 1,
        max_length: int | None = None,
        max_batch_tokens: int = 8192,
        max_batch_size: int = 32,
        memory_arena: bool = True,
        spinning: bool = True,
        packing: bool = True,
        verify_hashes: bool = True,
        manifest: Manifest | None = None,
    ) -> None:
        """Load `path`'s variant; `manifest` stands in for its onnxbert.json (export judges before writing one).

        `threads`: ONNX Runtime's threads inside each run (default: the usable cores). `workers`: runs of one call in
        flight at once, each on its own thread. A call of one run (up to ~1,000 tokens) is fastest with threads = the
        cores and workers=1 (the default); bulk embedding is faster with threads=1 and workers = the cores, because
        one-thread runs never wait on each other inside an operator.
        """
        chosen = Provider.parse(provider).resolve()
        self._dir = open_directory(
            path, variant=variant, provider=chosen, packing=packing, verify_hashes=verify_hashes, manifest=manifest
        )
        limit = self._dir.manifest.tokenizer.max_length
        if max_length is not None and not (isinstance(max_length, int) and 2 <= max_length <= limit):
            raise ValueError(f"max_length={max_length!r} must be an int in [2, {limit}] (the exported maximum)")
        if max_batch_tokens < 1 or max_batch_size < 1:
            raise ValueError("max_batch_tokens and max_batch_size must be positive")
        if not (isinstance(workers, int) and workers >= 1):
            raise ValueError(f"workers={workers!r} must be an int >= 1")
        self._tokenizer = TextTokenizer(self._dir.tokenizer_path, max_length=max_length or limit)
        check_tokenizer(self._dir, self._tokenizer, verify_hash=verify_hashes)
        # The packed twin also runs ordinary padded batches (one text per row), so it replaces the plain graph.
        self.packing = self._dir.packed_path is not None
        graph = self._dir.packed_path or self._dir.graph_path
        self._session = create_session(
            graph,
            provider=chosen,
            threads=threads,
            memory_arena=memory_arena,
            spinning=spinning,
            int8_fits_16_bits=int8_fits_16_bits(self._dir.variant.recipe),
        )
        check_graph_io(self._dir, self._session, packed=self.packing)
        # Feed exactly what the graph declares, in its dtypes (int32 graphs exist: some exporters narrow ids).
        self._inputs = {i.name: np.int32 if i.type == "tensor(int32)" else np.int64 for i in self._session.get_inputs()}
        self._output_names = [o.name for o in self._session.get_outputs()]
        self._pad_id = self._dir.manifest.tokenizer.pad_id
        self._max_batch_tokens = max_batch_tokens
        self._max_batch_size = max_batch_size
        self.provider = chosen.value
        options = self._session.get_session_options()  # what the session runs with, read back
        self.threads = options.intra_op_num_threads
        self.spinning = options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
        self.workers = workers
        self._pool = ThreadPoolExecutor(workers, thread_name_prefix="onnxbert-run") if workers > 1 else None

    @property
    def manifest(self) -> Manifest:
        """The directory's manifest."""
        return self._dir.manifest

    @property
    def variant(self) -> str:
        """The loaded variant: fp32, int8 or fp16."""
        return self._dir.variant_name

    @property
    def hidden_size(self) -> int:
        """Width of every returned vector."""
        return self._dir.manifest.architecture.hidden_size

    @property
    def max_length(self) -> int:
        """Tokens per text, special tokens included; longer texts are truncated."""
        return self._tokenizer.max_length

    @property
    def poolings(self) -> tuple[str, ...]:
        """The poolings this model offers: `pooler` only where the checkpoint has pooler weights."""
        has_pooler = self._dir.manifest.architecture.has_pooler
        return tuple(p.value for p in Pooling if p is not Pooling.POOLER or has_pooler)

    @property
    def default_pooling(self) -> str:
        """The pooling `embed` uses when none is given."""
        return self._dir.manifest.default_pooling

    def __repr__(self) -> str:
        return (
            f"Encoder({str(self._dir.path)!r}, variant={self.variant!r}, provider={self.provider!r}, "
            f"threads={self.threads}, workers={self.workers}, max_length={self.max_length}, packing={self.packing})"
        )

    def tokenize(self, texts: str | Sequence[str], *, truncate: bool = True, offsets: bool = False) -> Tokenized:
        """Token ids exactly as `embed` and `encode` would feed them to the graph.

        With `offsets`, also each token's string and character span.
        """
        return self._tokenizer.encode(check_texts(texts), truncate=truncate, offsets=offsets)

    def embed(
        self,
        texts: str | Sequence[str],
        *,
        pooling: str | None = None,
        normalize: bool = False,
        truncate: bool = True,
    ) -> Float32Array:
        """Pooled sentence vectors, float32 (n, hidden), in input order."""
        method = self._pooling(pooling)
        out = self.embed_tokens(self._tokenizer.encode(check_texts(texts), truncate=truncate), method)
        return l2_normalize(out) if normalize else out

    def _pooling(self, pooling: str | Pooling | None) -> Pooling:
        method = Pooling.parse(pooling or self.default_pooling)
        if method.value not in self.poolings:
            raise ValueError("pooling='pooler' needs pooler weights, which this checkpoint lacks; use cls/mean/max")
        return method

    def embed_tokens(self, tokens: Tokenized, pooling: str | Pooling | None = None) -> Float32Array:
        """Pooled vectors for texts already tokenized by `tokenize` (servers tokenize once, at admission)."""
        method = self._pooling(pooling)
        out = np.empty((len(tokens.ids), self.hidden_size), dtype=np.float32)
        pooler = method is Pooling.POOLER  # BERT's pooler reads a row's first token: one text per row
        for batch in self._run(tokens, pack=not pooler):
            if pooler:
                out[batch.run.index] = batch.pooler[batch.run.row] if batch.pooler is not None else _no_pooler()
            else:
                out[batch.run.index] = segment_pool(batch.hidden, batch.run, method.value)
        return out

    def encode(
        self, texts: str | Sequence[str], *, truncate: bool = True, return_offsets: bool = False
    ) -> EncoderOutput:
        """Token-level hidden states per text (no padding rows) plus pooler_output, ids and truncation flags."""
        tokens = self._tokenizer.encode(check_texts(texts), truncate=truncate, offsets=return_offsets)
        return self.encode_tokens(tokens)

    def encode_tokens(self, tokens: Tokenized) -> EncoderOutput:
        """Token-level outputs for texts already tokenized by `tokenize`."""
        n = len(tokens.ids)
        hidden: list[Float32Array] = [np.empty((0, self.hidden_size), np.float32)] * n
        has_pooler = self._dir.manifest.architecture.has_pooler
        pooler = np.empty((n, self.hidden_size), dtype=np.float32) if has_pooler else None
        for batch in self._run(tokens, pack=not has_pooler):
            run = batch.run
            for position, row, start, length in zip(run.index, run.row, run.start, run.length, strict=True):
                hidden[position] = batch.hidden[row, start : start + length].copy()  # without padding
            if pooler is not None and batch.pooler is not None:
                pooler[run.index] = batch.pooler[run.row]
        return EncoderOutput(hidden, pooler, tokens.ids, tokens.truncated, tokens.offsets)

    def _run(self, tokens: Tokenized, *, pack: bool) -> Iterator[_Batch]:
        """Run the graph over length-sorted batches (packed rows where asked and possible), in run order."""
        plan = plan_layouts(
            tokens,
            packed=pack and self.packing,
            packing_inputs=self.packing,
            max_batch_tokens=self._max_batch_tokens,
            max_batch_size=self._max_batch_size,
            pad_id=self._pad_id,
        )
        if self._pool is None:
            yield from map(self._run_one, plan)
            return
        # `workers` runs go on while the caller pools the oldest one: at most workers + 1 results held.
        in_flight: collections.deque[Future[_Batch]] = collections.deque()
        for run in plan:
            in_flight.append(self._pool.submit(self._run_one, run))
            if len(in_flight) > self.workers:
                yield in_flight.popleft().result()
        while in_flight:
            yield in_flight.popleft().result()

    def _run_one(self, run: Layout) -> _Batch:
        typed = {name: run.feeds[name].astype(dtype, copy=False) for name, dtype in self._inputs.items()}
        results = dict(zip(self._output_names, self._session.run(None, typed), strict=True))
        return _Batch(run, results["last_hidden_state"], results.get("pooler_output"))


def _no_pooler() -> Float32Array:
    raise ValueError("pooling='pooler' needs a graph with pooler_output; this model has no pooler weights")
