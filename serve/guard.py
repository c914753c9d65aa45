"""Guard: the ASGI layer in front of the FastAPI app — API key, payload limit, readiness, metrics, and a fast path.

The fast path answers the two hot endpoints, POST /embed and POST /v1/embeddings, without FastAPI's routing and
pydantic validation when the body is ordinary JSON of the documented shape: at concurrency 32 those layers were about
a third of the event loop's samples (py-spy), and the event loop shares the inference threads' cores. Anything
unusual (another content type, bad JSON, unknown fields, wrong types) is replayed to the FastAPI route, so its
validation errors stay the canonical ones. Both paths call the same code in core.py.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, Literal, get_args, get_origin

import orjson
from pydantic import BaseModel
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from onnxbert.runtime.pooling import POOLINGS

from .core import (
    ApiError,
    EmbedRequest,
    OpenAIRequest,
    State,
    embed_answer,
    error_body,
    json_bytes,
    openai_answer,
    unauthorized,
)

__all__ = ["Guard"]

_OPEN_PATHS = frozenset({"/health", "/metrics", "/docs", "/openapi.json", "/redoc"})
_SOON = {"Retry-After": "1"}
_JSON_PATHS = frozenset({"/v1/embeddings", "/embed", "/embed_all", "/tokenize"})  # bodies are JSON


def _default(model: type[BaseModel], name: str) -> Any:
    return model.model_fields[name].default


def _choices(model: type[BaseModel], name: str) -> frozenset[Any]:
    """The values a Literal field (optionally `| None`) allows."""
    annotation = model.model_fields[name].annotation
    literal = next((a for a in get_args(annotation) if get_origin(a) is Literal), annotation)
    return frozenset(get_args(literal)) | ({None} if type(None) in get_args(annotation) else set())


_POOLINGS = frozenset({*POOLINGS, None})
_FORMATS = _choices(OpenAIRequest, "encoding_format")
_EMBED_DEFAULTS = {name: _default(EmbedRequest, name) for name in ("normalize", "truncate", "pooling")}
_OPENAI_DEFAULTS = {name: _default(OpenAIRequest, name) for name in ("model", "encoding_format", "dimensions")}
_HEADERS = frozenset({b"authorization", b"content-length", b"content-type"})  # all that Guard reads


def _texts(value: Any) -> bool:
    return isinstance(value, str) or (isinstance(value, list) and all(isinstance(v, str) for v in value))


def _optional(value: Any, kind: type) -> bool:
    return value is None or type(value) is kind  # exact: pydantic would coerce what this would wrongly refuse


def _embed_fields(data: dict[str, Any]) -> dict[str, Any] | None:
    """EmbedRequest's fields when they are plainly valid, else None (FastAPI decides)."""
    fields = {name: data.get(name, default) for name, default in _EMBED_DEFAULTS.items()}
    plain = (
        set(data) <= set(EmbedRequest.model_fields)
        and _texts(data.get("inputs"))
        and type(fields["normalize"]) is bool
        and type(fields["truncate"]) is bool
        and fields["pooling"] in _POOLINGS
    )
    return {"inputs": data.get("inputs"), **fields} if plain else None


def _openai_fields(data: dict[str, Any]) -> dict[str, Any] | None:
    """OpenAIRequest's fields (less `user`, which changes nothing) when plainly valid, else None."""
    fields = {name: data.get(name, default) for name, default in _OPENAI_DEFAULTS.items()}
    plain = (
        set(data) <= set(OpenAIRequest.model_fields)
        and _texts(data.get("input"))
        and _optional(fields["model"], str)
        and fields["encoding_format"] in _FORMATS
        and _optional(fields["dimensions"], int)
        and _optional(data.get("user"), str)
    )
    return {"inputs": data.get("input"), **fields} if plain else None


_FAST: dict[str, tuple[Callable[[dict[str, Any]], dict[str, Any] | None], Any]] = {
    "/embed": (_embed_fields, embed_answer),
    "/v1/embeddings": (_openai_fields, openai_answer),
}


class Guard:
    """Pure ASGI middleware: API key, payload limit and readiness checked before any endpoint; metrics after.

    Pure ASGI (not BaseHTTPMiddleware) so that the endpoint still sees the client's disconnect message.
    """

    def __init__(self, app: ASGIApp, state: State, paths: frozenset[str]) -> None:
        """`paths`: the app's routes; metrics label any other path `other`, so labels cannot grow without bound."""
        self.app, self.state, self.paths = app, state, paths
        self.in_flight = 0  # admitted requests not yet answered, open paths aside (max_concurrent_requests)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Refuse, answer on the fast path, or pass to the app; count the request either way."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path, start, status = scope["path"], time.perf_counter(), [0]

        async def send_tracked(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        raw = ((k.lower(), v) for k, v in scope["headers"])
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in raw if k in _HEADERS}
        counted = False
        try:
            error = self._refuse(scope, headers) or self._full(path)
            if error is not None:
                await _answer_error(send_tracked, path, error)
                return
            counted = path not in _OPEN_PATHS
            self.in_flight += counted
            if path in _FAST and scope["method"] == "POST" and _is_json(headers.get("content-type")):
                await self._fast(scope, self._limited(receive), send_tracked)
            else:
                await self.app(scope, self._limited(receive), send_tracked)
        except Exception:
            status[0] = status[0] or 500  # the server failed before it answered
            raise
        finally:
            self.in_flight -= counted
            endpoint = path if path in self.paths else "other"
            # Never answered and no error: the client left first (nginx's 499), not a server fault.
            self.state.metrics.requests.labels(endpoint, str(status[0] or 499)).inc()
            self.state.metrics.latency.labels(endpoint).observe(time.perf_counter() - start)

    async def _fast(self, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        chunks: list[bytes] = []
        try:
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return  # gone before its body arrived: nothing queued, nothing to answer
                chunks.append(message.get("body", b""))
                if not message.get("more_body", False):
                    break
        except ApiError as error:  # a chunked body over the payload limit
            await _answer_error(send, path, error)
            return
        body = b"".join(chunks)
        parse, answer = _FAST[path]
        try:
            data = orjson.loads(body)
        except orjson.JSONDecodeError:
            data = None
        fields = parse(data) if isinstance(data, dict) else None
        if fields is None:  # FastAPI's route gives the canonical answer, validation errors included
            await self.app(scope, _replay(body, receive), send)
            return
        try:
            content = await answer(self.state, receive, fields.pop("inputs"), **fields)
        except ApiError as error:
            await _answer_error(send, path, error)
            return
        await _send(send, 200, content, {})

    def _refuse(self, scope: Scope, headers: dict[str, str]) -> ApiError | None:
        state, path = self.state, scope["path"]
        if path in _OPEN_PATHS:
            return None
        if denied := unauthorized(headers.get("authorization", ""), state.settings.api_key):
            return denied
        if scope["method"] != "POST":
            return None
        kind = headers.get("content-type")
        if path in _JSON_PATHS and kind is not None and not _is_json(kind):
            return ApiError(
                415, f"content-type {kind!r} is not accepted: send application/json", "UnsupportedMediaType"
            )
        declared, limit = headers.get("content-length", ""), state.settings.payload_limit
        if declared.isdigit() and int(declared) > limit:
            return ApiError(413, f"payload of {declared} bytes exceeds the {limit}-byte limit", "PayloadTooLarge")
        if not state.ready or state.draining:
            return ApiError(503, state.unready(), "Unhealthy", _SOON)
        return None

    def _full(self, path: str) -> ApiError | None:
        """429 once max_concurrent_requests are in flight; /health, /metrics and the docs always answer."""
        limit = self.state.settings.max_concurrent_requests
        if path in _OPEN_PATHS or self.in_flight < limit:
            return None
        return ApiError(429, f"{limit} requests in flight (max_concurrent_requests)", "Overloaded", _SOON)

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


def _is_json(content_type: str | None) -> bool:
    return content_type is not None and content_type.split(";")[0].strip().lower() == "application/json"


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that hands over the body already read, then the client's own messages (its disconnect)."""
    pending = [{"type": "http.request", "body": body, "more_body": False}]

    async def replay() -> Message:
        return pending.pop() if pending else await receive()

    return replay


async def _answer_error(send: Send, path: str, error: ApiError) -> None:
    body = json_bytes(error_body(path, error.status, error.message, error.kind))
    await _send(send, error.status, body, dict(error.headers or {}))


async def _send(send: Send, status: int, body: bytes, headers: dict[str, str]) -> None:
    raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    raw += [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]
    await send({"type": "http.response.start", "status": status, "headers": raw})
    await send({"type": "http.response.body", "body": body})
