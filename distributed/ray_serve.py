"""Ray Serve: the OpenAI `/v1/embeddings` contract of `onnxbert serve`, batched across requests by `@serve.batch`.

from ray import serve
from onnxbert.distributed.ray_serve import embeddings_app
serve.run(embeddings_app("minilm", replicas=2, threads=2), route_prefix="/v1/embeddings")
"""

from __future__ import annotations

import asyncio
import itertools
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse

__all__ = ["EmbeddingDeployment", "embeddings_app"]


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "Validation", "code": status}}, status_code=status)


@serve.deployment
class EmbeddingDeployment:
    """One Encoder per replica; ORT threads = the replica's CPUs; the blocking ORT call runs in a thread."""

    def __init__(self, model_dir: str, threads: int = 1, model_name: str | None = None, max_inputs: int = 64) -> None:
        from onnxbert.runtime import Encoder

        self.encoder = Encoder(model_dir, provider="cpu", threads=threads, spinning=False)
        self.model_name = model_name or Path(model_dir).name
        self.max_inputs = max_inputs

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)  # type: ignore[untyped-decorator]
    async def _embed(self, requests: list[list[str]]) -> list[np.ndarray]:
        flat = [text for texts in requests for text in texts]
        vectors = await asyncio.to_thread(self.encoder.embed, flat, normalize=True)
        bounds = np.cumsum([0] + [len(texts) for texts in requests])
        return [vectors[a:b] for a, b in itertools.pairwise(bounds)]

    async def __call__(self, request: Request) -> Any:
        """POST {"input": str | [str], "model"?, "encoding_format"?: "float"} -> OpenAI embeddings response."""
        try:
            body = await request.json()
        except ValueError:
            return _error(422, "invalid request: body is not JSON")
        inputs = body.get("input") if isinstance(body, dict) else None
        texts = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
            return _error(422, "invalid request: input must be a string or a list of strings")
        if not texts:
            return _error(400, "input is empty: send at least one text")
        if len(texts) > self.max_inputs:
            return _error(422, f"{len(texts)} inputs exceed max_inputs={self.max_inputs}")
        if body.get("encoding_format", "float") != "float":
            return _error(422, "encoding_format: only 'float' is served by the Ray Serve deployment")
        try:
            used = int(sum(len(ids) for ids in self.encoder.tokenize(texts).ids))
        except ValueError as error:
            return _error(422, str(error).replace("texts[", "input["))
        vectors = await self._embed(texts)
        data = [{"object": "embedding", "index": i, "embedding": v.tolist()} for i, v in enumerate(vectors)]
        name = body.get("model") or self.model_name
        return {"object": "list", "data": data, "model": name, "usage": {"prompt_tokens": used, "total_tokens": used}}


def embeddings_app(model_dir: str | Path, *, replicas: int = 1, threads: int = 1, model_name: str | None = None) -> Any:
    """A bound Serve application: `replicas` replicas of `threads` CPUs each."""
    return EmbeddingDeployment.options(  # type: ignore[attr-defined]
        num_replicas=replicas, ray_actor_options={"num_cpus": threads}
    ).bind(str(model_dir), threads=threads, model_name=model_name)
