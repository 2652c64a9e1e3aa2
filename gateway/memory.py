"""A conversation's memory: its turns and backend calls, kept in Redis across sessions.

Each conversation (``?conversation=<id>``) has one Redis list, ``keys.conversation_memory(id)``, of small JSON
entries, oldest first::

    {"kind": "turn", "role": "user" | "assistant", "content": "..."}
    {"kind": "call", "id": "...", "name": "...", "arguments": "...", "result": "...", "client_side": false}

(a call that failed has ``"error"`` in place of ``"result"``). Every write is one script: ``RPUSH`` + ``LTRIM`` to
CONVERSATION_MAX_ENTRIES + ``EXPIRE`` CONVERSATION_TTL, so the list is bounded and lives as long as the conversation
is used, and, when credentials are configured, the owner key re-set to the session's caller with the same TTL, so
ownership never expires before the memory it guards (a write to a conversation another caller owns now, after a
``DELETE``, is dropped). Text longer than an entry's share of :data:`ENTRY_BYTES` is cut and the entry marked
``"truncated": true``: a function result can be large, and the memory is replayed into every later Settings.

Memory is best effort: the session records entries without waiting (:meth:`SessionMemory.record`), one writer
task sends them in order, and a Redis error is logged and counted, never seen by the conversation.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterable
from typing import Any

import redis.asyncio as aioredis

from shared import keys
from shared.config import Config
from shared.envelopes import CallResult
from shared.redis_errors import REDIS_FAILURES

log = logging.getLogger(__name__)

Entry = dict[str, Any]

ENTRY_BYTES = 8 * 1024
"""Largest entry, about: a call's arguments get :data:`ARGUMENTS_BYTES` of it, its result (or a turn's text) the
rest."""
ARGUMENTS_BYTES = 2 * 1024
TEXT_BYTES = ENTRY_BYTES - ARGUMENTS_BYTES - 512
"""A turn's text or a call's result; 512 bytes are left for the entry's other fields and JSON escapes."""
QUEUE_LIMIT = 256
"""Entries a session may have waiting for the writer; beyond it (Redis far behind) new ones are dropped."""
FLUSH_TIMEOUT = 2.0
"""Seconds a closing session waits for its last entries to be written."""
ROLES = ("user", "assistant")

_APPEND = """
if ARGV[1] ~= '' then
  local owner = redis.call('GET', KEYS[2])
  if owner and owner ~= ARGV[1] then return 0 end
  redis.call('SET', KEYS[2], ARGV[1], 'EX', ARGV[2])
end
redis.call('RPUSH', KEYS[1], unpack(ARGV, 4))
redis.call('LTRIM', KEYS[1], -tonumber(ARGV[3]), -1)
redis.call('EXPIRE', KEYS[1], ARGV[2])
return 1
"""


def _cut(text: str, limit: int) -> tuple[str, bool]:
    """``text`` within ``limit`` UTF-8 bytes (cut on a character boundary), and whether it was cut. A lone
    surrogate (JSON allows ``"\\ud800"``; UTF-8 does not) becomes ``?``: what a provider says must never break
    the session that records it (tests/fuzz)."""
    try:
        raw = text.encode()
    except UnicodeEncodeError:
        raw = text.encode(errors="replace")
        text = raw.decode()
    if len(raw) <= limit:
        return text, False
    return raw[:limit].decode(errors="ignore"), True


def turn_entry(role: str, content: str) -> Entry:
    """What one ``ConversationText`` leaves in memory."""
    text, cut = _cut(content, TEXT_BYTES)
    entry: Entry = {"kind": "turn", "role": role, "content": text}
    if cut:
        entry["truncated"] = True
    return entry


def call_entry(call_id: str, name: str, arguments: str, result: CallResult) -> Entry:
    """What one answered backend call leaves in memory: its arguments and the result (or error) the provider got."""
    args, cut_args = _cut(arguments, ARGUMENTS_BYTES)
    outcome, cut_outcome = _cut(result.content if result.ok else (result.error or ""), TEXT_BYTES)
    entry: Entry = {"kind": "call", "id": call_id, "name": name, "arguments": args}
    entry["result" if result.ok else "error"] = outcome
    entry["client_side"] = False
    if cut_args or cut_outcome:
        entry["truncated"] = True
    return entry


def decode_entries(raw: Iterable[bytes | str]) -> list[Entry]:
    """Entries read from the list; one that is not a JSON object (written by something else) is skipped."""
    entries = []
    for item in raw:
        with contextlib.suppress(ValueError):
            value = json.loads(item)
            if isinstance(value, dict):
                entries.append(value)
    return entries


class MemoryStore:
    """The Redis side of conversation memory, for sessions and for the HTTP API."""

    def __init__(self, client: aioredis.Redis, config: Config) -> None:
        self.client = client
        self.enabled = config.conversation_memory
        self.ttl = config.conversation_ttl
        self.max_entries = config.conversation_max_entries
        self.failures = 0
        """Writes or reads that failed (Redis down): counted, logged, never fatal to a conversation."""

    async def append(self, conversation_id: str, entries: list[Entry], principal: str = "") -> bool:
        """Add ``entries``, keep the newest CONVERSATION_MAX_ENTRIES, renew the expiry and ``principal``'s
        ownership (unless ``""``: no credentials): one atomic round trip. False when another caller owns the
        conversation (nothing is written)."""
        keys_ = (keys.conversation_memory(conversation_id), keys.conversation_owner(conversation_id))
        encoded = (json.dumps(e, separators=(",", ":"), ensure_ascii=False) for e in entries)
        return bool(await self.client.eval(_APPEND, 2, *keys_, principal, self.ttl, self.max_entries, *encoded))

    async def entries(self, conversation_id: str) -> list[Entry]:
        """The stored entries, oldest first ([] when there are none or memory is off)."""
        if not self.enabled:
            return []
        return decode_entries(await self.client.lrange(keys.conversation_memory(conversation_id), 0, -1))

    async def stored(self, conversation_id: str) -> bool:
        """Whether the conversation has memory in Redis (whatever CONVERSATION_MEMORY says now)."""
        return bool(await self.client.exists(keys.conversation_memory(conversation_id)))

    async def erase(self, conversation_id: str) -> None:
        """Forget the conversation: its memory and who owns it."""
        await self.client.delete(keys.conversation_memory(conversation_id), keys.conversation_owner(conversation_id))


class SessionMemory:
    """One session's view of its conversation's memory: the history read when Settings arrive, and a writer
    that stores entries behind the conversation, in order, without ever delaying a frame."""

    def __init__(self, store: MemoryStore, conversation_id: str, session_id: str = "-", principal: str = "") -> None:
        self.store = store
        self.conversation_id = conversation_id
        self.principal = principal
        """The session's caller: each write renews its ownership of the conversation."""
        self.session_id = session_id
        self.dropped = 0
        """Entries not stored: the queue was full or Redis failed."""
        self._queue: asyncio.Queue[Entry] = asyncio.Queue(QUEUE_LIMIT)
        self._writer: asyncio.Task[None] | None = None

    async def history(self) -> list[Entry]:
        """What the conversation already holds; [] when Redis cannot tell (the session starts without history)."""
        try:
            return await self.store.entries(self.conversation_id)
        except REDIS_FAILURES as exc:
            self.store.failures += 1
            log.warning("session %s: conversation memory unreadable: %s", self.session_id, exc)
            return []

    def record(self, entry: Entry) -> None:
        """Store ``entry`` soon; never waits, never raises."""
        try:
            self._queue.put_nowait(entry)
        except asyncio.QueueFull:
            self.dropped += 1
            return
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(self._write(), name=f"{self.session_id}-memory")

    async def close(self) -> None:
        """Wait (briefly) for the entries still queued: a client that reconnects at once finds them stored."""
        if self._writer is None:
            return
        try:
            async with asyncio.timeout(FLUSH_TIMEOUT):
                await asyncio.shield(self._writer)
        except TimeoutError:
            self._writer.cancel()
            self.dropped += self._queue.qsize()

    async def _write(self) -> None:
        """Send what is queued, a batch per round trip, until the queue is empty."""
        while not self._queue.empty():
            batch = [self._queue.get_nowait() for _ in range(self._queue.qsize())]
            try:
                stored = await self.store.append(self.conversation_id, batch, self.principal)
            except Exception as exc:  # Redis failures above all; none may reach the session's cleanup
                self.store.failures += 1
                self.dropped += len(batch)
                log.warning(
                    "session %s: %d conversation memory entries not stored: %s", self.session_id, len(batch), exc
                )
                continue
            if not stored:  # erased, then claimed by another caller: its conversation is not this session's
                self.dropped += len(batch)
                log.warning("session %s: conversation now owned by another caller; memory not stored", self.session_id)


def session_memory(
    store: MemoryStore, conversation_id: str, session_id: str, principal: str = ""
) -> SessionMemory | None:
    """A session's memory, or None when memory is off or the session has no conversation id."""
    if not store.enabled or not conversation_id:
        return None
    return SessionMemory(store, conversation_id, session_id, principal)
