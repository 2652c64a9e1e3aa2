"""Conversation ids and who owns them.

A client names its conversation with ``?conversation=<id>`` on the WebSocket URL (the gateway makes one when it
does not), so that it can come back to it: re-attach to the live provider session within RESUME_GRACE, or find
its stored memory after that. When credentials are configured a conversation belongs to the caller who started
it: the first caller to use an id owns it (an owner key with CONVERSATION_TTL), and any other caller is refused.
The owner key is renewed at each handshake and with each memory write (``gateway.memory``), so it lives at least as
long as the memory. A conversation whose memory is stored but which has no owner (memory written without
credentials, or an owner key lost some other way) is :data:`ORPHANED`: it is refused to every caller rather than
given to the first comer, until its memory expires. Without credentials every caller is ``""`` and owns every
conversation, as it may call every function.
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


OWNED, TAKEN, ORPHANED = 1, 0, -1
"""What :func:`claim` finds: the caller owns the conversation (now), another caller does, or nobody does but its
memory is stored (whose it was cannot be told, so nobody gets it)."""

_CLAIM = """
local owner = redis.call('GET', KEYS[1])
if owner == ARGV[1] then
  redis.call('EXPIRE', KEYS[1], ARGV[2])
  return 1
end
if owner then return 0 end
if redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


async def claim(client: aioredis.Redis, conversation_id: str, principal: str, ttl: int) -> int:
    """Make ``principal`` the owner of ``conversation_id`` unless someone else is, or it is orphaned: one atomic
    script. Returns :data:`OWNED`, :data:`TAKEN` or :data:`ORPHANED`; the ownership's expiry is renewed when
    :data:`OWNED`."""
    keys_ = (keys.conversation_owner(conversation_id), keys.conversation_memory(conversation_id))
    return int(await client.eval(_CLAIM, 2, *keys_, principal, ttl))


async def owner(client: aioredis.Redis, conversation_id: str) -> str | None:
    """Who owns ``conversation_id``, None when nobody does (never claimed, or expired)."""
    value = await client.get(keys.conversation_owner(conversation_id))
    return value.decode() if isinstance(value, bytes) else value
