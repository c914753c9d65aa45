"""Server settings: every limit a client can hit, with the defaults TEI users expect."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ServerSettings:
    """Limits and batching knobs of `onnxbert serve`."""

    variant: str = "auto"
    provider: str = "auto"
    threads: int | None = None
    max_batch_tokens: int = 8192  # real tokens coalesced into one Encoder call
    max_batch_texts: int = 32  # texts per Encoder call (16 and 32 measured alike at concurrency 32 on 2 cores)
    # Most rows per graph run inside one Encoder call (a row holds one text, or several when packed). Unpacked, a
    # call's texts (from different clients, in no length order) are sorted and cut into runs where padding would cost
    # more than another run (plan_batches).
    # Measured in-process on random groups of 32 STS-B sentences (MiniLM fp32, 2 threads, AMD EPYC): fixed runs of
    # 16 414 sentences/s, runs cut by cost 462-476, the whole corpus length-sorted 513.
    max_run_texts: int = 32
    # Pack a call's texts end to end in rows (spread evenly over a few rows for a small call, rows of ~64 tokens for
    # a large one) instead of padding each to its run's longest (needs the directory's packed graph). Same numbers
    # to float rounding; in-process random groups of 32 (MiniLM fp32, AMD EPYC, 2 threads): 395 -> 469 sentences/s.
    packing: bool = True
    # Let idle inference threads spin-wait for the next run (ONNX Runtime's default) instead of sleeping. Off: a
    # server at light steady traffic (MiniLM fp32, 20 requests/s, 2 cores) used 10% of a core with it off and 86%
    # with it on, CPU that other processes on the machine need. On, for machines dedicated to the server: c=1
    # 233-248 -> 280-287 requests/s, c=8 +5-24%, c=32 and c=128 unchanged (AMD EPYC, 2 threads, 2-5 rounds).
    spinning: bool = False
    # How long an idle worker waits for company before running a lone request. 0: a batch is whatever queued while
    # the previous one ran (continuous batching). A/B, MiniLM fp32, 2 cores: 2 ms gave nothing at concurrency 8 or 32
    # and cost 2.7 ms of p50 at concurrency 1 (8.4 vs 5.7 ms; 118 vs 172 requests/s).
    max_wait_ms: float = 0.0
    # After a batch, wait for the clients it answered to send their next request, for as long as requests keep
    # arriving (each within this gap of the last, or while the event loop is busy admitting them) and no longer than
    # the batch took to run, so that the next batch holds them too. Without it, closed-loop clients settle into two
    # cohorts of half size, one queueing while the other's batch runs (TEI-style continuous batching). 0: off.
    # serve-ab, MiniLM fp32, 2 cores: concurrency 8 +11% and +16% (+18% with a 2 ms gap; 4.0 -> 8.0 texts per batch,
    # p50 21.8 -> 19.0 ms, every round won), concurrency 32 +3% (15.6 -> 31.2 texts; 11 and 12 of 16 rounds in two
    # runs), concurrency 1 and 128 unchanged within noise (0.92-0.99 and 1.006); open-loop Poisson traffic, whose
    # clients do not come straight back, pays p50: +0.9 ms at 250/s.
    refill_gap_ms: float = 0.5
    max_queue: int = 2048  # texts waiting; past this, 429 with Retry-After
    max_client_batch: int = 64  # inputs per request; past this, 422
    payload_limit: int = 2_000_000  # request body bytes; past this, 413
    api_key: str | None = None  # when set, `Authorization: Bearer KEY` is required (401)
    model_name: str | None = None  # the `model` reported by /v1/embeddings; default: the directory's name

    def __post_init__(self) -> None:
        limits = (
            "max_batch_tokens",
            "max_batch_texts",
            "max_run_texts",
            "max_queue",
            "max_client_batch",
            "payload_limit",
        )
        for name in limits:
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive int")
        for name in ("max_wait_ms", "refill_gap_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be >= 0")
