"""The ASGI app: OpenAI- and TEI-compatible endpoints in front of one Encoder and its dynamic batcher."""

from __future__ import annotations

import asyncio
import base64
import hmac
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from onnxbert.runtime import Encoder, Pooling
from onnxbert.runtime.pooling import normalize as l2_normalize
from onnxbert.runtime.tokenize import Tokenized

from .batcher import Batcher, Job, QueueFullError
from .metrics import Metrics
from .settings import ServerSettings

__all__ = ["OpenAIRequest", "create_app", "error_body", "openai_body"]


class ApiError(HTTPException):
    """An error answered with `status` and a JSON body naming what was wrong.

    An HTTPException so that FastAPI passes it through untouched when it is raised while the body is read.
    """

    def __init__(self, status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=status, detail=message, headers=headers)
        self.status, self.message, self.kind = status, message, kind
        self.headers = headers or {}


class OpenAIRequest(BaseModel):
    """The body of OpenAI's embeddings API (also accepted by the Ray Serve deployment)."""

    input: str | list[str] = Field(description="a text or a list of texts (token arrays are not supported)")
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


class EmbedRequest(BaseModel):
    inputs: str | list[str]
    normalize: bool = True
    truncate: bool = False
    pooling: Literal["pooler", "cls", "mean", "max"] | None = None


class EmbedAllRequest(BaseModel):
    inputs: str | list[str]
    truncate: bool = False


class TokenizeRequest(BaseModel):
    inputs: str | list[str]
    add_special_tokens: bool = True


@dataclass
class State:
    """Everything the endpoints share; created per app, never global."""

    directory: Path
    settings: ServerSettings
    metrics: Metrics = field(default_factory=Metrics)
    encoder: Encoder | None = None
    batcher: Batcher | None = None
    ready: bool = False
    draining: bool = False
    load_error: str | None = None
    on_load_error: Callable[[str], None] | None = None  # `onnxbert serve` stops the process; embedders may not


async def _load(state: State) -> None:
    """Load the model and run one real forward pass before /health says ready."""
    settings = state.settings
    try:
        encoder = await asyncio.to_thread(
            Encoder,
            state.directory,
            variant=settings.variant,
            provider=settings.provider,
            threads=settings.threads,
            max_batch_size=settings.max_run_texts,
            spinning=False,  # the event loop shares these cores; spinning inference threads would starve it
        )
        await asyncio.to_thread(encoder.embed, ["warm-up forward pass"])
    except Exception as error:  # reported by /health and every endpoint, and to on_load_error; not swallowed
        state.load_error = f"{type(error).__name__}: {error}"
        if state.on_load_error is not None:
            state.on_load_error(state.load_error)
        return
    state.encoder = encoder
    state.batcher = Batcher(encoder, settings, state.metrics)
    state.batcher.start()
    state.ready = True


def create_app(directory: str | Path, settings: ServerSettings | None = None) -> FastAPI:
    """An app serving the model directory; the model loads in the background once the server starts."""
    state = State(Path(directory), settings or ServerSettings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loading = asyncio.create_task(_load(state))
        yield
        state.draining = True
        await loading
        if state.batcher is not None:
            await state.batcher.stop()  # in-flight and queued requests finish first

    app = FastAPI(title="onnxbert", version="1", lifespan=lifespan)
    app.state.onnxbert = state
    _install_errors(app, state)
    _install_routes(app, state)
    app.add_middleware(Guard, state=state)
    return app


def error_body(path: str, status: int, message: str, kind: str) -> dict[str, Any]:
    """OpenAI's error shape under /v1/, TEI's elsewhere."""
    if path.startswith("/v1/"):
        return {"error": {"message": message, "type": kind, "code": status}}
    return {"error": message, "error_type": kind}


def _install_errors(app: FastAPI, state: State) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        body = error_body(request.url.path, error.status, error.message, error.kind)
        return JSONResponse(body, status_code=error.status, headers=error.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        details = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in error.errors())
        body = error_body(request.url.path, 422, f"invalid request: {details}", "Validation")
        return JSONResponse(body, status_code=422)


_OPEN_PATHS = frozenset({"/health", "/metrics", "/docs", "/openapi.json", "/redoc"})


class Guard:
    """Pure ASGI middleware: API key, payload limit and readiness checked before any endpoint; metrics after.

    Pure ASGI (not BaseHTTPMiddleware) so that the endpoint still sees the client's disconnect message.
    """

    def __init__(self, app: ASGIApp, state: State) -> None:
        self.app, self.state = app, state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, start, status = scope["path"], time.perf_counter(), [500]

        async def send_tracked(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        error = self._refuse(scope)
        if error is not None:
            body = error_body(path, error.status, error.message, error.kind)
            await JSONResponse(body, error.status, error.headers)(scope, receive, send_tracked)
        else:
            await self.app(scope, self._limited(receive), send_tracked)
        self.state.metrics.requests.labels(path, str(status[0])).inc()
        self.state.metrics.latency.labels(path).observe(time.perf_counter() - start)

    def _refuse(self, scope: Scope) -> ApiError | None:
        state, path = self.state, scope["path"]
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        if state.settings.api_key and path not in _OPEN_PATHS:
            offered = headers.get("authorization", "")
            if not hmac.compare_digest(offered.encode(), f"Bearer {state.settings.api_key}".encode()):
                return ApiError(401, "missing or wrong API key: send 'Authorization: Bearer KEY'", "Unauthorized")
        if path in _OPEN_PATHS or scope["method"] != "POST":
            return None
        declared, limit = headers.get("content-length", ""), state.settings.payload_limit
        if declared.isdigit() and int(declared) > limit:
            return ApiError(413, f"payload of {declared} bytes exceeds the {limit}-byte limit", "PayloadTooLarge")
        if not state.ready or state.draining:
            return ApiError(503, _unready(state), "Unhealthy", {"Retry-After": "1"})
        return None

    def _limited(self, receive: Receive) -> Receive:
        """A chunked body (no content-length) is measured as it arrives."""
        limit, received = self.state.settings.payload_limit, [0]

        async def receive_limited() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                received[0] += len(message.get("body", b""))
                if received[0] > limit:
                    raise ApiError(413, f"payload exceeds the {limit}-byte limit", "PayloadTooLarge")
            return message

        return receive_limited


def _unready(state: State) -> str:
    if state.load_error:
        return f"model failed to load: {state.load_error}"
    return "draining: the server is shutting down" if state.draining else "loading: the model is not ready yet"


async def _tokenize(state: State, inputs: str | list[str], *, truncate: bool, offsets: bool = False) -> Tokenized:
    texts = [inputs] if isinstance(inputs, str) else inputs
    if not texts:
        raise ApiError(400, "inputs is empty: send at least one text", "Validation")
    if len(texts) > state.settings.max_client_batch:
        raise ApiError(
            422, f"{len(texts)} inputs exceed max_client_batch={state.settings.max_client_batch}", "Validation"
        )
    assert state.encoder is not None  # guarded by readiness
    start = time.perf_counter()
    try:  # inline: a request's texts tokenize in microseconds, less than a thread hand-off costs
        tokens = state.encoder.tokenize(texts, truncate=truncate, offsets=offsets)
    except ValueError as error:  # a lone surrogate, or a text over max_length with truncate=false
        raise ApiError(422, str(error).replace("texts[", "inputs["), "Validation") from None
    state.metrics.tokenize_seconds.observe(time.perf_counter() - start)
    return tokens


async def _run(state: State, request: Request, job: Job) -> Any:
    """Queue the job and wait for it, or for the client to go away (then its place in the queue is freed)."""
    assert state.batcher is not None
    try:
        state.batcher.submit(job)
    except QueueFullError as error:
        raise ApiError(429, str(error), "Overloaded", {"Retry-After": str(error.retry_after)}) from None
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({job.future, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
    if not job.future.done():
        state.batcher.withdraw(job)
        raise ApiError(499, "client closed the request", "ClientClosed")
    return job.future.result()


async def _disconnected(request: Request) -> None:
    """Returns when the client disconnects (the body is already read, so receive() only reports that)."""
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _install_routes(app: FastAPI, state: State) -> None:
    def encoder() -> Encoder:
        assert state.encoder is not None
        return state.encoder

    @app.post(
        "/v1/embeddings",
        summary="OpenAI-compatible embeddings (L2-normalized, the model's pooling)",
        response_model=dict[str, Any],
    )
    async def openai_embeddings(body: OpenAIRequest, request: Request) -> Response:
        if body.dimensions is not None and body.dimensions != encoder().hidden_size:
            raise ApiError(
                422, f"dimensions={body.dimensions}: this model returns {encoder().hidden_size}", "Validation"
            )
        tokens = await _tokenize(state, body.input, truncate=True)
        vectors = await _run(state, request, Job(False, Pooling(encoder().default_pooling), tokens))
        name = body.model or state.settings.model_name or state.directory.name
        return _json(openai_body(l2_normalize(vectors), tokens, name, body.encoding_format, arrays=True))

    @app.post("/embed", summary="TEI-compatible pooled embeddings", response_model=list[list[float]])
    async def embed(body: EmbedRequest, request: Request) -> Response:
        tokens = await _tokenize(state, body.inputs, truncate=body.truncate)
        vectors = await _run(state, request, Job(False, Pooling(body.pooling or encoder().default_pooling), tokens))
        return _json(l2_normalize(vectors) if body.normalize else vectors)

    @app.post("/embed_all", summary="TEI-compatible token-level hidden states", response_model=list[list[list[float]]])
    async def embed_all(body: EmbedAllRequest, request: Request) -> Response:
        tokens = await _tokenize(state, body.inputs, truncate=body.truncate)
        rows = await _run(state, request, Job(True, Pooling.MEAN, tokens))
        return _json(list(rows))

    @app.post("/tokenize", summary="TEI-compatible tokenization")
    async def tokenize(body: TokenizeRequest) -> list[list[dict[str, Any]]]:
        tokens = await _tokenize(state, body.inputs, truncate=True, offsets=True)
        assert tokens.offsets is not None
        assert tokens.tokens is not None
        out = []
        for ids, spans, strings in zip(tokens.ids, tokens.offsets, tokens.tokens, strict=True):
            row = [
                {
                    "id": int(i),
                    "text": t,
                    "special": s == (0, 0),
                    "start": None if s == (0, 0) else s[0],
                    "stop": None if s == (0, 0) else s[1],
                }
                for i, s, t in zip(ids, spans, strings, strict=True)
            ]
            out.append(row if body.add_special_tokens else [r for r in row if not r["special"]])
        return out

    @app.get("/health", summary="200 once a real forward pass has run; 503 while loading or draining")
    async def health() -> JSONResponse:
        if state.ready and not state.draining:
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "unavailable", "error": _unready(state)}, status_code=503)

    @app.get("/info", summary="model, variant, provider and limits")
    async def info() -> dict[str, Any]:
        manifest = encoder().manifest if state.ready else None
        return {
            "model": state.settings.model_name or state.directory.name,
            "source": manifest.source.get("model") if manifest else None,
            "ready": state.ready,
            "variant": encoder().variant if state.ready else None,
            "provider": encoder().provider if state.ready else None,
            "hidden_size": encoder().hidden_size if state.ready else None,
            "max_input_length": encoder().max_length if state.ready else None,
            "default_pooling": encoder().default_pooling if state.ready else None,
            "max_batch_tokens": state.settings.max_batch_tokens,
            "max_client_batch_size": state.settings.max_client_batch,
            "max_queue": state.settings.max_queue,
        }

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        if state.batcher is not None:
            state.metrics.queue_texts.set(state.batcher.queued_texts)
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _json(content: Any) -> Response:
    """Serialize directly, numpy arrays included (orjson).

    FastAPI would validate every float through the response model, and json.dumps over .tolist() was half the
    event loop's time under load (py-spy, MiniLM, 32 clients).
    """
    return Response(orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


def openai_body(
    vectors: np.ndarray, tokens: Tokenized, model: str, encoding_format: str, *, arrays: bool = False
) -> dict[str, Any]:
    """The OpenAI embeddings response for `vectors` (one row per input) and the tokens they were made from.

    `arrays`: float vectors stay numpy arrays, for a serializer that writes them directly (orjson); else lists.
    """
    data = [
        {"object": "embedding", "index": i, "embedding": _encode_vector(v, encoding_format, arrays)}
        for i, v in enumerate(vectors)
    ]
    used = int(tokens.lengths.sum())
    return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": used, "total_tokens": used}}


def _encode_vector(vector: np.ndarray, encoding: str, arrays: bool) -> np.ndarray | list[float] | str:
    if encoding == "base64":  # what the OpenAI client decodes: little-endian float32 bytes
        return base64.b64encode(vector.astype("<f4").tobytes()).decode("ascii")
    return vector if arrays else vector.tolist()
