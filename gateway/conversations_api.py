"""``GET`` and ``DELETE /conversations/<id>``: a conversation's stored memory, for apps.

``GET`` answers ``200 {"conversation_id": ..., "entries": [...]}`` (the entries of ``gateway.memory``, oldest
first), or 404 when nothing is stored (none ever, expired, erased, or CONVERSATION_MEMORY off). ``DELETE`` erases
the memory and the conversation's ownership and answers 204, whether or not anything was stored.

The rules are the WebSocket's and ``POST /function-call``'s: the same credentials, Host and Origin checks
(``AccessPolicy.check``), the same per-address request rate, CORS grants for ALLOWED_ORIGINS only; a
conversation another caller owns is refused (403), a malformed id too (400). When credentials are configured, a
conversation whose memory is stored but which has no owner (``conversation_ids.ORPHANED``) is refused (403) to
every caller, for ``GET`` and ``DELETE`` alike: whose it was cannot be told, and it expires with its memory.
``HEAD`` answers as ``GET`` without the body.
"""

from __future__ import annotations

import asyncio
from http import HTTPStatus

from websockets.datastructures import Headers

from gateway import conversation_ids
from gateway.auth import AccessPolicy
from gateway.http import HttpRequest, HttpResponse
from gateway.memory import MemoryStore
from gateway.routes import FunctionCallEndpoint
from shared.redis_errors import REDIS_ERRORS

PREFIX = "/conversations/"
METHODS = "GET, DELETE"
REDIS_TIMEOUT = 2.0
"""Seconds to read or erase before answering 503: a hung Redis must not hold an HTTP caller for ever."""


def is_conversations_path(path: str) -> bool:
    return path.split("?", 1)[0].startswith(PREFIX)


def plain_headers(headers: Headers) -> dict[str, str]:
    """websockets' headers as :class:`HttpRequest` has them: lower-cased names, a repeated header's values joined
    with ", " (as ``gateway.auth`` reads them, so a repeated credential or Origin fails its check)."""
    joined: dict[str, str] = {}
    for name, value in headers.raw_items():
        key = name.lower()
        joined[key] = f"{joined[key]}, {value}" if key in joined else value
    return joined


class ConversationsEndpoint:
    """The conversations API. ``calls`` lends its CORS rules and per-address limits: one policy for every route."""

    def __init__(self, store: MemoryStore, policy: AccessPolicy, calls: FunctionCallEndpoint) -> None:
        self.store = store
        self.policy = policy
        self.calls = calls

    async def handle(self, request: HttpRequest) -> HttpResponse:
        """Any request under :data:`PREFIX` (its ``?token=``, in ``request.query``, is a credential)."""
        if request.method == "OPTIONS":
            return self.calls.preflight(request, METHODS)  # browsers send no credentials with a preflight
        verdict = self.policy.check(request.headers, request.target)
        if not verdict.allowed:
            return self.calls.with_cors(request, HttpResponse.json(verdict.status, {"error": verdict.reason}))
        return self.calls.with_cors(request, await self._answer(request, verdict.principal))

    async def _answer(self, request: HttpRequest, principal: str) -> HttpResponse:
        if request.method not in ("GET", "DELETE"):
            return HttpResponse.json(
                HTTPStatus.METHOD_NOT_ALLOWED, {"error": "Use GET or DELETE."}, Allow=f"{METHODS}, HEAD, OPTIONS"
            )
        refusal = self.calls.limits.request(request.remote)
        if refusal:
            return HttpResponse.json(refusal.status, {"error": refusal.reason}, **refusal.headers)
        conversation_id = request.path.split("?", 1)[0].removeprefix(PREFIX)
        if not conversation_ids.ID_PATTERN.match(conversation_id):
            error = "A conversation id is 1-128 characters of A-Z, a-z, 0-9, '_' and '-'."
            return HttpResponse.json(HTTPStatus.BAD_REQUEST, {"error": error})
        try:
            async with asyncio.timeout(REDIS_TIMEOUT):
                owner = await conversation_ids.owner(self.store.client, conversation_id)
                if owner is not None and owner != principal:
                    return HttpResponse.json(HTTPStatus.FORBIDDEN, {"error": "This conversation is another caller's."})
                if owner is None and principal and await self.store.stored(conversation_id):
                    error = "This conversation's memory is stored but its owner is unknown; it is nobody's."
                    return HttpResponse.json(HTTPStatus.FORBIDDEN, {"error": error})
                if request.method == "DELETE":
                    await self.store.erase(conversation_id)
                    return HttpResponse(HTTPStatus.NO_CONTENT)
                entries = await self.store.entries(conversation_id)
        except (*REDIS_ERRORS, TimeoutError):
            return HttpResponse.json(HTTPStatus.SERVICE_UNAVAILABLE, {"error": "Conversation memory unavailable."})
        if not entries:
            return HttpResponse.json(HTTPStatus.NOT_FOUND, {"error": "No stored conversation has this id."})
        return HttpResponse.json(HTTPStatus.OK, {"conversation_id": conversation_id, "entries": entries})
