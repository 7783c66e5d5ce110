"""Limits at the door: what one connection may take of a server before any route runs.

uvicorn with httptools (the fastest stack it offers: see :func:`tideline.cli.cmd_server`)
leaves open what a fault probe walked through (issue 30: 1,000 idle and 600
slowloris connections never timed out, a 4 MB header block was answered 200):
it has no limit on a header block, arms its keep-alive timer only after a
first answer, and has no timer on a request's headers at all.
:class:`GuardedProtocol` is its HTTP protocol with those limits (uvicorn
takes it as ``http="tideline.pods.server.limits:GuardedProtocol"``), each a
:class:`~tideline.pods.server.api.ServerConfig` field, ``TIDELINE_<NAME>`` in the
environment, or a ``tideline server`` flag:

``max_header_bytes``
    the request line and headers. Counted as they arrive: past the limit the
    answer is 431 and the connection is closed, before the rest is read (a
    4 MB block costs the server ``max_header_bytes``, not 4 MB).
``header_timeout``
    seconds from a request's first byte to the end of its headers: a client
    that sends them slower (slowloris) gets 408 and the connection closed.
``idle_timeout``
    seconds a connection may wait with no request in flight, before its first
    request too (uvicorn's keep-alive timeout covers only the time after an
    answer): then it is closed.
    A body that stops coming for ``idle_timeout`` (a request held in flight
    by a client that never finishes it) gets 408 too.
``max_concurrency``
    requests in flight in one worker: one past it gets 503 with the
    protocols' error shape, counted as ``shed`` (not an error of a model
    version: a rollback cures no overload). Unlike uvicorn's
    ``limit_concurrency``, idle kept-alive connections do not count: a
    Service's clients may hold many, and the timeouts above bound them.
``max_body_bytes``
    the routes count a body as it streams and answer 413 the moment it passes
    the limit, closing the connection (:mod:`tideline.pods.server.api`); here,
    a body that goes on past the limit after its answer (a route that had no
    use for it) closes the connection instead of being read to its end.

A refusal made before a request's headers are complete (431 past the limit,
408) is written here; one made when they are (431 counted exactly, 503) is
handed to the app in the scope (:data:`~tideline.pods.server.api.REFUSED`),
which answers and counts it like any other.
"""

from __future__ import annotations

import functools
import os
from asyncio import TimerHandle
from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from tideline.pods.server.api import REFUSED, ServerConfig


@functools.cache
def _settings() -> ServerConfig:
    """This worker's settings (read once: uvicorn makes a protocol per connection)."""
    return ServerConfig.from_env(dict(os.environ))


def _raw_answer(status: int, message: str) -> bytes:
    """A whole answer that closes the connection, for a request with no scope yet."""
    body = orjson.dumps({"error": message})
    return b"".join([STATUS_LINE[status], b"content-type: application/json\r\n",
                     b"content-length: %d\r\n" % len(body), b"connection: close\r\n\r\n", body])  # fmt: skip


class GuardedProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the limits of the module docs."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        s = _settings()
        self.max_header_bytes = s.max_header_bytes
        self.max_body_bytes = s.max_body_bytes
        self.header_timeout = s.header_timeout
        self.max_concurrency = s.max_concurrency
        self.timeout_keep_alive = s.idle_timeout  # type: ignore[assignment]  # (a float is fine)
        self._awaiting_head = True  # no request's headers complete since the last request
        self._head_bytes = 0  # bytes received while awaiting a request's headers (an upper bound)
        self._head_exact = 0  # the request line and headers parsed so far
        self._body_bytes = 0
        self._in_body = False  # a request's headers complete, its body not yet
        # the headers' deadline (header_timeout from their first byte), or the body's
        # (idle_timeout from its last bytes)
        self._read_timer: TimerHandle | None = None

    # -- idle: from the connection's start, not only after an answer ----------------------
    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        self.timeout_keep_alive_task = self.loop.call_later(
            self.timeout_keep_alive, self.timeout_keep_alive_handler
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read_timer()
        super().connection_lost(exc)

    # -- the header block: its size and its time ------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._awaiting_head:
            self._head_bytes += len(data)
        super().data_received(data)
        if self._in_body:  # a body that stops coming holds a request in flight: not for long
            self._cancel_read_timer()
            self._read_timer = self.loop.call_later(self.timeout_keep_alive, self._body_too_slow)
        if not self._awaiting_head or self.transport.is_closing():
            return
        # Still no complete headers: every byte since the last request was part of them. (The
        # timer starts here, not before the parser ran: most requests come in one piece.)
        if self._head_bytes > self.max_header_bytes:
            self._refuse_raw(431, f"request line and headers over {self.max_header_bytes} bytes")
        elif self._read_timer is None and self._head_bytes:
            self._read_timer = self.loop.call_later(self.header_timeout, self._head_too_slow)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._head_exact = 0
        self._body_bytes = 0

    def on_url(self, url: bytes) -> None:
        super().on_url(url)
        self._head_exact += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        super().on_header(name, value)
        self._head_exact += len(name) + len(value) + 4  # ": " and CRLF

    def on_headers_complete(self) -> None:
        self._awaiting_head = False
        self._in_body = True
        self._cancel_read_timer()
        refusal = None
        if self._head_exact > self.max_header_bytes:
            refusal = (431, f"request line and headers over {self.max_header_bytes} bytes")
        elif len(self.tasks) >= self.max_concurrency:
            refusal = (503, f"{self.max_concurrency} requests in flight already: retry")
        if refusal is not None:  # the app answers it (and counts it) when it sees this
            self.scope[REFUSED] = refusal  # type: ignore[literal-required]
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_bytes += len(body)
        if (
            self._body_bytes > self.max_body_bytes
            and self.cycle is not None
            and self.cycle.response_complete
        ):
            # answered without reading it all (a route with no use for a body): reading
            # on to its end would only cost time, and keep a connection busy
            self.transport.close()
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_body = False
        self._cancel_read_timer()
        self._awaiting_head = True
        self._head_bytes = 0

    def _head_too_slow(self) -> None:
        self._read_timer = None
        if self._awaiting_head and not self.transport.is_closing():
            self._refuse_raw(408, f"request headers not received within {self.header_timeout:g}s")

    def _body_too_slow(self) -> None:
        self._read_timer = None
        if self._in_body and not self.transport.is_closing():
            if self.cycle is not None and self.cycle.response_started:
                self.transport.close()
            else:
                self._refuse_raw(408, f"no more of the body within {self.timeout_keep_alive:g}s")

    def _cancel_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _refuse_raw(self, status: int, message: str) -> None:
        self._cancel_read_timer()
        self._unset_keepalive_if_required()
        if not self.transport.is_closing():
            self.transport.write(_raw_answer(status, message))
            self.transport.close()
