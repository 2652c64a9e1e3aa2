"""The gateway's network face: WebSocket sessions and health checks on one port.

Paths: ``/v1/agent/converse`` (the provider's own path, so a Deepgram SDK switches by base URL alone) and
``/`` serve agent sessions; ``GET /healthz`` answers while the process is alive; ``GET /readyz`` answers 200
only when Redis is reachable and the result subscription is alive (answered a PING lately), and not draining;
live workers are reported in its body but never make it 503 (rolling out workers must not take gateways out of
a load balancer). ``GET /metrics``: Prometheus metrics, with the credentials a session needs. ``HEAD`` answers
as ``GET`` without a body. ``GET`` and ``DELETE /conversations/<id>``: a conversation's stored memory
(``gateway.conversations_api``).

On SIGTERM the gateway drains (:func:`serve_forever`): ``/readyz`` turns 503, new sessions and HTTP calls get
503, calls in flight are answered with their results for up to DRAIN_TIMEOUT seconds, then sessions close with
1001. Sessions without a call in flight stay open while others drain: the conversation goes on until the
process must go.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import logging
import os
import signal
import weakref
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from email.utils import formatdate
from http import HTTPStatus

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.http11 import Request, Response
from websockets.typing import Subprotocol

from gateway import metrics, routes
from gateway.auth import AccessPolicy, check_bind, subprotocol_scheme, weak_secret_warning
from gateway.catalog import Catalog
from gateway.conversation_ids import BadConversationId, requested_id
from gateway.conversations_api import ConversationsEndpoint, is_conversations_path, plain_headers
from gateway.dispatcher import Dispatcher
from gateway.handshake import ConversationGate
from gateway.http import HttpRequest, HttpResponse, connection_class
from gateway.memory import MemoryStore
from gateway.providers import open_provider
from gateway.resume import Resumable
from gateway.session import Session
from shared.config import Config, result_ttl_refusal
from shared.logs import masking, redacted, secret_values
from shared.logs import setup_logging as setup_process_logging
from shared.redis_errors import REDIS_ERRORS
from shared.tracing import setup_tracing, traceparent_of

log = logging.getLogger(__name__)

AGENT_PATHS = {"/", "/v1/agent/converse"}
TEXT = "text/plain; charset=utf-8"
METRICS_PATH = "/metrics"
DRAINING = "The gateway is shutting down; reconnect (another instance will answer)."
ANSWER_GRACE = 1.0
"""Seconds the error answers of calls given up at DRAIN_TIMEOUT have to reach the provider."""
DRAIN_POLL = 0.02
"""Seconds between looks at the calls in flight while draining."""
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
        self.function_calls = routes.FunctionCallEndpoint(
            config, self.dispatcher, self.catalog, lambda: len(self.sessions)
        )
        self.draining = False
        """Set on SIGTERM: refuse new sessions and calls, let those in flight finish (see the module docstring)."""
        self._principals: weakref.WeakKeyDictionary[ServerConnection, tuple[str, str]] = weakref.WeakKeyDictionary()
        """The caller each accepted handshake verified and its conversation id, until its session starts (weak: a
        handshake that fails after the check leaves nothing behind)."""
        self.resumable = Resumable(config.resume_grace)
        self.conversations = ConversationGate(config, self.dispatcher.redis, self.resumable)
        self.memory = MemoryStore(self.dispatcher.redis, config)
        self.conversations_api = ConversationsEndpoint(self.memory, self.policy, self.function_calls)

    async def handle(self, connection: ServerConnection) -> None:
        principal, conversation_id = self._principals.pop(connection, ("", ""))
        live = self.resumable.get(conversation_id)
        if live is not None and live.principal == principal and await live.attach(connection):
            await connection.wait_closed()  # the live session uses this connection until it closes
            return
        trace = traceparent_of(connection.request.headers) if connection.request is not None else ""
        session = Session(
            connection, lambda: open_provider(self.config), self.dispatcher, self.catalog, self.config, principal,
            conversation_id, self.resumable, memory=self.memory, traceparent=trace,
        )  # fmt: skip
        self.sessions.add(session)
        self.resumable.add(session.conversation_id, session)
        try:
            await session.run()
        finally:
            self.sessions.discard(session)
            self.resumable.remove(session.conversation_id, session)

    async def process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        """Answer plain HTTP requests; return None to let a WebSocket handshake proceed."""
        path = request.path.split("?", 1)[0]
        upgrade = "websocket" in request.headers.get("Upgrade", "").lower()
        if path in AGENT_PATHS and upgrade:
            verdict = self.policy.check(request.headers, request.path)
            if not verdict.allowed:
                return _json(connection, HTTPStatus(verdict.status), {"error": verdict.reason})
            if self.draining:
                return _json(connection, HTTPStatus.SERVICE_UNAVAILABLE, {"error": DRAINING})
            try:
                requested = requested_id(request.path)
            except BadConversationId as exc:
                return _json(connection, HTTPStatus.BAD_REQUEST, {"error": str(exc)})
            # Capacity before ownership: a handshake refused for capacity must not claim the id. HTTP calls in
            # flight count too: each holds a connection and a call, as a session does. A client re-attaching to
            # its parked session takes no new place (admit refuses it when the session is another caller's).
            busy = len(self.sessions) + self.function_calls.in_flight >= self.config.max_sessions
            if busy and (requested is None or requested not in self.resumable):
                return _json(connection, HTTPStatus.SERVICE_UNAVAILABLE, {"error": "Too many sessions; retry later."})
            conversation_id, refusal = await self.conversations.admit(request.path, verdict.principal)
            if refusal is not None:
                return _json(connection, refusal.status, {"error": refusal.reason})
            self._principals[connection] = (verdict.principal, conversation_id)
            return None
        if is_conversations_path(path):
            remote = connection.remote_address[0] if connection.remote_address else ""
            path, _, query = request.path.partition("?")
            get = HttpRequest("GET", path, plain_headers(request.headers), remote=remote, query=query)
            answer = await self.conversations_api.handle(get)
            content_type = answer.headers.pop("Content-Type", TEXT)
            return _body(connection, HTTPStatus(answer.status), answer.body, content_type, answer.headers)
        if path == METRICS_PATH:
            verdict = self.policy.check(request.headers, request.path)
            if not verdict.allowed:
                return _json(connection, HTTPStatus(verdict.status), {"error": verdict.reason})
        return _body(connection, *await self.plain_route(path))

    async def plain_route(self, path: str) -> tuple[HTTPStatus, bytes, str, dict[str, str]]:
        """Status, body, content type and extra headers of a plain ``GET`` (or ``HEAD``) of ``path``; the caller
        has checked credentials where the path needs them (``/metrics``)."""
        if path == METRICS_PATH:
            with contextlib.suppress(*REDIS_ERRORS, TimeoutError):  # a fresh worker count; Redis errors are counted
                async with asyncio.timeout(2):
                    await self.catalog.workers()
            return HTTPStatus.OK, *metrics.exposition(), {}
        if path == "/healthz":
            return HTTPStatus.OK, b"ok\n", TEXT, {}
        if path == "/readyz":
            ready, body = await self.readiness()
            status = HTTPStatus.OK if ready else HTTPStatus.SERVICE_UNAVAILABLE
            return status, (json.dumps(body) + "\n").encode(), "application/json", {}
        if path == routes.FUNCTION_CALL_PATH:
            refusal = routes.method_not_allowed()
            return HTTPStatus(refusal.status), refusal.body, "application/json", {"Allow": refusal.headers["Allow"]}
        page = routes.static_file(path)
        if page is not None:
            return HTTPStatus.OK, *page, {}
        if path in AGENT_PATHS:
            return HTTPStatus.UPGRADE_REQUIRED, b"This path speaks WebSocket (voice agent).\n", TEXT, {}
        return HTTPStatus.NOT_FOUND, b"not found\n", TEXT, {}

    async def handle_http(self, request: HttpRequest) -> HttpResponse:
        """Requests websockets does not serve (it serves only GET): ``HEAD`` of the GET routes, and
        ``POST /function-call`` with its CORS preflight, ``DELETE /conversations/<id>``."""
        if is_conversations_path(request.path):
            if request.method != "HEAD":
                return await self.conversations_api.handle(request)
            answer = await self.conversations_api.handle(dataclasses.replace(request, method="GET"))
            answer.headers["Content-Length"] = str(len(answer.body))
            return dataclasses.replace(answer, body=b"")
        if request.method == "HEAD":
            verdict = self.policy.check(request.headers, request.target)
            if request.path == METRICS_PATH and not verdict.allowed:
                return HttpResponse(HTTPStatus(verdict.status), b"", {"Content-Type": "application/json"})
            status, body, content_type, extra = await self.plain_route(request.path)
            headers = {"Content-Type": content_type, "Content-Length": str(len(body)), "Cache-Control": "no-cache"}
            return HttpResponse(status, b"", {**headers, **extra})
        if request.method == "OPTIONS" and request.path == routes.FUNCTION_CALL_PATH:
            return self.function_calls.preflight(request)  # browsers send no credentials with a preflight
        verdict = self.policy.check(request.headers, request.target)
        if not verdict.allowed:
            return self.function_calls.with_cors(request, HttpResponse.json(verdict.status, {"error": verdict.reason}))
        if self.draining and request.path == routes.FUNCTION_CALL_PATH:
            refusal = HttpResponse.json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": DRAINING}, **{"Retry-After": "1"})
            return self.function_calls.with_cors(request, refusal)
        return self.function_calls.with_cors(request, await self.function_calls.handle(request, verdict.principal))

    async def readiness(self) -> tuple[bool, dict[str, object]]:
        """Whether this process should get traffic: Redis answers, the result subscription is alive and it is
        not draining. Workers are reported (``"workers"``: how many are alive) but not required."""
        try:
            async with asyncio.timeout(2):
                await self.dispatcher.redis.ping()
                workers = await self.catalog.workers()
        except (*REDIS_ERRORS, TimeoutError):
            body = {"redis": False, "workers": 0, "subscribed": self.dispatcher.subscribed, "draining": self.draining}
            return False, body
        ready = self.dispatcher.subscribed and not self.draining
        return ready, {
            "draining": self.draining,
            "redis": True,
            "workers": len(workers),
            "functions": sorted({f.name for w in workers for f in w.functions}),
            "subscribed": self.dispatcher.subscribed,
            "provider": self.config.resolved_provider(),
            "upstream": self.config.resolved_provider(),  # the old name of "provider", for existing monitors
        }

    @property
    def calls_in_flight(self) -> int:
        """Backend calls of this process not yet answered: sessions' and HTTP callers'."""
        return sum(session.calls_running for session in self.sessions) + self.function_calls.in_flight

    async def drain(self, timeout: float) -> None:
        """Refuse new sessions and calls; wait up to ``timeout`` seconds for the calls in flight to be answered.
        Calls still running then are answered with an error and cancelled (no worker starts them later)."""
        self.draining = True
        log.info("draining: %d calls in flight, up to %g s", self.calls_in_flight, timeout)
        try:
            async with asyncio.timeout(timeout):
                while self.calls_in_flight:
                    await asyncio.sleep(DRAIN_POLL)
        except TimeoutError:
            given_up = self.dispatcher.give_up("was not finished: the gateway is shutting down.")
            log.warning("drain timeout: %d calls answered with an error and cancelled", given_up)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(ANSWER_GRACE):  # the errors go upstream before the sessions close
                    while self.calls_in_flight:
                        await asyncio.sleep(DRAIN_POLL)


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
    """Browsers authenticate with subprotocols ``["token", <credential>]`` or ``["bearer", <credential>]``; the
    handshake must then echo that scheme exactly as offered or the browser drops the connection. Clients that
    offer none connect without one."""
    scheme = subprotocol_scheme(offered)
    return Subprotocol(scheme) if scheme is not None else None


CLOSE_TIMEOUT = 2.0
"""Seconds a closing connection waits for the client's close frame (websockets' default is 10 s). A drain
closes every session at its end: a phone that lost its network never answers, and the stop must stay within
DRAIN_TIMEOUT + this (20 + 2 s by default) of SIGTERM, under the platforms' 30 s."""


@asynccontextmanager
async def run_gateway(config: Config, reuse_port: bool = False) -> AsyncIterator[tuple[Gateway, Server]]:
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
        open_timeout=None,  # the connection class applies it, to reading a request but not to serving it
        close_timeout=CLOSE_TIMEOUT,
        select_subprotocol=_select_subprotocol,
        reuse_port=reuse_port,  # only when asked: it would let a second gateway share a port by mistake
    )
    try:
        yield gateway, server
    finally:
        gateway.resumable.drain()  # a client closed by the shutdown is not parked; parked ones end now
        server.close()
        await server.wait_closed()
        await gateway.dispatcher.stop()


async def serve_forever(config: Config, reuse_port: bool = False) -> None:
    """Serve until SIGTERM or SIGINT, then close every session (1001) and stop. Exits with code 2 when the
    settings refuse to bind (no credentials on a public address) or RESULT_TTL is shorter than FUNCTION_TIMEOUT."""
    policy = AccessPolicy(config)
    refusal = check_bind(config, policy) or result_ttl_refusal(config, config.function_timeout, "FUNCTION_TIMEOUT")
    if refusal:
        logging.getLogger("gateway").error(refusal)
        raise SystemExit(2)
    if not policy.requires_credentials:
        logging.getLogger("gateway").warning(
            "no credentials configured (GATEWAY_TOKENS / TOKEN_SECRET): anyone who reaches %s may connect", config.host
        )
    weak = weak_secret_warning(config)
    if weak:
        logging.getLogger("gateway").warning(weak)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with run_gateway(config, reuse_port=reuse_port) as (gateway, server):
        port = next(iter(server.sockets)).getsockname()[1]
        provider = config.resolved_provider()
        note = " (simulated agent: offline, no account needed)" if provider == "simulated" else ""
        logging.getLogger("gateway").info(
            "gateway (pid %d) listening on ws://%s:%d/v1/agent/converse, provider %s%s, Redis %s",
            os.getpid(), config.host, port, provider, note, redacted(config.redis_url),
        )  # fmt: skip
        await stop.wait()
        await gateway.drain(config.drain_timeout)
        logging.getLogger("gateway").info("shutting down")


def setup_logging(config: Config) -> None:
    """Log lines on stderr, URL passwords and the gateway's own secrets (tokens, provider keys) masked; with
    several gateway processes, each line says which process wrote it."""
    pid = " [%(process)d]" if config.web_concurrency > 1 else ""
    fmt = f"%(asctime)s %(levelname)s{pid} %(name)s: %(message)s"
    setup_process_logging(config.log_level, fmt, masking(secret_values(config)), config.log_format)
    setup_tracing("voice-function-gateway")


def run_gateway_process(config: Config, index: int) -> None:
    """One of WEB_CONCURRENCY gateway processes (started by ``python -m gateway``'s supervisor): all bind the
    same port with ``SO_REUSEPORT`` and the kernel spreads new connections over them. It leaves the
    supervisor's process group, so a terminal's Ctrl-C reaches only the supervisor, which forwards one SIGTERM."""
    os.setpgrp()
    setup_logging(config)
    asyncio.run(serve_forever(config, reuse_port=True))
