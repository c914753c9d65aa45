"""Workloads: fixed shapes (batch x tokens) and real text (STS Benchmark dev sentences)."""

from __future__ import annotations

from dataclasses import dataclass

from onnxbert.export.sts import sts_pairs, unique_sentences

SHAPES = ((1, 16), (1, 128), (8, 128), (32, 128), (1, 512))
QUICK_SHAPES = ((1, 16), (8, 128), (1, 512))


@dataclass(frozen=True)
class Workload:
    name: str
    texts: list[str]
    kind: str  # "shape" (one call = one batch) or "text" (one call = the whole corpus, batched by each system)


def shape_texts(batch: int, tokens: int) -> list[str]:
    """Texts that tokenize to exactly `tokens` ids with the uncased BERT vocabulary: [CLS] + words + [SEP]."""
    return [" ".join(["hello"] * (tokens - 2))] * batch


def sts_dev() -> tuple[list[str], list[str], list[float]]:
    """STS-B dev pairs (one reader for export's int8 gate and the benchmarks)."""
    pairs = sts_pairs("dev")
    return pairs.left, pairs.right, pairs.scores


def sentences(limit: int | None) -> list[str]:
    """Unique STS-B dev sentences in file order (the real-text workload)."""
    return unique_sentences(sts_pairs("dev"), limit)


def workloads(quick: bool, text_limit: int | None = None) -> list[Workload]:
    """Shapes, then real text (all STS-B dev sentences, or the first `text_limit`; 256 with quick)."""
    shapes = QUICK_SHAPES if quick else SHAPES
    found = [Workload(f"{b}x{t}", shape_texts(b, t), "shape") for b, t in shapes]
    found.append(Workload("sts-dev", sentences(256 if quick else text_limit), "text"))
    return found
