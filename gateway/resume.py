"""Live re-attach: a session whose client dropped is parked for RESUME_GRACE seconds instead of closed.

While parked, the provider session stays open (the keepalive ticker runs as usual), backend calls finish and are
answered upstream (they are the gateway's own), and what the client would have received is kept: text frames in
order, up to :data:`KEPT_MESSAGES` messages and :data:`KEPT_BYTES` bytes (past either the oldest are dropped and
the drop is told in a Warning on delivery); audio is dropped. The window counts from the drop, whatever failed
resumes happen in it. A client that closes with 1000 (normal closure: hung up on purpose) is not parked: its session
ends (:func:`hung_up`). A client that reconnects with the same conversation id (and owner) within the window gets
``Conversation`` (``resumed: true``); its first message must be Settings, which the gateway answers itself with
``SettingsApplied`` (a Warning when they ask for what the live session cannot change, :func:`settings_changes`),
then gets the kept messages in order, then the live ones.

A session knows its client through a :class:`ClientLink`, which its loops send to: while attached it sends on the
client's WebSocket; while parked (or replaying the kept messages to a new connection) it keeps what it is given.
:class:`Parking` is the rest of a session's side: the wait within the window, take-over, the resumed greeting.
:class:`Resumable` is the gateway process's registry of sessions by conversation id. A parked session lives in
one gateway process only: a client that reconnects to another (``WEB_CONCURRENCY`` > 1, another machine) gets a
new provider session (``resumed: false``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import logging
from collections.abc import Iterator
from typing import Any, Protocol

from websockets.exceptions import ConnectionClosed

from gateway.actions import Frame
from gateway.conversation import CLOSE_POLICY
from shared.protocol import (
    ConversationInfo,
    ErrorCode,
    ProtocolError,
    Settings,
    SettingsApplied,
    dump,
    error_frame,
    parse_json_object,
    validate,
    warning_frame,
)

log = logging.getLogger(__name__)

KEPT_MESSAGES = 256
"""Text messages a parked session keeps for its client; past it the oldest are dropped."""
KEPT_BYTES = 1 << 20
"""Bytes of text a parked session keeps for its client; past it the oldest are dropped."""
TAKEN_OVER = 4409
"""Close code of a client connection replaced by a newer one for the same conversation."""


class Connection(Protocol):
    """What a session needs of a client connection (a ``websockets`` ``ServerConnection``)."""

    async def send(self, message: Frame) -> None: ...

    async def recv(self) -> Frame: ...

    async def close(self, code: int = 1000, reason: str = "") -> None: ...

    def __aiter__(self) -> Any: ...


class KeptMessages:
    """The text frames a client missed, oldest first, bounded by count and bytes (the oldest go first)."""

    def __init__(self, max_messages: int = KEPT_MESSAGES, max_bytes: int = KEPT_BYTES) -> None:
        self.max_messages, self.max_bytes = max_messages, max_bytes
        self.dropped = 0
        """Messages dropped since the last delivery (told in a Warning)."""
        self._frames: collections.deque[str] = collections.deque()
        self._bytes = 0

    def keep(self, frame: Frame) -> None:
        if isinstance(frame, bytes):
            return  # audio is stale after a drop: the client could only play it late
        self._frames.append(frame)
        self._bytes += len(frame)
        while len(self._frames) > self.max_messages or (self._bytes > self.max_bytes and len(self._frames) > 1):
            self._bytes -= len(self._frames.popleft())
            self.dropped += 1

    def __len__(self) -> int:
        return len(self._frames)

    def delivery(self) -> Iterator[str]:
        """The kept frames in order, a Warning first when some were dropped; each leaves the store as it is
        taken, so frames kept meanwhile are delivered too."""
        if self.dropped:
            description = f"{self.dropped} message(s) sent while the client was away were dropped (too many kept)."
            self.dropped = 0
            yield warning_frame(ErrorCode.MESSAGES_DROPPED, description)
        while self._frames:
            frame = self._frames.popleft()
            self._bytes -= len(frame)
            yield frame

    def putback(self, frame: str) -> None:
        """Return a frame that could not be delivered to the front, so it is delivered first next time."""
        self._frames.appendleft(frame)
        self._bytes += len(frame)


class ClientLink:
    """The session's client: a WebSocket while attached, :class:`KeptMessages` while parked.

    With ``resumable`` false (RESUME_GRACE=0) it is the WebSocket, exactly: a send to a closed one raises
    ``ConnectionClosed``. Otherwise such a send is kept, as the client may come back.
    """

    def __init__(self, ws: Connection, resumable: bool) -> None:
        self.ws: Connection | None = ws
        self.resumable = resumable
        self.kept = KeptMessages()

    async def send(self, frame: Frame) -> None:
        ws = self.ws
        if ws is None:
            self.kept.keep(frame)
            return
        try:
            await ws.send(frame)
        except ConnectionClosed:
            if not self.resumable:
                raise
            self.kept.keep(frame)

    async def close(self, code: int = 1000, reason: str = "") -> None:
        if self.ws is not None:
            await self.ws.close(code, reason)

    def park(self) -> None:
        self.ws = None

    async def attach(self, ws: Connection) -> bool:
        """Deliver what was kept to ``ws``, then send on it; False when it closed meanwhile (still parked)."""
        for frame in self.kept.delivery():
            try:
                await ws.send(frame)
            except ConnectionClosed:
                self.kept.putback(frame)
                return False
        self.ws = ws
        return True


def closed_by_gateway(ws: Connection) -> bool:
    """True when the gateway closed ``ws`` first (a frame over MAX_FRAME_BYTES, a policy close): the session
    ended by the gateway's decision, the client did not drop, so nothing is parked."""
    protocol = getattr(ws, "protocol", None)
    if protocol is None or protocol.close_sent is None:
        return False
    return protocol.close_rcvd_then_sent is not True


def hung_up(ws: Connection) -> bool:
    """True when the client closed ``ws`` with 1000 (normal closure): the user or app ended the conversation on
    purpose, so its provider session (which costs money) ends too. 1001 (page reload, tab closed), another code or
    a connection lost without a close frame (1006) is a drop, and the session is parked."""
    protocol = getattr(ws, "protocol", None)
    received = None if protocol is None else protocol.close_rcvd
    return received is not None and received.code == 1000 and not closed_by_gateway(ws)


def conversation_frame(conversation_id: str, resumed: bool) -> str:
    return dump(ConversationInfo(conversation_id=conversation_id, resumed=resumed))


def settings_changes(first: str, again: str) -> list[str]:
    """What the reconnecting client's Settings (``again``) ask for that the live session, started with ``first``,
    cannot change: the audio formats, the agent's listen/think/speak configuration (provider, prompt, functions),
    the language. Fields that do not shape the live session (``tags``, ``mip_opt_out``...) are not compared."""
    old, new = _agent_and_audio(first), _agent_and_audio(again)
    return [name for name in ("audio", "agent") if old.get(name) != new.get(name)]


def _agent_and_audio(frame: str) -> dict[str, Any]:
    data = json.loads(frame)
    agent = data.get("agent")
    if isinstance(agent, dict):
        agent = {key: agent[key] for key in sorted(agent) if key != "context"}  # the history differs on purpose
    return {"audio": data.get("audio"), "agent": agent}


def resumed_settings(frame: Frame, first: str) -> tuple[list[str], bool]:
    """Answer a reconnecting client's first frame: (frames for the client, True) when it is Settings, else
    (an Error, False), and the new connection is then closed as a first non-Settings message closes any."""
    try:
        data = parse_json_object(frame) if isinstance(frame, str) else {"type": None}
        if data["type"] != "Settings":
            code, description = ErrorCode.NON_SETTINGS_MESSAGE_BEFORE_SETTINGS, "The first message must be Settings."
            return [error_frame(code, description)], False
        validate(Settings, data)
    except ProtocolError as exc:
        return [error_frame(ErrorCode.INVALID_SETTINGS, exc.description)], False
    out = [dump(SettingsApplied())]
    changed = settings_changes(first, frame)  # type: ignore[arg-type]  # a str: it parsed
    if changed:
        description = (
            f"Resumed a live session: its {' and '.join(changed)} settings cannot change and were kept as first "
            "applied."
        )
        out.append(warning_frame(ErrorCode.SETTINGS_NOT_APPLIED, description))
    return out, True


class Parking:
    """One session's side of re-attach: its :class:`ClientLink`, the wait for a client while parked, and the
    greeting of one that comes back. The session's loop only asks it for its next client."""

    def __init__(self, ws: Connection, conversation_id: str, session_id: str, resumable: Resumable) -> None:
        self.link = ClientLink(ws, resumable.grace > 0)
        self.conversation_id, self.session_id = conversation_id, session_id
        self.settings = ""
        """The session's first Settings, as received: what a resuming client's are compared with."""
        self.ending = False
        """Set once the session will take no re-attaching client."""
        self._resumable = resumable
        self._arrivals: asyncio.Queue[Connection] = asyncio.Queue()

    async def greet(self) -> None:
        """The first message of a new session: which conversation it is."""
        with contextlib.suppress(ConnectionClosed):
            await self.link.send(conversation_frame(self.conversation_id, resumed=False))

    async def next_client(self, gone: Connection) -> Connection | None:
        """``gone`` stopped sending while the conversation goes on: the client that replaces it, or None when
        the session must end (the gateway closed ``gone`` itself, no window, nobody came back within it)."""
        if self._arrivals.empty() and (closed_by_gateway(gone) or hung_up(gone) or not self._resumable.accepting):
            self.ending = True  # a client reconnecting from now on gets a new session, not this ending one
            return None  # not a drop (nor a take-over), or no parking: the session ends as it always did
        self.link.park()
        log.info("session %s: client away, parked for %g s", self.session_id, self._resumable.grace)
        # The window counts from the drop: failed resumes (no Settings, silence) do not restart it, or a client
        # reconnecting in a loop would keep the provider session alive for ever.
        clock = asyncio.get_running_loop().time
        deadline = clock() + self._resumable.grace
        with self._resumable.parked(self.conversation_id) as stop:
            while True:
                ws = await self._arrival(stop, deadline - clock())
                if ws is None:
                    self.ending = True
                    log.info("session %s: re-attach window over, nobody came back", self.session_id)
                    return None
                if await self._resume(ws, deadline - clock()):
                    return ws

    async def attach(self, ws: Connection) -> bool:
        """A client reconnected to this conversation: it replaces the current one, if any (closed with 4409).
        False when the session is ending: the client needs a new one."""
        if self.ending:
            return False
        old = self.link.ws
        self.link.park()
        self._arrivals.put_nowait(ws)
        if old is not None:
            with contextlib.suppress(ConnectionClosed):
                await old.close(TAKEN_OVER, "another connection took over this conversation")
        return True

    async def end(self) -> None:
        """The session ends: a client that arrived as the window closed is told to reconnect anew."""
        self.ending = True
        while not self._arrivals.empty():
            await self._arrivals.get_nowait().close(1011, "the conversation's session ended; reconnect")

    async def _arrival(self, stop: asyncio.Event, remaining: float) -> Connection | None:
        """The next client to re-attach, or None when the window (``remaining`` seconds) ends or ``stop`` is set
        (the gateway drains)."""
        if remaining <= 0:
            return None  # a client that arrived meanwhile is told to reconnect anew (end)
        get, halt = asyncio.ensure_future(self._arrivals.get()), asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({get, halt}, timeout=remaining, return_when=asyncio.FIRST_COMPLETED)
        finally:
            halt.cancel()
            if not get.done():
                get.cancel()
        return get.result() if get.done() and not get.cancelled() else None

    async def _resume(self, ws: Connection, remaining: float) -> bool:
        """Greet a re-attached client, answer its Settings, deliver what it missed; False when it failed (or
        sent no Settings within the ``remaining`` seconds of the window)."""
        try:
            await ws.send(conversation_frame(self.conversation_id, resumed=True))
            async with asyncio.timeout(remaining):  # a silent client may not hold the session
                first = await ws.recv()
            replies, accepted = resumed_settings(first, self.settings)
            for frame in replies:
                await ws.send(frame)
            if not accepted:
                await ws.close(CLOSE_POLICY, "first message")
                return False
            if not self._arrivals.empty():  # a newer connection took over meanwhile
                await ws.close(TAKEN_OVER, "another connection took over this conversation")
                return False
        except (ConnectionClosed, TimeoutError):
            await ws.close(CLOSE_POLICY, "no Settings")
            return False
        if not await self.link.attach(ws):
            return False
        log.info("session %s: client re-attached", self.session_id)
        return True


class Parkable(Protocol):
    """What the registry needs of a session."""

    principal: str

    async def attach(self, ws: Connection) -> None: ...


class Resumable:
    """The sessions of one gateway process by conversation id, attached or parked: where a reconnecting
    client finds its live provider session."""

    def __init__(self, grace: float) -> None:
        self.grace = grace
        self.accepting = grace > 0
        """False once the gateway drains: a client dropped by a shutdown is not parked."""
        self._sessions: dict[str, Parkable] = {}
        self._parked: dict[str, asyncio.Event] = {}

    def __contains__(self, conversation_id: str) -> bool:
        return conversation_id in self._sessions

    def get(self, conversation_id: str) -> Parkable | None:
        return self._sessions.get(conversation_id)

    def add(self, conversation_id: str, session: Parkable) -> None:
        if self.accepting:
            self._sessions[conversation_id] = session

    def remove(self, conversation_id: str, session: Parkable) -> None:
        if self._sessions.get(conversation_id) is session:
            del self._sessions[conversation_id]

    @contextlib.contextmanager
    def parked(self, conversation_id: str) -> Iterator[asyncio.Event]:
        """While parked: the event is set when the window must end early (the gateway drains)."""
        stop = asyncio.Event()
        self._parked[conversation_id] = stop
        try:
            yield stop
        finally:
            self._parked.pop(conversation_id, None)

    @property
    def parked_count(self) -> int:
        return len(self._parked)

    def drain(self) -> None:
        """Park no more sessions and end the windows of those parked."""
        self.accepting = False
        for stop in self._parked.values():
            stop.set()
