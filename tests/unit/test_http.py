"""gateway.http on a real loopback socket, in process: what the opening timeout covers and what it does not."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

import pytest
from websockets.asyncio.server import serve

from gateway.http import HttpRequest, HttpResponse, connection_class

OPEN_TIMEOUT = 0.5


@pytest.fixture
async def server() -> AsyncIterator[Callable[..., object]]:
    """Start a server with a given HTTP handler; yields ``start(handler) -> port``."""
    servers = []

    async def start(handler) -> int:  # type: ignore[no-untyped-def]
        async def ws_handler(connection) -> None:  # type: ignore[no-untyped-def]
            await connection.close()

        srv = await serve(
            ws_handler,
            "127.0.0.1",
            0,
            create_connection=connection_class(handler, 1024, open_timeout=OPEN_TIMEOUT),
            open_timeout=None,
        )
        servers.append(srv)
        return next(iter(srv.sockets)).getsockname()[1]

    yield start
    for srv in servers:
        srv.close()
        await srv.wait_closed()


async def read_all(reader: asyncio.StreamReader) -> bytes:
    return await asyncio.wait_for(reader.read(), 10)


REQUEST = b"POST /x HTTP/1.1\r\nHost: t\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"


async def test_a_handler_running_longer_than_the_open_timeout_is_answered(server):
    async def slow(request: HttpRequest) -> HttpResponse:
        await asyncio.sleep(OPEN_TIMEOUT * 3)
        return HttpResponse.json(200, {"remote": request.remote})

    port = await server(slow)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(REQUEST)
    answer = await read_all(reader)
    assert answer.startswith(b"HTTP/1.1 200 ")
    assert answer.endswith(b'{"remote": "127.0.0.1"}')
    writer.close()


async def test_a_request_never_finished_is_cut_at_the_open_timeout(server):
    async def never(request: HttpRequest) -> HttpResponse:  # pragma: no cover - never reached
        raise AssertionError("a request without its body must not be handled")

    port = await server(never)
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(REQUEST[:-1])  # one byte of the body missing
    assert await read_all(reader) == b""  # closed, not answered
    writer.close()


async def test_a_caller_that_leaves_cancels_its_handler(server):
    started, cancelled = asyncio.Event(), asyncio.Event()

    async def waits(request: HttpRequest) -> HttpResponse:
        started.set()
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return HttpResponse(200)  # pragma: no cover

    port = await server(waits)
    _, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(REQUEST)
    await asyncio.wait_for(started.wait(), 10)
    writer.close()
    await asyncio.wait_for(cancelled.wait(), 10)


async def test_no_content_has_no_content_length():
    assert b"Content-Length" not in HttpResponse(204).serialize()
    head = HttpResponse(200, b"", {"Content-Length": "12"}).serialize()
    assert b"Content-Length: 12\r\n" in head and head.endswith(b"\r\n\r\n")
