"""Prometheus metrics in a registry per app (no process-global state, so tests can run several apps)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

_LATENCY = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Metrics:
    """Request counts and latency, queue depth, batch sizes and tokens, tokenization and inference time."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("onnxbert_requests", "HTTP requests", ["endpoint", "status"], registry=r)
        self.latency = Histogram(
            "onnxbert_request_seconds", "Request latency", ["endpoint"], buckets=_LATENCY, registry=r
        )
        self.queue_texts = Gauge("onnxbert_queue_texts", "Texts waiting for the batcher", registry=r)
        self.batch_texts = Histogram(
            "onnxbert_batch_texts",
            "Texts per Encoder call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024),
            registry=r,
        )
        self.batch_tokens = Histogram(
            "onnxbert_batch_tokens",
            "Real tokens per Encoder call",
            buckets=(16, 64, 256, 1024, 2048, 4096, 8192, 16384, 65536),
            registry=r,
        )
        self.tokenize_seconds = Histogram(
            "onnxbert_tokenize_seconds", "Tokenization time per request", buckets=_LATENCY, registry=r
        )
        self.inference_seconds = Histogram(
            "onnxbert_inference_seconds", "Encoder time per batch", buckets=_LATENCY, registry=r
        )
        self.tokens = Counter("onnxbert_tokens", "Real tokens embedded", registry=r)
        self.http_refusals = Counter(
            "onnxbert_http_refusals",
            "Requests refused by the HTTP layer before the app saw them (head too large, too slow; connections full)",
            ["reason"],
            registry=r,
        )
