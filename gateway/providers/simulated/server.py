"""The simulated agent as a standalone WebSocket server, reached like Deepgram (``PROVIDER=deepgram``).

Tests of the real WebSocket adapters (the Deepgram one, dropped connections, a bad key) need a provider in
another process; this server gives each connection its own :class:`~.agent.SimulatedAgent`::

    python -m gateway.providers.simulated --host 127.0.0.1 --port 8081 [--require-token T]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from http import HTTPStatus
from typing import TYPE_CHECKING

from gateway.providers.simulated.agent import FATAL_CLOSE_CODE, SimulatedAgent
from shared.logs import setup_logging

if TYPE_CHECKING:
    from websockets.asyncio.server import Server, ServerConnection
    from websockets.http11 import Request, Response

__all__ = ["main", "serve"]

log = logging.getLogger(__name__)

AGENT_PATHS = ("/v1/agent/converse", "/")


def serve(host: str = "127.0.0.1", port: int = 0, require_token: str | None = None) -> Server:
    """A WebSocket server of the simulated agent at ``/v1/agent/converse`` and ``/``, one agent per connection.

    Returns websockets' :class:`~websockets.asyncio.server.Server`, which is both awaitable and an async
    context manager: ``async with serve("127.0.0.1", 0) as server:`` (port 0 picks a free port; read it from
    ``server.sockets``). With ``require_token`` the handshake is refused with HTTP 401 unless the request
    carries ``Authorization: Token <require_token>``, as Deepgram refuses a bad key.
    """
    from websockets.asyncio.server import serve as websockets_serve

    def check_request(connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        if path not in AGENT_PATHS:
            return connection.respond(HTTPStatus.NOT_FOUND, "Not found: the agent is at /v1/agent/converse.\n")
        if require_token is not None and request.headers.get("Authorization") != f"Token {require_token}":
            return connection.respond(HTTPStatus.UNAUTHORIZED, "Missing or wrong 'Authorization: Token' header.\n")
        return None

    return websockets_serve(_converse, host, port, process_request=check_request, max_size=None, compression=None)


async def _converse(connection: ServerConnection) -> None:
    """Relay one connection through its own :class:`SimulatedAgent`; close with 1008 after a fatal Error."""
    from websockets.exceptions import ConnectionClosed

    agent = SimulatedAgent()
    try:
        for frame in agent.opening():
            await connection.send(frame)
        async for received in connection:
            for frame in agent.receive(received):
                await connection.send(frame)
            if agent.closed:
                await connection.close(FATAL_CLOSE_CODE, agent.close_reason)
                return
    except ConnectionClosed:
        pass  # the client left; nothing to clean up


async def _serve_forever(host: str, port: int, require_token: str | None) -> None:
    async with serve(host, port, require_token) as server:
        bound = next(iter(server.sockets)).getsockname()[1]
        auth = " (token required)" if require_token else ""
        log.info("simulated agent listening on ws://%s:%d/v1/agent/converse%s", host, bound, auth)
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    """``python -m gateway.providers.simulated``: run the standalone server until Ctrl-C or SIGTERM."""
    parser = argparse.ArgumentParser(
        prog="python -m gateway.providers.simulated",
        description="Serve the simulated Deepgram voice agent over WebSocket.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8081)
    parser.add_argument("--require-token", metavar="T", help="refuse connections without 'Authorization: Token T'")
    args = parser.parse_args(argv)
    setup_logging("INFO", "%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is the normal way to stop it
        asyncio.run(_serve_forever(args.host, args.port, args.require_token))
