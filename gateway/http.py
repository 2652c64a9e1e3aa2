"""Plain HTTP on the gateway's WebSocket port: health checks, the test page, and ``POST /function-call``.

websockets answers GET requests itself (``Gateway.process_request`` in ``gateway.server`` turns them into
health, static-file or 404 responses before a handshake), but its handshake parser refuses any request with a
body. :class:`HttpAwareConnection` looks at the request head first: a GET goes to websockets untouched, any
other method is read here, handed to an async handler, answered, and the connection is closed. One port
serves everything, as a PaaS expects.

Timeouts: a client has :data:`OPEN_TIMEOUT` seconds to send a whole request (head and body) or to complete a
WebSocket handshake. websockets' own ``open_timeout`` must be off (``serve(open_timeout=None)``): it covers the
whole handshake, and a plain HTTP request looks like a handshake that never completes, so it cut every
``POST /function-call`` whose function ran longer than 10 s. Once a request is read, its handler runs to its
own deadline (the dispatcher answers every call by its function's timeout).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from http import HTTPStatus

from websockets.asyncio.server import ServerConnection

log = logging.getLogger(__name__)

MAX_HEAD = 16 * 1024
"""Largest request line plus headers accepted before a request is refused."""
OPEN_TIMEOUT = 10.0
"""Seconds to send a whole HTTP request or complete a WebSocket handshake (websockets' default open_timeout)."""


@dataclass
class HttpRequest:
    method: str
    path: str
    headers: dict[str, str]
    """Lower-cased names; a repeated header keeps its last value."""
    body: bytes = b""
    remote: str = ""
    """The peer's IP address (per-address limits); empty when unknown."""
    query: str = ""
    """The request target's query string, without its ``?`` (it may carry a ``?token=`` credential)."""

    @property
    def target(self) -> str:
        """The path with its query, as the access policy reads it (a ``?token=`` credential counts)."""
        return f"{self.path}?{self.query}" if self.query else self.path


@dataclass
class HttpResponse:
    status: int
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def json(cls, status: int, data: object, **headers: str) -> HttpResponse:
        return cls(status, json.dumps(data).encode(), {"Content-Type": "application/json", **headers})

    def serialize(self) -> bytes:
        reason = HTTPStatus(self.status).phrase
        # A 204 must not carry Content-Length; a HEAD answer sets the GET body's length in ``headers``.
        length = {} if self.status == HTTPStatus.NO_CONTENT else {"Content-Length": str(len(self.body))}
        headers = {**length, "Connection": "close", **self.headers}
        head = f"HTTP/1.1 {self.status} {reason}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers.items())
        return head.encode("latin-1") + b"\r\n" + self.body


HttpHandler = Callable[[HttpRequest], Awaitable[HttpResponse]]
"""Answers a non-GET request. ``max_body`` on the connection class bounds what reaches it."""


class HttpAwareConnection(ServerConnection):
    """A websockets server connection that also serves HTTP requests with a body.

    Subclass it with :func:`connection_class` to bind a handler; pass that as ``create_connection`` to
    ``websockets.asyncio.server.serve``.
    """

    http_handler: HttpHandler
    max_body: int = 64 * 1024
    open_timeout: float = OPEN_TIMEOUT

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self._head = b""
        self._decided = False
        self._request: HttpRequest | None = None
        self._wanted = 0
        self._task: asyncio.Task[None] | None = None
        self._http_read: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Done once a plain HTTP request is read in full, or answered early (a 4xx while reading)."""

    async def handshake(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        """Open the connection within :attr:`open_timeout`: a WebSocket handshake (websockets' own), or reading
        a plain HTTP request; then serve that request without the timeout, so a long call is answered."""
        async with asyncio.timeout(self.open_timeout):
            await asyncio.wait(
                [self._http_read, self.request_rcvd, self.connection_lost_waiter], return_when=asyncio.FIRST_COMPLETED
            )
            if not self._http_read.done():
                await super().handshake(*args, **kwargs)
                return
        await self._serve_http()

    async def _serve_http(self) -> None:
        """Wait for the handler's answer; a caller that leaves first cancels its call, as a WebSocket client's
        leaving cancels its calls. ``asyncio.wait`` is used because ``connection_lost_waiter`` must never be
        cancelled."""
        task = self._task
        if task is not None:
            await asyncio.wait([task, self.connection_lost_waiter], return_when=asyncio.FIRST_COMPLETED)
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        # The answer is written and the transport is closing: let it flush, but not for a client that never reads
        # (websockets aborts the transport when this returns).
        await asyncio.wait([self.connection_lost_waiter], timeout=self.open_timeout)

    def data_received(self, data: bytes) -> None:
        if self._decided:
            if self._request is None:
                super().data_received(data)
            else:
                self._read_body(data)
            return
        self._head += data
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > MAX_HEAD:
                self._answer(HttpResponse(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE))
            return
        self._decided = True
        buffered, self._head = self._head, b""
        if buffered.startswith(b"GET "):
            super().data_received(buffered)  # websockets handles handshakes and plain GETs
            return
        try:
            self._request = _parse_head(buffered[:end])
            self._request.remote = _peer_address(self.transport)
            self._wanted = _content_length(self._request.headers)
        except ValueError as exc:
            self._answer(HttpResponse.json(HTTPStatus.BAD_REQUEST, {"error": str(exc)}))
            return
        if self._wanted > self.max_body:
            self._answer(HttpResponse.json(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, {"error": "Request body too large."}))
            return
        self._read_body(buffered[end + 4 :])

    def _read_body(self, data: bytes) -> None:
        assert self._request is not None
        if self._task is not None:
            return  # bytes beyond Content-Length: ignored, the connection closes after the answer
        self._request.body += data
        if len(self._request.body) >= self._wanted:
            self._request.body = self._request.body[: self._wanted]
            self._task = asyncio.get_running_loop().create_task(self._handle(self._request))
            self._mark_read()

    async def _handle(self, request: HttpRequest) -> None:
        try:
            response = await self.http_handler(request)
        except Exception:
            log.exception("HTTP handler failed for %s %s", request.method, request.path)
            response = HttpResponse.json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "Internal error."})
        self._answer(response)

    def _mark_read(self) -> None:
        if not self._http_read.done():
            self._http_read.set_result(None)

    def _answer(self, response: HttpResponse) -> None:
        self._decided = True
        self._mark_read()
        if not self.transport.is_closing():
            self.transport.write(response.serialize())
            self.transport.close()  # websockets' pending handshake sees the close and cleans up quietly


def _parse_head(head: bytes) -> HttpRequest:
    try:
        text = head.decode("latin-1")
        request_line, *header_lines = text.split("\r\n")
        method, target, version = request_line.split(" ", 2)
    except ValueError:
        raise ValueError("Malformed HTTP request.") from None
    if not version.startswith("HTTP/1."):
        raise ValueError("Unsupported HTTP version.")
    headers: dict[str, str] = {}
    for line in header_lines:
        name, sep, value = line.partition(":")
        if not sep or not name.strip():
            raise ValueError("Malformed HTTP header.")
        headers[name.strip().lower()] = value.strip()
    path, _, query = target.partition("?")
    return HttpRequest(method=method, path=path, headers=headers, query=query)


def _peer_address(transport: asyncio.BaseTransport) -> str:
    peer = transport.get_extra_info("peername")
    return str(peer[0]) if isinstance(peer, tuple) and peer else ""


def _content_length(headers: dict[str, str]) -> int:
    if "transfer-encoding" in headers:
        raise ValueError("Chunked request bodies are not supported; send Content-Length.")
    raw = headers.get("content-length", "0")
    if not raw.isdigit():
        raise ValueError("Invalid Content-Length.")
    return int(raw)


def connection_class(
    handler: HttpHandler, max_body: int, open_timeout: float = OPEN_TIMEOUT
) -> type[HttpAwareConnection]:
    """An :class:`HttpAwareConnection` subclass bound to ``handler``. Serve it with ``open_timeout=None``: the
    class applies its own (see the module docstring)."""
    return type(
        "BoundHttpAwareConnection",
        (HttpAwareConnection,),
        {"http_handler": staticmethod(handler), "max_body": max_body, "open_timeout": open_timeout},
    )
