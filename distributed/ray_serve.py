"""Ray Serve: the OpenAI `/v1/embeddings` contract of `onnxbert serve`, batched across requests by `@serve.batch`.

from ray import serve
from onnxbert.distributed.ray_serve import embeddings_app
serve.run(embeddings_app("minilm", replicas=2, threads=2), route_prefix="/v1/embeddings")

Ray's HTTP proxy reads a request body as fast as it arrives, with no limit, whether or not a replica reads it; start
Ray with RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH=onnxbert.distributed.ray_serve:proxy_middlewares so that each
proxy answers 413 past the payload limit itself (ProxyBodyLimit).
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError
from ray import serve
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from onnxbert.runtime.pooling import normalize as l2_normalize
from onnxbert.runtime.tokenize import Tokenized
from onnxbert.serve.batcher import split_rows
from onnxbert.serve.core import (
    ApiError,
    OpenAIRequest,
    check_dimensions,
    check_inputs,
    error_body,
    openai_body,
    tokenize_off_loop,
    unauthorized,
)
from onnxbert.serve.settings import ServerSettings, check_api_key

__all__ = ["EmbeddingDeployment", "ProxyBodyLimit", "embeddings_app", "proxy_middlewares"]


_BATCH = 32  # requests per Encoder call


def _error(error: ApiError) -> JSONResponse:
    body = error_body("/v1/embeddings", error.status, error.message, error.kind)
    return JSONResponse(body, status_code=error.status, headers=error.headers)


def _too_large(limit: int) -> ApiError:
    return ApiError(413, f"payload exceeds the {limit}-byte limit", "PayloadTooLarge")


async def _body(request: Request, limit: int) -> bytes:
    """The request's body, or a 413 ApiError as soon as it (declared or as it arrives) passes `limit` bytes."""
    declared = request.headers.get("content-length", "")
    too_large = _too_large(limit)
    if declared.isdigit() and int(declared) > limit:
        raise too_large
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
    return b"".join(chunks)


class ProxyBodyLimit:
    """ASGI middleware for Ray Serve's HTTP proxy: 413 once a request body, declared or as it arrives, passes `limit`.

    The proxy puts every body message it receives on an unbounded queue for the replica to fetch, so a body is read
    at the client's speed even while the request waits for a replica: with the replicas' places held, one chunked
    1.5 GB body took the proxy from 201 MB to 1,717 MB. Past the limit the proxy's app sees the client disconnect
    (it stops reading and cancels the request) and the client gets the 413 in the error shape of its path.
    """

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Pass the request on with its body counted; refuse it at once when its declared size is over."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = [value for name, value in scope["headers"] if name.lower() == b"content-length"]
        if any(not value.strip().isdigit() or int(value) > self.limit for value in declared):
            await self._refuse(scope, send)
            return
        received, answered, refused = 0, False, False

        async def counted() -> Message:
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    refused = True
                    if not answered:  # a reply already under way is the app's to finish
                        await self._refuse(scope, send)
                    return {"type": "http.disconnect"}
            return message

        async def sent(message: Message) -> None:
            nonlocal answered
            if refused and not answered:
                return  # the 413 went out; what the app answers a disconnected request is dropped
            answered = True
            await send(message)

        await self.app(scope, counted, sent)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        error = _too_large(self.limit)
        body = error_body(scope.get("path", ""), error.status, error.message, error.kind)
        await JSONResponse(body, status_code=error.status, headers={"connection": "close"})(scope, _no_body, send)


async def _no_body() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


def proxy_middlewares() -> list[Middleware]:
    """Ray Serve's proxy hook (RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH): ProxyBodyLimit on every route.

    The limit is $ONNXBERT_PROXY_PAYLOAD_LIMIT bytes, by default the server's payload limit.
    """
    text = os.environ.get("ONNXBERT_PROXY_PAYLOAD_LIMIT", str(ServerSettings.payload_limit))
    if not text.isdigit() or int(text) < 1:
        raise ValueError(f"ONNXBERT_PROXY_PAYLOAD_LIMIT={text!r} must be a positive number of bytes")
    return [Middleware(ProxyBodyLimit, limit=int(text))]


# Ray's default of 5 requests a replica would cap every @serve.batch at 5; two batches' worth lets one run while the
# next fills. Requests waiting for a replica are bounded as `onnxbert serve` bounds its own (503 past them).
@serve.deployment(max_ongoing_requests=2 * _BATCH, max_queued_requests=ServerSettings.max_concurrent_requests)
class EmbeddingDeployment:
    """One Encoder per replica; ORT threads = the replica's CPUs; the blocking ORT call runs in a thread.

    The limits of `onnxbert serve` (ServerSettings' defaults): inputs per request, characters per text, body bytes;
    with `api_key`, its `Authorization: Bearer KEY` check (401, before the body is read).
    """

    def __init__(
        self,
        model_dir: str,
        threads: int = 1,
        model_name: str | None = None,
        max_inputs: int = ServerSettings.max_client_batch,
        max_text_chars: int = ServerSettings.max_text_chars,
        payload_limit: int = ServerSettings.payload_limit,
        api_key: str | None = None,
    ) -> None:
        from onnxbert.runtime import Encoder

        if api_key is not None:
            check_api_key(api_key)
        self.api_key = api_key
        self.encoder = Encoder(model_dir, provider="cpu", threads=threads, spinning=False)
        self.model_name = model_name or Path(model_dir).name
        self.max_inputs, self.max_text_chars, self.payload_limit = max_inputs, max_text_chars, payload_limit

    @serve.batch(max_batch_size=_BATCH, batch_wait_timeout_s=0.002)  # type: ignore[untyped-decorator]
    async def _embed(self, requests: list[Tokenized]) -> list[np.ndarray]:
        merged = Tokenized.concat(requests)  # tokenized once, at admission, as in `onnxbert serve`
        vectors = l2_normalize(await asyncio.to_thread(self.encoder.embed_tokens, merged))
        return split_rows(vectors, [len(tokens) for tokens in requests])

    async def __call__(self, request: Request) -> Any:
        """POST the body of OpenAI's embeddings API -> the same response as `onnxbert serve`."""
        try:
            if denied := unauthorized(request.headers.get("authorization", ""), self.api_key):
                raise denied
            body = OpenAIRequest.model_validate_json(await _body(request, self.payload_limit))
            check_dimensions(body.dimensions, self.encoder.hidden_size)
            texts = check_inputs(body.input, max_inputs=self.max_inputs, max_chars=self.max_text_chars, field="input")
            tokens = await tokenize_off_loop(self.encoder, texts, truncate=True, field="input")
        except ValidationError as error:
            details = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in error.errors())
            return _error(ApiError(422, f"invalid request: {details}", "Validation"))
        except ApiError as error:
            return _error(error)
        vectors = await self._embed(tokens)
        return openai_body(vectors, tokens, body.model or self.model_name, body.encoding_format)


def embeddings_app(
    model_dir: str | Path,
    *,
    replicas: int = 1,
    threads: int = 1,
    model_name: str | None = None,
    api_key: str | None = None,
    max_inputs: int = ServerSettings.max_client_batch,
    max_text_chars: int = ServerSettings.max_text_chars,
    payload_limit: int = ServerSettings.payload_limit,
) -> Any:
    """A bound Serve application: `replicas` replicas of `threads` CPUs each; `api_key` as `onnxbert serve --api-key`.

    The limits are `onnxbert serve`'s --max-client-batch, --max-text-chars and --payload-limit, checked as the server
    checks them. An empty or non-printable key, or a limit that is not a positive int, is refused before deploying.
    """
    # the server's own checks of the key and the limits, before anything is deployed
    ServerSettings(
        api_key=api_key, max_client_batch=max_inputs, max_text_chars=max_text_chars, payload_limit=payload_limit
    )
    return EmbeddingDeployment.options(  # type: ignore[attr-defined]
        num_replicas=replicas, ray_actor_options={"num_cpus": threads}
    ).bind(
        str(model_dir),
        threads=threads,
        model_name=model_name,
        api_key=api_key,
        max_inputs=max_inputs,
        max_text_chars=max_text_chars,
        payload_limit=payload_limit,
    )
