"""uvicorn's httptools protocol with the HTTP-layer limits it lacks, enforced before any request reaches the app.

- Request head (request line + headers): at most `max_header_bytes` and `max_headers` fields, else 431 and the
  connection closes. httptools itself has no bound, and its parse time grows with the square of one huge header
  (a 64 MB header took 8.6 s and stalled every other request).
- Deadlines: the head must arrive within `header_timeout_s` of its first byte (or of the connection), the body within
  `body_timeout_s` of the head, else 408 and close; an idle keep-alive connection closes after `idle_timeout_s`
  (uvicorn's own timer). A slow-loris client holds a socket for seconds, not forever.
- Connections: past `max_connections` open at once, a new one gets 503 and closes before any of its request is read,
  so the heads being received stay under max_connections x max_header_bytes.
- Shutdown: a connection still sending its request's head or body has not been admitted, so SIGTERM closes it at once;
  only requests the app is answering are waited for.
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from .metrics import Metrics
from .settings import ServerSettings

__all__ = ["guarded_protocol"]

_END_OF_HEAD = b"\r\n\r\n"


class _HeaderCountError(Exception):
    """Raised from the parser's header callback to stop parsing at once."""


# After a refusal the connection reads and drops what the client still sends, for at most this long, before it
# closes: closing with unread bytes makes the kernel send a reset, which can destroy the reply before it is read.
LINGER_S = 1.0


class GuardedHttpProtocol(HttpToolsProtocol):
    """HttpToolsProtocol plus head size and count limits, head and body deadlines, and an honest shutdown."""

    settings: ServerSettings

    def __init__(self, *args: Any, settings: ServerSettings, metrics: Metrics, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.settings, self.metrics = settings, metrics
        self._in_head = True  # bytes received belong to a request head not yet complete
        self._head_bytes = 0
        self._head_tail = b""  # the last bytes of the previous chunk: a head's end can straddle two chunks
        self._header_count = 0
        self._deadline: asyncio.TimerHandle | None = None
        self._refused = False

    # Deadlines -------------------------------------------------------------------------------------------------
    def _arm(self, seconds: float, status: bytes, message: str, reason: str) -> None:
        self._disarm()
        self._deadline = self.loop.call_later(seconds, self._expire, status, message, reason)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expire(self, status: bytes, message: str, reason: str) -> None:
        self._deadline = None
        if self.transport.is_closing() or self._refused:
            return
        if self.cycle is not None and not self.cycle.response_complete and self.cycle.response_started:
            return  # the app is answering: its response is under way, not the client's request
        self._refuse(status, message, reason)

    def _refuse(self, status: bytes, message: str, reason: str, headers: bytes = b"") -> None:
        """Answer `status` with `message` and `headers` (CRLF-ended lines); read no more; close after LINGER_S.

        Counted in /metrics by `reason`.
        """
        self.metrics.http_refusals.labels(reason).inc()
        self._refused = True
        self._disarm()
        if self.cycle is not None and not self.cycle.response_complete:
            self.cycle.disconnected = True  # the app's receive() sees a disconnect; nothing more is parsed
            self.cycle.message_event.set()
        body = message.encode("ascii")
        head = (
            b"HTTP/1.1 "
            + status
            + b"\r\ncontent-type: text/plain; charset=utf-8\r\nconnection: close\r\n"
            + headers
            + b"content-length: "
            + str(len(body)).encode("ascii")
            + b"\r\n\r\n"
        )
        self.transport.write(head + body)
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(LINGER_S, self.transport.close)

    def _arm_head(self) -> None:
        limit = self.settings.header_timeout_s
        self._arm(limit, b"408 Request Timeout", f"the request head did not arrive within {limit:g} s", "head_timeout")

    # Protocol interface ----------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        limit = self.settings.max_connections
        if len(self.connections) > limit:  # this one included
            message = f"over {limit} open connections"
            self._refuse(b"503 Service Unavailable", message, "max_connections", b"retry-after: 1\r\n")
            return
        self._arm_head()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return  # lingering after a refusal: dropped unread
        if self._in_head and not self._head_fits(data):
            limit = self.settings.max_header_bytes
            self._refuse(b"431 Request Header Fields Too Large", f"request head over {limit} bytes", "head_bytes")
            return
        super().data_received(data)  # a _HeaderCountError reaches send_400_response as a parser error

    def _head_fits(self, data: bytes) -> bool:
        """Count this chunk's bytes up to the end of the head (when it ends here); False past the limit."""
        joined = self._head_tail + data
        end = joined.find(_END_OF_HEAD)
        counted = len(data) if end < 0 else max(0, end + len(_END_OF_HEAD) - len(self._head_tail))
        self._head_bytes += counted
        self._head_tail = joined[-(len(_END_OF_HEAD) - 1) :]
        return self._head_bytes <= self.settings.max_header_bytes

    def _too_many_headers(self) -> None:
        limit = self.settings.max_headers
        self._refuse(b"431 Request Header Fields Too Large", f"more than {limit} header fields", "header_count")

    def send_400_response(self, msg: str) -> None:
        if self._header_count > self.settings.max_headers:  # the parser stopped because on_header refused
            self._too_many_headers()
            return
        super().send_400_response(msg)

    # Parser callbacks ------------------------------------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._header_count = 0
        super().on_message_begin()

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_count += 1
        if self._header_count > self.settings.max_headers:
            raise _HeaderCountError
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head = False
        limit = self.settings.body_timeout_s
        self._arm(limit, b"408 Request Timeout", f"the request body did not arrive within {limit:g} s", "body_timeout")
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._disarm()
        self._in_head, self._head_bytes, self._head_tail = True, 0, b""  # what follows is the next request's head
        super().on_message_complete()

    def on_response_complete(self) -> None:
        super().on_response_complete()  # arms uvicorn's keep-alive timer: an idle connection closes
        if not self.transport.is_closing():
            self._arm_head()  # a next request that starts and then trickles is bounded too

    def shutdown(self) -> None:
        cycle = self.cycle
        received = cycle is not None and not cycle.response_complete and not cycle.more_body
        answering = cycle is not None and cycle.response_started and not cycle.response_complete
        if not (received or answering):
            self._disarm()
            self.transport.close()  # idle, or a request still arriving: not admitted, nothing to drain
            return
        super().shutdown()


def guarded_protocol(settings: ServerSettings, metrics: Metrics) -> Any:
    """The protocol class uvicorn instantiates per connection, bound to the server's limits and metrics."""
    return functools.partial(GuardedHttpProtocol, settings=settings, metrics=metrics)
