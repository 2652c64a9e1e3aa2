"""The gateway's network face: WebSocket sessions and health checks on one port.

Paths: ``/v1/agent/converse`` (the provider's own path, so a Deepgram SDK switches by base URL alone) and
``/`` serve agent sessions; ``GET /healthz`` answers while the process is alive; ``GET /readyz`` answers 200
only when Redis is reachable and at least one worker is alive.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from email.utils import formatdate
from http import HTTPStatus

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from gateway import routes
from gateway.auth import AccessPolicy
from gateway.catalog import Catalog
from gateway.dispatcher import REDIS_ERRORS, Dispatcher
from gateway.http import HttpRequest, HttpResponse, connection_class
from gateway.session import Session
from gateway.upstream.factory import open_upstream
from shared.config import Config

log = logging.getLogger(__name__)

AGENT_PATHS = {"/", "/v1/agent/converse"}
MAX_HTTP_BODY = 64 * 1024
"""Largest ``POST /function-call`` body: arguments of a voice-agent function are small."""


class Gateway:
    """Everything one gateway process shares between its sessions."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.dispatcher = Dispatcher(config)
        self.catalog = Catalog(self.dispatcher.redis)
        self.sessions: set[Session] = set()
        self.policy = AccessPolicy(config)

    async def handle(self, connection: ServerConnection) -> None:
        session = Session(connection, lambda: open_upstream(self.config), self.dispatcher, self.catalog, self.config)
        self.sessions.add(session)
        try:
            await session.run()
        finally:
            self.sessions.discard(session)

    async def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Answer plain HTTP requests; return None to let a WebSocket handshake proceed."""
        path = request.path.split("?", 1)[0]
        if path == "/healthz":
            return _text(connection, HTTPStatus.OK, "ok\n")
        if path == "/readyz":
            status, body = await self.readiness()
            return _json(connection, HTTPStatus.OK if status else HTTPStatus.SERVICE_UNAVAILABLE, body)
        upgrade = "websocket" in request.headers.get("Upgrade", "").lower()
        if path in AGENT_PATHS and upgrade:
            verdict = self.policy.check(request.headers, request.path)
            if not verdict.allowed:
                return _json(connection, HTTPStatus(verdict.status), {"error": verdict.reason})
            if len(self.sessions) >= self.config.max_sessions:
                return _json(connection, HTTPStatus.SERVICE_UNAVAILABLE, {"error": "Too many sessions; retry later."})
            return None
        if path == routes.FUNCTION_CALL_PATH:
            refusal = routes.method_not_allowed()
            return _body(connection, HTTPStatus(refusal.status), refusal.body, "application/json", {"Allow": "POST"})
        page = routes.static_file(path)
        if page is not None:
            return _body(connection, HTTPStatus.OK, *page)
        if path in AGENT_PATHS:
            return _text(connection, HTTPStatus.UPGRADE_REQUIRED, "This path speaks WebSocket (voice agent).\n")
        return _text(connection, HTTPStatus.NOT_FOUND, "not found\n")

    async def handle_http(self, request: HttpRequest) -> HttpResponse:
        """Requests with a body (websockets serves only GET): ``POST /function-call``."""
        verdict = self.policy.check(request.headers, request.path)
        if not verdict.allowed:
            return HttpResponse.json(verdict.status, {"error": verdict.reason})
        return await routes.function_call(request, self.dispatcher, self.catalog)

    async def readiness(self) -> tuple[bool, dict[str, object]]:
        try:
            async with asyncio.timeout(2):
                await self.dispatcher.redis.ping()
                workers = await self.catalog.workers()
        except (*REDIS_ERRORS, TimeoutError):
            return False, {"redis": False, "workers": 0, "subscribed": self.dispatcher.subscribed}
        ready = bool(workers) and self.dispatcher.subscribed
        return ready, {
            "redis": True,
            "workers": len(workers),
            "functions": sorted({f.name for w in workers for f in w.functions}),
            "subscribed": self.dispatcher.subscribed,
            "upstream": self.config.resolved_upstream(),
        }


def _text(connection: ServerConnection, status: HTTPStatus, body: str) -> Response:
    return connection.respond(status, body)


def _json(connection: ServerConnection, status: HTTPStatus, body: dict[str, object]) -> Response:
    return _body(connection, status, (json.dumps(body) + "\n").encode(), "application/json")


def _body(
    connection: ServerConnection,
    status: HTTPStatus,
    body: bytes,
    content_type: str,
    extra: dict[str, str] | None = None,
) -> Response:
    headers = Headers(
        [
            ("Date", formatdate(usegmt=True)),
            ("Connection", "close"),
            ("Content-Length", str(len(body))),
            ("Cache-Control", "no-cache"),
            ("Content-Type", content_type),
            *(extra or {}).items(),
        ]
    )
    return Response(status.value, status.phrase, headers, body)


def _select_subprotocol(connection: ServerConnection, offered: Sequence[Subprotocol]) -> Subprotocol | None:
    """Browsers authenticate with subprotocols ``["token", <credential>]``; the handshake must then echo
    ``token`` or the browser drops the connection. Clients that offer none connect without one."""
    return Subprotocol("token") if "token" in offered else None


@asynccontextmanager
async def run_gateway(config: Config) -> AsyncIterator[tuple[Gateway, Server]]:
    """Start the dispatcher and the server; on exit close sessions (1001) and stop the dispatcher."""
    gateway = Gateway(config)
    await gateway.dispatcher.start()
    server = await serve(
        gateway.handle,
        config.host,
        config.port,
        process_request=gateway.process_request,
        max_size=config.max_frame_bytes,
        compression=None,
        server_header="voice-function-gateway",
        create_connection=connection_class(gateway.handle_http, MAX_HTTP_BODY),
        select_subprotocol=_select_subprotocol,
    )
    try:
        yield gateway, server
    finally:
        server.close()
        await server.wait_closed()
        await gateway.dispatcher.stop()
