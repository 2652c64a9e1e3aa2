"""Deepgram Voice Agent API upstream: the component protocol is Deepgram's own, so frames pass as they are.

The gateway holds the API key (``DEEPGRAM_API_KEY``) and sends it as ``Authorization: Token``; the client
never needs it and any credential the client sent is not forwarded.
"""

from __future__ import annotations

import logging

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from gateway.upstream.base import Frame, Upstream, UpstreamClosed, UpstreamUnavailable

log = logging.getLogger(__name__)


class WebSocketUpstream(Upstream):
    """An upstream reached over a WebSocket that already speaks the component protocol."""

    def __init__(self, connection: ClientConnection, label: str) -> None:
        self._ws = connection
        self.label = label

    async def send(self, frame: Frame) -> None:
        try:
            await self._ws.send(frame)
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    async def recv(self) -> Frame:
        try:
            return await self._ws.recv()
        except ConnectionClosed as exc:
            raise _closed(exc) from None

    async def close(self) -> None:
        await self._ws.close()


def _closed(exc: ConnectionClosed) -> UpstreamClosed:
    frame = exc.rcvd or exc.sent
    return UpstreamClosed(frame.code if frame else 1006, frame.reason if frame else "connection lost")


async def open_deepgram(url: str, api_key: str, open_timeout: float = 10.0) -> WebSocketUpstream:
    """Connect to the Voice Agent endpoint. Errors become :class:`UpstreamUnavailable` with a message that
    is safe to show the client (it never contains the key)."""
    try:
        connection = await connect(
            url,
            additional_headers={"Authorization": f"Token {api_key}"},
            open_timeout=open_timeout,
            max_size=None,  # the provider is trusted; audio frames can be large
            compression=None,  # audio does not compress, and deflate costs CPU on every frame
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        hint = " (check DEEPGRAM_API_KEY)" if status in (401, 403) else ""
        raise UpstreamUnavailable(f"Deepgram refused the connection: HTTP {status}{hint}.") from None
    except (InvalidURI, InvalidHandshake, OSError, TimeoutError) as exc:
        log.warning("cannot reach Deepgram at %s: %s", url, type(exc).__name__)
        raise UpstreamUnavailable(f"Cannot reach the provider ({type(exc).__name__}).") from None
    return WebSocketUpstream(connection, "deepgram")
