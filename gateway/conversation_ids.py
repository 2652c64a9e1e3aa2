"""Conversation ids and who owns them.

A client names its conversation with ``?conversation=<id>`` on the WebSocket URL (the gateway makes one when it
does not), so that it can come back to it: re-attach to the live provider session within RESUME_GRACE, or find
its stored memory after that. When credentials are configured a conversation belongs to the caller who started
it: the first caller to use an id owns it (``SET NX`` with CONVERSATION_TTL), and any other caller is refused.
Without credentials every caller is ``""`` and owns every conversation, as it may call every function.
"""

from __future__ import annotations

import re
import secrets
from urllib.parse import parse_qs, urlsplit

import redis.asyncio as aioredis

from shared import keys

CONVERSATION_PARAM = "conversation"
ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


class BadConversationId(ValueError):
    """The request names a conversation id that is not 1-128 characters of ``[A-Za-z0-9_-]`` (HTTP 400)."""


def requested_id(path: str) -> str | None:
    """The conversation id a request path names (``?conversation=``), None when it names none.

    Raises :class:`BadConversationId` for an empty, repeated or malformed one: a client that asked for a
    conversation must not silently get another."""
    values = parse_qs(urlsplit(path).query, keep_blank_values=True).get(CONVERSATION_PARAM)
    if values is None:
        return None
    if len(values) != 1 or not ID_PATTERN.match(values[0]):
        raise BadConversationId("conversation must be 1-128 characters of A-Z, a-z, 0-9, '_' and '-'")
    return values[0]


def new_id() -> str:
    """A fresh conversation id: 128 random bits, so ids are not guessable (they are not secrets, though:
    ownership, not obscurity, protects a conversation when credentials are configured)."""
    return "c_" + secrets.token_urlsafe(16)


async def claim(client: aioredis.Redis, conversation_id: str, principal: str, ttl: int) -> bool:
    """Make ``principal`` the owner of ``conversation_id`` unless someone else is; True when ``principal`` owns
    it now. The ownership's expiry is renewed on every claim, so it lives as long as the conversation is used."""
    key = keys.conversation_owner(conversation_id)
    async with client.pipeline(transaction=False) as pipe:
        pipe.set(key, principal, nx=True, ex=ttl)
        pipe.get(key)
        _, owner = await pipe.execute()
    if owner is None:  # expired between the two commands: try once more
        await client.set(key, principal, nx=True, ex=ttl)
        owner = await client.get(key)
    if isinstance(owner, bytes):
        owner = owner.decode()
    if owner != principal:
        return False
    await client.expire(key, ttl)
    return True


async def owner(client: aioredis.Redis, conversation_id: str) -> str | None:
    """Who owns ``conversation_id``, None when nobody does (never claimed, or expired)."""
    value = await client.get(keys.conversation_owner(conversation_id))
    return value.decode() if isinstance(value, bytes) else value
