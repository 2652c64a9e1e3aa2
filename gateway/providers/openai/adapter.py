"""OpenAI Realtime (GA) as a provider: the session speaks the component protocol, OpenAI speaks its own events.

This module does only I/O: it opens the WebSocket with the gateway's ``OPENAI_API_KEY`` (never the client's),
reads OpenAI's events in a background task, and passes every frame in either direction through a
:class:`~gateway.providers.openai.bridge.Bridge`, which holds the conversation state and decides what to send. The
session sees the same three calls (``send``/``recv``/``close``) as with Deepgram: OpenAI's function calls come
out of ``recv`` as component ``FunctionCallRequest`` frames, and its answers go in through ``send``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, ClassVar
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from gateway.providers.base import AudioSupport, Frame, Provider, ProviderClosed
from gateway.providers.connect import closed_from, connect_provider
from gateway.providers.openai.bridge import Bridge, Out
from gateway.providers.openai.formats import ENCODINGS, audio_problem
from shared.envelopes import FunctionSpec

if TYPE_CHECKING:
    from shared.protocol import Audio, Settings

__all__ = ["OpenAIProvider", "open_openai", "realtime_url"]

log = logging.getLogger(__name__)

MAX_QUEUED_FRAMES = 256
"""Component frames waiting for the session to read them. A client that stops reading fills the queue; then the
adapter stops reading OpenAI's events (and the client's own frames wait), instead of buffering without end."""
TICK_INTERVAL = 0.25
"""How often the bridge is told the time, to answer the client calls past their deadline (``Bridge.tick``)."""


class OpenAIProvider(Provider):
    """One OpenAI Realtime conversation, translated to and from the component protocol."""

    label = "openai"
    audio_support: ClassVar[AudioSupport] = AudioSupport(input_encodings=ENCODINGS, output_encodings=ENCODINGS)
    """linear16 is resampled to and from 24 kHz; mulaw/alaw pass through at 8 kHz; each direction chosen on its
    own. OpenAI takes nothing else."""

    def audio_problem(self, audio: Audio | None) -> str | None:
        """Beyond the encodings: OpenAI takes mulaw/alaw only at 8 kHz."""
        problem = super().audio_problem(audio)
        if problem is not None or audio is None:
            return problem
        for direction, fmt in (("input", audio.input), ("output", audio.output)):
            if fmt is not None and (problem := audio_problem(fmt.encoding, fmt.sample_rate, direction)):
                return problem
        return None

    def settings_problem(self, settings: Settings) -> str | None:
        """A stored Deepgram agent configuration (``agent`` as its id) means nothing to OpenAI."""
        if settings.stored_agent is not None:
            return (
                "'agent' is the id of an agent configuration stored at Deepgram; the openai provider cannot load "
                "it. Send the agent configuration itself."
            )
        return super().settings_problem(settings)

    def __init__(self, connection: ClientConnection, bridge: Bridge) -> None:
        self._ws = connection
        self._bridge = bridge
        self._frames: asyncio.Queue[Frame | ProviderClosed] = asyncio.Queue(MAX_QUEUED_FRAMES)
        """Component frames for ``recv``; an :class:`ProviderClosed` marks the end (when there is room for it:
        ``recv`` also raises once the queue is empty and ``_closed`` is set). Bounded: the session drains it as
        fast as the client reads, and a client that reads nothing must not make the gateway buffer without end."""
        self._lock = asyncio.Lock()
        """Held while the bridge decides and its events are written, so the wire order is the decision order
        (a ``function_call_output`` is always on the wire before the ``response.create`` that follows it)."""
        self._closed: ProviderClosed | None = None
        self._reader = asyncio.create_task(self._read(), name="openai-reader")
        self._ticker = asyncio.create_task(self._tick(), name="openai-ticker")

    def use_functions(self, owned: Mapping[str, FunctionSpec]) -> None:
        self._bridge.use_functions(owned)

    async def send(self, frame: Frame) -> None:
        if self._closed is not None:
            raise self._closed
        async with self._lock:
            await self._apply(self._bridge.from_component(frame))

    async def say_filler(self, text: str) -> None:
        """Out of band, not as ``InjectAgentMessage``: see :mod:`.filler`."""
        if self._closed is not None:
            raise self._closed
        async with self._lock:
            await self._apply(self._bridge.say_filler(text))

    async def recv(self) -> Frame:
        if self._closed is not None and self._frames.empty():
            raise self._closed  # the end marker was read already, or did not fit in a full queue
        item = await self._frames.get()
        if isinstance(item, ProviderClosed):
            raise item
        return item

    async def close(self) -> None:
        if self._closed is None:
            self._end(ProviderClosed(1000, "closed by the gateway"))
        self._reader.cancel()
        self._ticker.cancel()
        await asyncio.gather(self._reader, self._ticker, return_exceptions=True)
        await self._ws.close()

    async def _read(self) -> None:
        """Feed every OpenAI event to the bridge until the connection ends, then wake ``recv``."""
        try:
            async for message in self._ws:
                if isinstance(message, bytes):
                    log.warning("OpenAI sent a binary frame (%d bytes); ignored", len(message))
                    continue
                async with self._lock:
                    await self._apply(self._bridge.from_provider(message))
            self._end(_closed_by(self._ws))
        except ConnectionClosed as exc:
            self._end(closed_from(exc))
        except ProviderClosed:
            pass  # a send failed inside _apply, which recorded why
        except Exception:
            log.exception("translating OpenAI events failed")
            self._end(ProviderClosed(1011, "the gateway failed to translate the provider's events"))

    async def _tick(self) -> None:
        """Tell the bridge the time until the connection ends."""
        with contextlib.suppress(ProviderClosed):
            while self._closed is None:
                await asyncio.sleep(TICK_INTERVAL)
                async with self._lock:
                    await self._apply(self._bridge.tick(time.monotonic()))

    async def _apply(self, out: Out) -> None:
        """Queue the frames for the session, then send the events to OpenAI, in the bridge's order."""
        for frame in out.client:
            await self._frames.put(frame)  # waits while the client is not reading: backpressure
        try:
            for event in out.provider:
                await self._ws.send(json.dumps(event, separators=(",", ":")))
        except ConnectionClosed as exc:
            self._end(closed_from(exc))
            raise self._closed from None  # type: ignore[misc]
        if out.end is not None:  # the conversation cannot go on: the client has been told why
            self._end(ProviderClosed(1000, out.end))

    def _end(self, closed: ProviderClosed) -> None:
        if self._closed is None:
            self._closed = closed
            with contextlib.suppress(asyncio.QueueFull):  # a full queue has no waiting reader to wake
                self._frames.put_nowait(closed)


def _closed_by(ws: ClientConnection) -> ProviderClosed:
    return ProviderClosed(ws.close_code or 1006, ws.close_reason or "")


def realtime_url(url: str, model: str) -> str:
    """``url`` with ``?model=`` added, unless the URL already names a model."""
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    if not any(key == "model" for key, _ in query):
        query.append(("model", model))
    return urlunsplit(parts._replace(query=urlencode(query)))


async def open_openai(
    url: str, model: str, api_key: str, voice: str = "marin", open_timeout: float = 10.0, function_timeout: float = 10.0
) -> OpenAIProvider:
    """Connect to the Realtime endpoint with the gateway's key."""
    authorization = f"Bearer {api_key}"
    connection = await connect_provider(
        realtime_url(url, model), authorization, "OpenAI", "OPENAI_API_KEY", open_timeout
    )
    return OpenAIProvider(connection, Bridge(voice=voice, function_timeout=function_timeout))
