"""Ray Serve: the OpenAI `/v1/embeddings` contract of `onnxbert serve`, batched across requests by `@serve.batch`.

from ray import serve
from onnxbert.distributed.ray_serve import embeddings_app
serve.run(embeddings_app("minilm", replicas=2, threads=2), route_prefix="/v1/embeddings")
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

from onnxbert.runtime.pooling import normalize as l2_normalize
from onnxbert.runtime.tokenize import Tokenized
from onnxbert.serve.batcher import split_rows
from onnxbert.serve.core import ApiError, OpenAIRequest, admit, error_body, openai_body

__all__ = ["EmbeddingDeployment", "embeddings_app"]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse(error_body("/v1/embeddings", status, message, "Validation"), status_code=status)


@serve.deployment
class EmbeddingDeployment:
    """One Encoder per replica; ORT threads = the replica's CPUs; the blocking ORT call runs in a thread."""

    def __init__(self, model_dir: str, threads: int = 1, model_name: str | None = None, max_inputs: int = 64) -> None:
        from onnxbert.runtime import Encoder

        self.encoder = Encoder(model_dir, provider="cpu", threads=threads, spinning=False)
        self.model_name = model_name or Path(model_dir).name
        self.max_inputs = max_inputs

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)  # type: ignore[untyped-decorator]
    async def _embed(self, requests: list[Tokenized]) -> list[np.ndarray]:
        merged = Tokenized.concat(requests)  # tokenized once, at admission, as in `onnxbert serve`
        vectors = l2_normalize(await asyncio.to_thread(self.encoder.embed_tokens, merged))
        return split_rows(vectors, [len(tokens) for tokens in requests])

    async def __call__(self, request: Request) -> Any:
        """POST the body of OpenAI's embeddings API -> the same response as `onnxbert serve`."""
        try:
            body = OpenAIRequest.model_validate_json(await request.body())
        except ValidationError as error:
            details = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in error.errors())
            return _error(422, f"invalid request: {details}")
        try:
            tokens = admit(self.encoder, body.input, max_inputs=self.max_inputs, truncate=True, field="input")
        except ApiError as error:
            return _error(error.status, error.message)
        vectors = await self._embed(tokens)
        return openai_body(vectors, tokens, body.model or self.model_name, body.encoding_format)


def embeddings_app(model_dir: str | Path, *, replicas: int = 1, threads: int = 1, model_name: str | None = None) -> Any:
    """A bound Serve application: `replicas` replicas of `threads` CPUs each."""
    return EmbeddingDeployment.options(  # type: ignore[attr-defined]
        num_replicas=replicas, ray_actor_options={"num_cpus": threads}
    ).bind(str(model_dir), threads=threads, model_name=model_name)
