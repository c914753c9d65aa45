"""onnxbert.runtime: BERT-family encoders on ONNX Runtime and Rust tokenizers. No torch, transformers or onnx.

from onnxbert.runtime import Encoder
encoder = Encoder("my-model")                  # a directory written by `onnxbert export`
vectors = encoder.embed(["Hello", "今天天气真好啊"], normalize=True)   # (2, hidden) float32
tokens = encoder.encode("Hello").last_hidden_state[0]               # (tokens, hidden)
"""

from __future__ import annotations

try:
    import onnxruntime as _onnxruntime  # noqa: F401  (fail here, with the fix, rather than deep in a call)
except ImportError as _error:  # pragma: no cover - exercised only in an install without the extra
    raise ImportError(
        "onnxbert.runtime needs ONNX Runtime: pip install 'onnxbert[cpu]' (or 'onnxbert[gpu]' for CUDA)"
    ) from _error

from .encoder import Encoder, EncoderOutput
from .errors import ModelDirectoryError, ProviderError
from .manifest import Manifest
from .pooling import Pooling
from .session import available_cpus

__all__ = [
    "Encoder",
    "EncoderOutput",
    "Manifest",
    "ModelDirectoryError",
    "Pooling",
    "ProviderError",
    "available_cpus",
]
