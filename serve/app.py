"""The ASGI app: OpenAI- and TEI-compatible endpoints in front of one Encoder and its dynamic batcher."""

from __future__ import annotations

import asyncio
import gc
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from onnxbert.runtime import Encoder, Pooling
from onnxbert.runtime.tokenize import Tokenized

from .batcher import Batcher, Job
from .core import (
    ApiError,
    EmbedRequest,
    OpenAIRequest,
    State,
    embed_answer,
    error_body,
    json_in_slices,
    openai_answer,
    run,
    tokenize,
)
from .guard import Guard
from .settings import ServerSettings

__all__ = ["create_app"]


class EmbedAllRequest(BaseModel):
    inputs: str | list[str]
    truncate: bool = False


class TokenizeRequest(BaseModel):
    inputs: str | list[str]
    add_special_tokens: bool = True


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
            packing=settings.packing,
            spinning=settings.spinning,
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
    # What start-up made lives as long as the process: the collector's full passes, which hold the event loop,
    # skip it from now on (a full pass over it: ~33 ms with MiniLM loaded).
    gc.freeze()
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

    app = _GuardedApp(title="onnxbert", version="1", lifespan=lifespan)
    app.state.onnxbert = state
    _install_errors(app, state)
    _install_routes(app, state)
    app.guard = Guard(app.stack, state, frozenset(getattr(route, "path", "") for route in app.routes))
    return app


class _GuardedApp(FastAPI):
    """FastAPI with Guard in front of its whole middleware stack, not inside it.

    Guard's fast path then skips FastAPI's own layers too (server-error, telemetry and body-limit middleware, each
    wrapping send and receive), saving event-loop CPU per request; everything else goes through the full stack.
    """

    guard: Guard

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.guard(scope, receive, send)

    async def stack(self, scope: Scope, receive: Receive, send: Send) -> None:
        """FastAPI's own entry point: its middleware, exception handlers and routes."""
        await super().__call__(scope, receive, send)


_KINDS = {400: "BadRequest", 404: "NotFound", 405: "MethodNotAllowed"}
_UNPARSED = "the body is not valid JSON (UTF-8 text, nested no deeper than a parser allows)"


def _install_errors(app: FastAPI, state: State) -> None:
    @app.exception_handler(ApiError)
    async def api_error(request: Request, error: ApiError) -> JSONResponse:
        body = error_body(request.url.path, error.status, error.message, error.kind)
        return JSONResponse(body, status_code=error.status, headers=error.headers)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, error: StarletteHTTPException) -> JSONResponse:
        # FastAPI's own 400 (a body that is not JSON), 404 and 405, in the endpoint family's error shape
        kind = _KINDS.get(error.status_code, "BadRequest")
        message = _UNPARSED if error.status_code == 400 else str(error.detail)  # FastAPI's 400: body unparseable
        body = error_body(request.url.path, error.status_code, message, kind)
        return JSONResponse(body, status_code=error.status_code, headers=getattr(error, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, error: RequestValidationError) -> JSONResponse:
        details = "; ".join(f"{'.'.join(str(p) for p in e['loc'][1:]) or 'body'}: {e['msg']}" for e in error.errors())
        body = error_body(request.url.path, 422, f"invalid request: {details}", "Validation")
        return JSONResponse(body, status_code=422)


def _install_routes(app: FastAPI, state: State) -> None:
    _install_embedding_routes(app, state)
    _install_operations_routes(app, state)


def _install_embedding_routes(app: FastAPI, state: State) -> None:
    """The model's work: /v1/embeddings, /embed, /embed_all, /tokenize."""

    @app.post(
        "/v1/embeddings",
        summary="OpenAI-compatible embeddings (L2-normalized, the model's pooling)",
        response_model=dict[str, Any],
    )
    async def openai_embeddings(body: OpenAIRequest, request: Request) -> Response:
        answer = await openai_answer(
            state,
            request.receive,
            body.input,
            model=body.model,
            encoding_format=body.encoding_format,
            dimensions=body.dimensions,
        )
        return _json(answer)

    @app.post("/embed", summary="TEI-compatible pooled embeddings", response_model=list[list[float]])
    async def embed(body: EmbedRequest, request: Request) -> Response:
        answer = await embed_answer(
            state, request.receive, body.inputs, normalize=body.normalize, truncate=body.truncate, pooling=body.pooling
        )
        return _json(answer)

    @app.post("/embed_all", summary="TEI-compatible token-level hidden states", response_model=list[list[list[float]]])
    async def embed_all(body: EmbedAllRequest, request: Request) -> Response:
        tokens = await tokenize(state, body.inputs, truncate=body.truncate)
        total, limit = int(tokens.lengths.sum()), state.settings.max_embed_all_tokens
        if total > limit:  # every token is a row of hidden floats in the answer: ~10 bytes of JSON per float
            message = f"{total} tokens exceed max_embed_all_tokens={limit} per /embed_all request: send fewer texts"
            raise ApiError(422, message, "Validation")
        rows = await run(state, request.receive, Job(True, Pooling.MEAN, tokens))
        return _json(await json_in_slices(rows, rows=64))

    @app.post("/tokenize", summary="TEI-compatible tokenization", response_model=list[list[dict[str, Any]]])
    async def tokenize_text(body: TokenizeRequest) -> Response:
        tokens = await tokenize(state, body.inputs, truncate=True, offsets=True)
        return _json(await json_in_slices(_token_rows(tokens, special=body.add_special_tokens)))


def _token_rows(tokens: Tokenized, *, special: bool) -> Iterator[list[dict[str, Any]]]:
    """TEI's /tokenize answer: per text, each token's id, string and character span (None for special tokens).

    One text at a time, so that `json_in_slices` lets the event loop run between texts.
    """
    assert tokens.offsets is not None  # tokenized with offsets, which come with the token strings
    assert tokens.tokens is not None
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
        yield row if special else [r for r in row if not r["special"]]


def _install_operations_routes(app: FastAPI, state: State) -> None:
    """What orchestrators and operators read: /health, /info, /metrics."""

    @app.get("/health", summary="200 once a real forward pass has run; 503 while loading or draining")
    async def health() -> JSONResponse:
        if state.ready and not state.draining:
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "unavailable", "error": state.unready()}, status_code=503)

    @app.get("/info", summary="model, variant, provider and limits")
    async def info() -> dict[str, Any]:
        settings = state.settings
        limits = {
            "max_batch_tokens": settings.max_batch_tokens,
            "max_batch_texts": settings.max_batch_texts,
            "max_wait_ms": settings.max_wait_ms,
            "refill_gap_ms": settings.refill_gap_ms,
            "max_client_batch_size": settings.max_client_batch,
            "max_queue": settings.max_queue,
            "max_queue_tokens": settings.max_queue_tokens,
            "max_text_chars": settings.max_text_chars,
            "max_embed_all_tokens": settings.max_embed_all_tokens,
            "payload_limit": settings.payload_limit,
            "max_concurrent_requests": settings.max_concurrent_requests,
            "max_connections": settings.max_connections,
            "max_header_bytes": settings.max_header_bytes,
            "max_headers": settings.max_headers,
            "header_timeout_s": settings.header_timeout_s,
            "body_timeout_s": settings.body_timeout_s,
            "idle_timeout_s": settings.idle_timeout_s,
        }
        model = {"model": settings.model_name or state.directory.name, "ready": state.ready}
        return {**model, **_encoder_info(state.encoder if state.ready else None), **limits}

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics() -> Response:
        if state.batcher is not None:
            state.metrics.queue_texts.set(state.batcher.queued_texts)
        return Response(generate_latest(state.metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _encoder_info(encoder: Encoder | None) -> dict[str, Any]:
    """What /info says of the loaded Encoder (every field None while it loads)."""
    fields = ("variant", "provider", "packing", "threads", "spinning", "hidden_size", "default_pooling", "poolings")
    if encoder is None:
        return dict.fromkeys(("source", *fields, "max_input_length"))
    found = {name: getattr(encoder, name) for name in fields}
    return {"source": encoder.manifest.source.get("model"), **found, "max_input_length": encoder.max_length}


def _json(content: bytes) -> Response:
    return Response(content, media_type="application/json")
