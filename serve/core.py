"""What an embedding request does once its body is parsed, shared by the FastAPI routes and Guard's fast path.

Tokenize at admission (over-long text and token counts are known before queueing), queue one Job, wait for its rows
or for the client to go away, and serialize the answer with orjson.
"""

from __future__ import annotations

import asyncio
import base64
import functools
import hmac
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import orjson
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException
from starlette.types import Receive

from onnxbert.runtime import Encoder, Pooling
from onnxbert.runtime.tokenize import Tokenized

from .batcher import Batcher, Job, QueueFullError
from .metrics import Metrics
from .settings import ServerSettings

__all__ = [
    "ApiError",
    "EmbedRequest",
    "OpenAIRequest",
    "State",
    "check_dimensions",
    "check_inputs",
    "embed_answer",
    "error_body",
    "json_bytes",
    "json_in_slices",
    "openai_answer",
    "openai_body",
    "tokenize_off_loop",
    "unauthorized",
]


class ApiError(HTTPException):
    """An error answered with `status` and a JSON body naming what was wrong.

    An HTTPException so that FastAPI passes it through untouched when it is raised while the body is read.
    """

    def __init__(self, status: int, message: str, kind: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(status_code=status, detail=message, headers=headers)
        self.status, self.message, self.kind = status, message, kind
        self.headers = headers or {}


def unauthorized(authorization: str, api_key: str | None) -> ApiError | None:
    """401 unless `authorization` (the header as sent) is `Bearer API_KEY`; None when no key is set.

    Compared in constant time. An empty key never gets here: ServerSettings and the Ray Serve deployment refuse one.
    """
    if api_key is None:
        return None
    if hmac.compare_digest(authorization.encode("latin-1"), f"Bearer {api_key}".encode("ascii")):
        return None
    return ApiError(401, "missing or wrong API key: send 'Authorization: Bearer KEY'", "Unauthorized")


def check_dimensions(dimensions: int | None, hidden_size: int) -> None:
    """OpenAI's `dimensions`: only the model's own width is offered (a BERT vector is not trained to be cut short)."""
    if dimensions is not None and dimensions != hidden_size:
        raise ApiError(422, f"dimensions={dimensions}: this model returns {hidden_size}", "Validation")


class OpenAIRequest(BaseModel):
    """The body of OpenAI's embeddings API (also accepted by the Ray Serve deployment)."""

    input: str | list[str] = Field(description="a text or a list of texts (token arrays are not supported)")
    model: str | None = None
    encoding_format: Literal["float", "base64"] = "float"
    dimensions: int | None = None
    user: str | None = None


class EmbedRequest(BaseModel):
    """The body of TEI's POST /embed."""

    inputs: str | list[str]
    normalize: bool = True
    truncate: bool = False
    pooling: Pooling | None = None


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

    def unready(self) -> str:
        """Why the server does not take requests now."""
        if self.load_error:
            return f"model failed to load: {self.load_error}"
        return "draining: the server is shutting down" if self.draining else "loading: the model is not ready yet"


def error_body(path: str, status: int, message: str, kind: str) -> dict[str, Any]:
    """OpenAI's error shape under /v1/, TEI's elsewhere."""
    if path.startswith("/v1/"):
        return {"error": {"message": message, "type": kind, "code": status}}
    return {"error": message, "error_type": kind}


def json_bytes(content: Any) -> bytes:
    """Serialize directly, numpy arrays included (orjson).

    FastAPI would validate every float through the response model, and json.dumps over .tolist() was half the
    event loop's time under load (py-spy, MiniLM, 32 clients).
    """
    return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


async def json_in_slices(items: Iterable[Any], *, rows: int = 0) -> bytes:
    """A JSON list of `items`, serialized one item (or `rows` rows of a 2-D array item) at a time.

    orjson holds the GIL for a whole call, and a token-level answer is long (4,096 x 384 floats: 64 ms): between
    slices the event loop runs, so /health and other clients are not held up behind it.
    """
    parts = [b"["]
    for index, item in enumerate(items):
        parts.append(b"," if index else b"")
        if not rows:
            parts.append(json_bytes(item))
            await asyncio.sleep(0)
            continue
        parts.append(b"[")  # a 2-D array as a list of row lists: `rows` rows a call, their outer [ ] cut off
        for start in range(0, len(item), rows):
            parts.append((b"," if start else b"") + json_bytes(item[start : start + rows])[1:-1])
            await asyncio.sleep(0)
        parts.append(b"]")
    parts.append(b"]")
    return b"".join(parts)


_INLINE_CHARS = 8_192  # a request with more characters is tokenized in a thread (see `tokenize_off_loop`)
_NO_TEXT = re.compile(r"[\s\x00-\x1f\x7f]*")  # stops at the first real character: cheap on any text


def check_inputs(inputs: str | list[str], *, max_inputs: int, max_chars: int, field: str = "inputs") -> list[str]:
    """The request's texts, or the ApiError (400 empty, 422 too many / too long / no text) to answer; no tokenizing.

    `field`: the body's name for the texts (`input` in OpenAI's API, `inputs` in TEI's), used in the messages.
    """
    texts = [inputs] if isinstance(inputs, str) else inputs
    if not texts:
        raise ApiError(400, f"{field} is empty: send at least one text", "Validation")
    if len(texts) > max_inputs:
        raise ApiError(422, f"{len(texts)} inputs exceed max_client_batch={max_inputs}", "Validation")

    def where(index: int) -> str:
        return f"{field}[{index}]" if isinstance(inputs, list) else field

    long = next((i for i, text in enumerate(texts) if len(text) > max_chars), None)
    if long is not None:
        message = f"{where(long)} has {len(texts[long])} characters, over max_text_chars={max_chars}"
        raise ApiError(422, message, "Validation")
    blank = next((i for i, text in enumerate(texts) if _NO_TEXT.fullmatch(text)), None)
    if blank is not None:  # TEI and OpenAI refuse these too: every one would embed as the same [CLS] [SEP]
        raise ApiError(422, f"{where(blank)} has no text (empty, or only spaces and control characters)", "Validation")
    return texts


def _tokenize(encoder: Encoder, texts: list[str], *, truncate: bool, offsets: bool, field: str) -> Tokenized:
    try:
        return encoder.tokenize(texts, truncate=truncate, offsets=offsets)
    except ValueError as error:  # a lone surrogate, a text over max_length with truncate=false, one with no tokens
        raise ApiError(422, str(error).replace("texts[", f"{field}["), "Validation") from None


async def tokenize(
    state: State, inputs: str | list[str], *, truncate: bool, offsets: bool = False, field: str = "inputs"
) -> Tokenized:
    """Cheap checks and the queue's room first, then the texts tokenized (`tokenize_off_loop`).

    A request the queue cannot take is refused before any tokenizing.
    """
    settings, encoder = state.settings, _encoder(state)
    texts = check_inputs(inputs, max_inputs=settings.max_client_batch, max_chars=settings.max_text_chars, field=field)
    _room(state, len(texts))
    start = time.perf_counter()
    tokens = await tokenize_off_loop(encoder, texts, truncate=truncate, offsets=offsets, field=field)
    state.metrics.tokenize_seconds.observe(time.perf_counter() - start)
    return tokens


async def tokenize_off_loop(
    encoder: Encoder, texts: list[str], *, truncate: bool, offsets: bool = False, field: str = "inputs"
) -> Tokenized:
    """Checked texts tokenized: inline when small, else in a thread.

    A large request (tokenizing is linear in its characters, ~2.5 us each) never stalls the event loop, which keeps
    answering /health meanwhile.
    """
    work = functools.partial(_tokenize, encoder, texts, truncate=truncate, offsets=offsets, field=field)
    small = sum(map(len, texts)) <= _INLINE_CHARS  # microseconds: less than a thread hand-off costs
    return work() if small else await asyncio.to_thread(work)


def _room(state: State, texts: int, tokens: int = 0) -> None:
    assert state.batcher is not None  # guarded by readiness
    try:
        state.batcher.check_room(texts, tokens)
    except QueueFullError as error:
        raise ApiError(429, str(error), "Overloaded", {"Retry-After": str(error.retry_after)}) from None


async def run(state: State, receive: Receive, job: Job) -> Any:
    """Queue the job and wait for it, or for the client to go away (then its place in the queue is freed).

    `receive` is the request's ASGI receive, its body already read: all it can still report is the disconnect.
    """
    batcher = state.batcher
    assert batcher is not None
    try:
        batcher.submit(job)
    except QueueFullError as error:
        raise ApiError(429, str(error), "Overloaded", {"Retry-After": str(error.retry_after)}) from None

    def went_away(watch: asyncio.Task[None]) -> None:
        if not watch.cancelled():  # cancelled: the answer came first
            batcher.withdraw(job)

    gone = asyncio.get_running_loop().create_task(_disconnected(receive))
    gone.add_done_callback(went_away)
    try:
        return await job.future
    except asyncio.CancelledError:
        if gone.done() and not gone.cancelled():  # the client went away and its job was withdrawn
            raise ApiError(499, "client closed the request", "ClientClosed") from None
        raise
    finally:
        gone.cancel()


async def _disconnected(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _encoder(state: State) -> Encoder:
    assert state.encoder is not None  # guarded by readiness
    return state.encoder


async def embed_answer(
    state: State,
    receive: Receive,
    inputs: str | list[str],
    *,
    normalize: bool,
    truncate: bool,
    pooling: str | Pooling | None,
) -> bytes:
    """POST /embed (TEI): one vector per input."""
    encoder = _encoder(state)
    method = Pooling(pooling or encoder.default_pooling)
    if method.value not in encoder.poolings:
        offered = ", ".join(encoder.poolings)
        raise ApiError(
            422, f"pooling={method.value!r}: this model offers {offered} (it has no pooler weights)", "Validation"
        )
    tokens = await tokenize(state, inputs, truncate=truncate)
    return json_bytes(await run(state, receive, Job(False, method, tokens, normalize=normalize)))


async def openai_answer(
    state: State,
    receive: Receive,
    inputs: str | list[str],
    *,
    model: str | None,
    encoding_format: str,
    dimensions: int | None,
) -> bytes:
    """POST /v1/embeddings (OpenAI): L2-normalized vectors of the model's pooling, with token usage."""
    encoder = _encoder(state)
    check_dimensions(dimensions, encoder.hidden_size)
    tokens = await tokenize(state, inputs, truncate=True, field="input")
    vectors = await run(state, receive, Job(False, Pooling(encoder.default_pooling), tokens, normalize=True))
    name = model or state.settings.model_name or state.directory.name
    return json_bytes(openai_body(vectors, tokens, name, encoding_format, arrays=True))


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
