"""The gateway's plain HTTP routes: the test page's static files and ``POST /function-call``.

``POST /function-call`` keeps the prior art's contract for frontends that still forward calls themselves:
``{id, name, arguments}`` (all strings) → ``200 {"id": <id>, "content": "<string>"}`` or
``200 {"id": <id>, "error": "<string>"}``, run on the same queues and workers as the calls the gateway
intercepts. It obeys the WebSocket's rules: credentials (checked by ``gateway.server``), the same limits (per
remote address: requests per second and calls in flight; calls count with sessions against MAX_SESSIONS), and
only ``application/json`` bodies, so a browser's cross-site "simple" POST (``text/plain``, sent without a CORS
preflight) runs nothing. Browsers on the ALLOWED_ORIGINS get CORS grants; no one else does.
"""

from __future__ import annotations

import asyncio
import json
import mimetypes
import re
import uuid
from collections.abc import Callable
from http import HTTPStatus
from pathlib import Path

from gateway.auth import allowed_origins, normal_origin
from gateway.catalog import Catalog
from gateway.dispatcher import Dispatcher
from gateway.http import HttpRequest, HttpResponse
from gateway.limits import AddressLimits, Refusal
from shared.config import Config
from shared.logs import log_context
from shared.redis_errors import REDIS_ERRORS
from shared.tracing import span, traceparent_of

STATIC_DIR = Path(__file__).parent / "static"
FUNCTION_CALL_PATH = "/function-call"
HTTP_CALL_PREFIX = "http-"
"""Every HTTP call gets its own server-made call id, ``http-<random hex>``: it can never collide with a provider's
call id or with another HTTP caller's, so no caller can read (or pre-empt) someone else's result."""
CALL_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,128}$")
"""The client's ``id``: only echoed in the answer, but bounded and plain so echoing it is harmless."""
FUNCTION_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""``workers.registry.NAME_PATTERN``, repeated here because gateways import no worker code."""
CATALOG_TIMEOUT = 2.0
"""Seconds to read the catalog before answering 503: a hung Redis must not hold an HTTP caller for ever."""
PREFLIGHT_MAX_AGE = "600"
"""Seconds a browser may cache a CORS preflight grant."""


def static_file(path: str) -> tuple[bytes, str] | None:
    """Body and content type of a file of the test page, or None. Only files inside ``gateway/static``."""
    name = "index.html" if path == "/" else path.removeprefix("/static/") if path.startswith("/static/") else None
    if not name or "/" in name or name.startswith("."):
        return None
    file = STATIC_DIR / name
    if not file.is_file():
        return None
    content_type = mimetypes.guess_type(name)[0] or "application/octet-stream"
    if content_type.startswith("text/") or content_type in ("application/javascript", "text/javascript"):
        content_type += "; charset=utf-8"
    return file.read_bytes(), content_type


def is_json(headers: dict[str, str]) -> bool:
    """``Content-Type: application/json``, parameters such as ``; charset=utf-8`` allowed."""
    return headers.get("content-type", "").split(";", 1)[0].strip().lower() == "application/json"


def new_call_id() -> str:
    return HTTP_CALL_PREFIX + uuid.uuid4().hex


def parse_call(body: bytes) -> tuple[str, str, str] | str:
    """``(id, name, arguments)`` from a request body, or the reason it is refused (a 400)."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return "Body must be a JSON object."
    fields = ("id", "name", "arguments")
    if not isinstance(data, dict) or not all(isinstance(data.get(f), str) for f in fields):
        return "Fields 'id', 'name' and 'arguments' are required strings."
    if not CALL_ID.match(data["id"]):
        return "Field 'id' must be 1-128 characters of A-Z, a-z, 0-9, '_', '.', ':' and '-'."
    if not FUNCTION_NAME.match(data["name"]):
        return "Field 'name' must be 1-64 characters of A-Z, a-z, 0-9, '_' and '-'."
    return data["id"], data["name"], data["arguments"]


class FunctionCallEndpoint:
    """``POST /function-call`` and its CORS preflight, with the limits a WebSocket session has.

    ``sessions`` counts the process's WebSocket sessions: HTTP calls in flight (:attr:`in_flight`) count with
    them against MAX_SESSIONS, in both directions (``gateway.server`` adds :attr:`in_flight` to its own check).
    """

    def __init__(self, config: Config, dispatcher: Dispatcher, catalog: Catalog, sessions: Callable[[], int]) -> None:
        self.config = config
        self.dispatcher = dispatcher
        self.catalog = catalog
        self.sessions = sessions
        self.origins = allowed_origins(config)
        self.limits = AddressLimits(
            config.client_message_rate, 2 * config.client_message_rate, config.max_pending_calls
        )  # the WebSocket's rate and burst, per address instead of per session
        self.in_flight = 0

    def preflight(self, request: HttpRequest, methods: str = "POST") -> HttpResponse:
        """Answer a CORS preflight: a grant (for ``methods``) for a configured origin, 403 without CORS headers
        otherwise."""
        origin = request.headers.get("origin", "")
        if normal_origin(origin) not in self.origins:
            return HttpResponse.json(HTTPStatus.FORBIDDEN, {"error": "Origin not allowed."})
        return HttpResponse(
            HTTPStatus.NO_CONTENT,
            headers={
                "Access-Control-Allow-Origin": origin,
                "Access-Control-Allow-Methods": methods,
                "Access-Control-Allow-Headers": "Authorization, Content-Type",
                "Access-Control-Max-Age": PREFLIGHT_MAX_AGE,
                "Vary": "Origin",
            },
        )

    def with_cors(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        """Let a browser on a configured origin read the answer; any other origin's page cannot."""
        origin = request.headers.get("origin", "")
        if origin and normal_origin(origin) in self.origins:
            response.headers.update({"Access-Control-Allow-Origin": origin, "Vary": "Origin"})
        return response

    async def handle(self, request: HttpRequest, principal: str = "") -> HttpResponse:
        """Everything but the credentials (``gateway.server`` checks those first, as for a WebSocket, and passes
        the caller they name: ``principal``, which the function reads as ``ctx.principal``)."""
        if request.path != FUNCTION_CALL_PATH:
            return HttpResponse.json(HTTPStatus.NOT_FOUND, {"error": "Not found."})
        if request.method != "POST":
            return method_not_allowed()
        refusal = self.limits.request(request.remote)
        if refusal:
            return _refused(refusal)
        if not is_json(request.headers):
            # Before anything runs: a cross-site form or fetch may send text/plain without a preflight.
            return HttpResponse.json(
                HTTPStatus.UNSUPPORTED_MEDIA_TYPE, {"error": "Content-Type must be application/json."}
            )
        parsed = parse_call(request.body)
        if isinstance(parsed, str):
            return HttpResponse.json(HTTPStatus.BAD_REQUEST, {"error": parsed})
        if self.sessions() + self.in_flight >= self.config.max_sessions:
            return HttpResponse.json(
                HTTPStatus.SERVICE_UNAVAILABLE,
                {"error": "Too many sessions and calls; retry later."},
                **{"Retry-After": "1"},
            )
        refusal = self.limits.acquire(request.remote)
        if refusal:
            return _refused(refusal)
        self.in_flight += 1
        try:
            return await self._run(*parsed, principal, traceparent_of(request.headers))
        finally:
            self.in_flight -= 1
            self.limits.release(request.remote)

    async def _run(self, client_id: str, name: str, arguments: str, principal: str, trace: str) -> HttpResponse:
        try:
            async with asyncio.timeout(CATALOG_TIMEOUT):
                # As for a session: during a catalog gap (workers restarting, Redis just back) the last catalog
                # read serves, and a name a worker ever owned is still the backend's; its call waits in its queue.
                owned = await self.catalog.session_functions(wait=0)
        except (*REDIS_ERRORS, TimeoutError):
            return HttpResponse.json(HTTPStatus.SERVICE_UNAVAILABLE, {"id": client_id, "error": "Backend unavailable."})
        spec = owned.get(name) or self.catalog.ever_owned.get(name)
        if spec is None:
            return HttpResponse.json(HTTPStatus.OK, {"id": client_id, "error": f"Unknown function: {name}"})
        call_id = new_call_id()
        with (
            span("call", trace, function=name, call_id=call_id) as trace,
            log_context(call_id=call_id, function=name, traceparent=trace),
        ):
            result = await self.dispatcher.call(call_id, name, arguments, spec, "http", principal, traceparent=trace)
        answer = {"content": result.content} if result.ok else {"error": result.error}
        return HttpResponse.json(HTTPStatus.OK, {"id": client_id, **answer})


def _refused(refusal: Refusal) -> HttpResponse:
    return HttpResponse.json(refusal.status, {"error": refusal.reason}, **refusal.headers)


def method_not_allowed() -> HttpResponse:
    return HttpResponse.json(HTTPStatus.METHOD_NOT_ALLOWED, {"error": "Use POST."}, Allow="POST, OPTIONS")
