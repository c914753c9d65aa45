"""onnxbert.distributed: corpus embedding (files in, Parquet out, resumable) in-process or on Ray Data.

onnxbert embed-corpus my-model docs/*.jsonl --output vectors/            # in-process
onnxbert embed-corpus my-model docs/*.jsonl --output vectors/ --ray      # a local Ray, or --ray ADDRESS
"""

from __future__ import annotations

try:
    import pyarrow  # noqa: F401
except ImportError as _error:  # pragma: no cover - exercised only in an install without the extra
    raise ImportError("onnxbert embed-corpus needs pyarrow: pip install 'onnxbert[ray]'") from _error

from .corpus import CorpusJob, embed_corpus, read_texts
from .ray_data import EncoderActor, embed_dataset

__all__ = ["CorpusJob", "EncoderActor", "embed_corpus", "embed_dataset", "read_texts"]
