"""onnxbert.export: a BERT-family checkpoint -> a verified, fused ONNX model directory (fp32 / int8 / fp16).

from onnxbert.export import export_model
export_model(None, "minilm")            # the embedded all-MiniLM-L6-v2, fp32 + int8, verified
"""

from __future__ import annotations

try:
    import onnx  # noqa: F401
    import onnxruntime.transformers  # noqa: F401
    import torch  # noqa: F401
    import transformers  # noqa: F401
except ImportError as _error:  # pragma: no cover - exercised only in an install without the extra
    raise ImportError(
        f"onnxbert.export needs {_error.name}: pip install torch==2.13.0 --extra-index-url "
        "https://download.pytorch.org/whl/cpu && pip install 'onnxbert[export,cpu]' (torch first, from PyTorch's "
        "CPU index, so that pip does not fetch a CUDA build)"
    ) from _error

from .errors import ExportError, VerificationError
from .pipeline import ExportResult, export_model, parse_variants
from .source import DEFAULT_MODEL, SUPPORTED_MODEL_TYPES

__all__ = [
    "DEFAULT_MODEL",
    "SUPPORTED_MODEL_TYPES",
    "ExportError",
    "ExportResult",
    "VerificationError",
    "export_model",
    "parse_variants",
]
