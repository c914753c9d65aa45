"""onnxbert.serve: an ASGI server with dynamic batching in front of one Encoder (the `serve` extra).

onnxbert serve my-model --port 8080
curl -s localhost:8080/v1/embeddings -H 'content-type: application/json' -d '{"input": "今天天气真好啊"}'
"""

from __future__ import annotations

try:
    import fastapi  # noqa: F401
    import prometheus_client  # noqa: F401
    import uvicorn  # noqa: F401
except ImportError as _error:  # pragma: no cover - exercised only in an install without the extra
    raise ImportError(f"onnxbert serve needs {_error.name}: pip install 'onnxbert[serve]'") from _error

from .app import create_app
from .main import serve
from .settings import ServerSettings

__all__ = ["ServerSettings", "create_app", "serve"]
