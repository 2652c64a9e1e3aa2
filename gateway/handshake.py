"""The conversation part of a WebSocket handshake: which conversation a connection joins, and whether it may.

A malformed ``?conversation=`` is refused (HTTP 400, :class:`~gateway.conversation_ids.BadConversationId`);
without one the gateway makes an id. When credentials are configured (the caller is not ``""``) the caller must
own the conversation: the first caller to use an id claims it in Redis for CONVERSATION_TTL (renewed at each
handshake and memory write), and another caller gets 403, as it does when the conversation is live in this process
under another caller, or when its memory is stored but nobody owns it (``conversation_ids.ORPHANED``). When Redis
cannot be reached a requested id is refused with 503 (ownership cannot be checked, and a conversation must not be
stolen); a fresh id is accepted unclaimed, since nobody else can know it yet. The server checks capacity
(MAX_SESSIONS) before it asks: a handshake refused for capacity claims nothing.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from http import HTTPStatus

import redis.asyncio as aioredis

from gateway import conversation_ids
from gateway.resume import Resumable
from shared.config import Config
from shared.redis_errors import REDIS_ERRORS

log = logging.getLogger(__name__)

CLAIM_TIMEOUT = 2.0
"""Seconds a handshake waits for Redis to confirm ownership before refusing with 503."""


@dataclass(frozen=True, slots=True)
class Refusal:
    status: HTTPStatus
    reason: str


NOT_OWNER = Refusal(HTTPStatus.FORBIDDEN, "This conversation belongs to another caller.")
ORPHANED = Refusal(
    HTTPStatus.FORBIDDEN, "This conversation's memory is stored but its owner is unknown; it is nobody's to join."
)
UNCHECKED = Refusal(
    HTTPStatus.SERVICE_UNAVAILABLE, "The conversation's owner cannot be checked right now (Redis down); retry later."
)


class ConversationGate:
    """Admits handshakes to conversations (see the module's docstring)."""

    def __init__(self, config: Config, redis: aioredis.Redis, resumable: Resumable) -> None:
        self._ttl = config.conversation_ttl
        self._redis = redis
        self._resumable = resumable

    async def admit(self, path: str, principal: str) -> tuple[str, Refusal | None]:
        """The conversation id for a handshake of ``path`` by ``principal``, and a refusal or None.

        Raises :class:`~gateway.conversation_ids.BadConversationId` for a malformed ``?conversation=``."""
        requested = conversation_ids.requested_id(path)
        conversation_id = requested or conversation_ids.new_id()
        live = self._resumable.get(conversation_id)
        if live is not None and live.principal != principal:
            return conversation_id, NOT_OWNER
        if not principal:
            return conversation_id, None  # no credentials configured: every caller is "" and owns everything
        try:
            async with asyncio.timeout(CLAIM_TIMEOUT):
                owned = await conversation_ids.claim(self._redis, conversation_id, principal, self._ttl)
        except (*REDIS_ERRORS, TimeoutError):
            if requested is not None:
                log.warning("conversation %s: owner unchecked (Redis down); handshake refused", conversation_id)
                return conversation_id, UNCHECKED
            log.warning("conversation %s: started unclaimed (Redis down)", conversation_id)
            return conversation_id, None
        if owned == conversation_ids.ORPHANED:
            return conversation_id, ORPHANED
        return conversation_id, None if owned == conversation_ids.OWNED else NOT_OWNER
