"""The built-in simulated agent as a provider, in the gateway's own process (no socket, no account).

:class:`~.agent.SimulatedAgent` is a sans-I/O core: this adapter feeds it the frames the
session sends and queues what it answers, so ``recv`` behaves like reading from a provider's WebSocket.
"""

from __future__ import annotations

import asyncio
import logging
from typing import ClassVar

from gateway.providers.base import DEEPGRAM_AUDIO, AudioSupport, Frame, Provider, ProviderClosed
from gateway.providers.simulated.agent import FATAL_CLOSE_CODE, SimulatedAgent

__all__ = ["SimulatedProvider", "open_simulated"]

log = logging.getLogger(__name__)

_END = object()
"""Queued after the last frame: wakes a waiting ``recv`` so it can raise :class:`ProviderClosed`."""

_announced = False

MAX_QUEUED_FRAMES = 256
"""Frames the agent produced that the session has not read yet. One client message yields at most a few dozen;
a client that stops reading fills the queue, and then ``send`` waits (backpressure) instead of the queue growing
with every message the client sends. Except a ``send`` from the task that reads (the session answering a call or
saying a filler from its provider loop): it would wait for itself, so it goes over the bound by its few frames."""


class SimulatedProvider(Provider):
    """A provider that is a :class:`SimulatedAgent` in memory; its Welcome is queued at once."""

    label = "simulated"
    audio_support: ClassVar[AudioSupport] = AudioSupport(
        input_encodings=DEEPGRAM_AUDIO.input_encodings, output_encodings=frozenset({"linear16"})
    )
    """Input audio is only counted, so any encoding Deepgram takes will do; the agent speaks PCM16 only."""

    def __init__(self, agent: SimulatedAgent | None = None) -> None:
        self.agent = agent or SimulatedAgent()
        self._outgoing: asyncio.Queue[Frame | object] = asyncio.Queue()  # bounded by send's wait for room
        self._room = asyncio.Event()
        self._room.set()
        self._reader: asyncio.Task[object] | None = None
        """The task that last read: its own sends never wait for room (it is the one that would make it)."""
        self._closed: tuple[int, str] | None = None
        """(code, reason), set by ``close`` (at once) or once the frames before a fatal error have been read."""
        for frame in self.agent.opening():  # a provider's first frame is its Welcome
            self._outgoing.put_nowait(frame)

    async def send(self, frame: Frame) -> None:
        if self._closed or self.agent.closed:
            raise ProviderClosed(*(self._closed or (FATAL_CLOSE_CODE, self.agent.close_reason)))
        for reply in self.agent.receive(frame):
            await self._put(reply)
        if self.agent.closed:  # a fatal Error: the provider closes after sending it
            self._outgoing.put_nowait(_END)

    async def _put(self, item: Frame) -> None:
        """Queue ``item``, waiting while the session's reader is :data:`MAX_QUEUED_FRAMES` behind, unless the
        reader itself is sending."""
        if asyncio.current_task() is not self._reader:
            while self._outgoing.qsize() >= MAX_QUEUED_FRAMES and not self._closed:
                self._room.clear()
                await self._room.wait()
        self._outgoing.put_nowait(item)

    async def recv(self) -> Frame:
        if self._closed:
            raise ProviderClosed(*self._closed)
        self._reader = asyncio.current_task()
        item = await self._outgoing.get()
        if self._outgoing.qsize() < MAX_QUEUED_FRAMES:
            self._room.set()
        if item is _END:
            self._outgoing.put_nowait(_END)  # for any other waiter
            self._closed = self._closed or (FATAL_CLOSE_CODE, self.agent.close_reason)
            raise ProviderClosed(*self._closed)
        assert isinstance(item, str | bytes)
        return item

    async def close(self) -> None:
        if not self._closed:
            self._closed = (1000, "closed by the gateway")
            self._outgoing.put_nowait(_END)
            self._room.set()  # a sender waiting for room finds the provider closed


async def open_simulated() -> SimulatedProvider:
    """A new simulated conversation, with its Welcome already queued like a provider's first frame."""
    global _announced
    level = logging.DEBUG if _announced else logging.INFO  # once per process: sessions are many
    _announced = True
    log.log(level, "using the built-in simulated agent (offline, deterministic; set DEEPGRAM_API_KEY for Deepgram)")
    return SimulatedProvider()
