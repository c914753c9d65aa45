"""Server settings: every limit a client can hit, with the defaults TEI users expect."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ServerSettings", "check_api_key"]


@dataclass(frozen=True)
class ServerSettings:
    """Limits and batching knobs of `onnxbert serve`."""

    variant: str = "auto"
    provider: str = "auto"
    threads: int | None = None
    max_batch_tokens: int = 8192  # real tokens coalesced into one Encoder call
    max_batch_texts: int = 32  # texts per Encoder call
    # Most rows per graph run inside one Encoder call (a row holds one text, or several when packed).
    max_run_texts: int = 32
    # Texts end to end in rows instead of each padded to its run's longest (needs the packed graph): a server's
    # batch mixes lengths from many clients (random groups of 32, MiniLM fp32: 395 -> 469 sentences/s).
    packing: bool = True
    # Idle inference threads spin-wait instead of sleeping: lower latency at light load, but a busy core even at a
    # few requests/s (MiniLM fp32 at 20 requests/s: 86% of a core against 10%), so only on request.
    spinning: bool = False
    # How long an idle worker waits for company before running a lone request; 0: continuous batching (2 ms gave
    # nothing at concurrency 8 or 32 and cost 2.7 ms of p50 at concurrency 1).
    max_wait_ms: float = 0.0
    # After a batch, wait for the clients it answered to send their next request (while requests keep arriving,
    # each within this gap, and no longer than the batch ran), so closed-loop clients share one batch instead of
    # alternating in two half-size cohorts (concurrency 8: +11%); open-loop traffic pays a little p50. 0: off.
    refill_gap_ms: float = 0.5
    max_queue: int = 2048  # texts waiting; past this, 429 with Retry-After
    # Real tokens waiting (eight full batches): a few long requests cannot park short ones behind seconds of work.
    max_queue_tokens: int = 65_536
    max_text_chars: int = 100_000  # characters per text; past this, 422 (tokenizing is linear in them)
    # Tokens per /embed_all request: its answer holds hidden_size floats per token (4,096 x 384: ~15 MB of JSON).
    max_embed_all_tokens: int = 4096
    max_client_batch: int = 64  # inputs per request; past this, 422
    payload_limit: int = 2_000_000  # request body bytes; past this, 413
    # Requests admitted and not yet answered (TEI's name and default); past this, 429 before the body is read, so
    # bodies held at once stay under this times payload_limit (300 stalled 2 MB bodies held 576 MB without it).
    max_concurrent_requests: int = 512
    # Open connections, idle or sending (each may buffer an unfinished head of up to max_header_bytes: 4,000 such took
    # the server from 156 to 304 MB, and only the file-descriptor limit stopped more); past it a new connection gets
    # 503 before any of its request is read.
    max_connections: int = 4096
    # The HTTP layer (serve/protocol.py): a request head's bytes and fields (431 past them), how long its head and
    # its body may take to arrive (408), and how long an idle keep-alive connection stays open.
    max_header_bytes: int = 32_768
    max_headers: int = 100
    header_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    idle_timeout_s: int = 5  # whole seconds: uvicorn's keep-alive timer
    api_key: str | None = None  # when set, `Authorization: Bearer KEY` is required (401)
    model_name: str | None = None  # the `model` reported by /v1/embeddings; default: the directory's name

    def __post_init__(self) -> None:
        limits = (
            "max_batch_tokens",
            "max_batch_texts",
            "max_run_texts",
            "max_queue",
            "max_queue_tokens",
            "max_text_chars",
            "max_embed_all_tokens",
            "max_client_batch",
            "payload_limit",
            "max_concurrent_requests",
            "max_connections",
            "max_header_bytes",
            "max_headers",
        )
        for name in limits:
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} must be a positive int")
        for name in ("max_wait_ms", "refill_gap_ms"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be >= 0")
        for name in ("header_timeout_s", "body_timeout_s", "idle_timeout_s"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r} must be > 0")
        if self.api_key is not None:
            check_api_key(self.api_key)


def check_api_key(key: str) -> None:
    """Refuse an empty key (it would open the door) and one that is not printable ASCII without spaces.

    A non-ASCII key would match or not depending on how a client encodes its header.
    """
    if not key.strip():
        raise ValueError("the API key is empty (--api-key or $ONNXBERT_API_KEY): give a key, or set neither")
    if not all("!" <= ch <= "~" for ch in key):
        raise ValueError("the API key must be printable ASCII without spaces (e.g. from `openssl rand -hex 32`)")
