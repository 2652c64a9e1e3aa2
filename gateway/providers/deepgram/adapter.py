"""Deepgram Voice Agent API: the component protocol is Deepgram's own, so frames pass as they are.

The gateway holds the API key (``DEEPGRAM_API_KEY``) and sends it as ``Authorization: Token``; the client
never needs it and any credential the client sent is not forwarded.
"""

from __future__ import annotations

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from gateway.providers.base import Frame, Provider
from gateway.providers.connect import closed_from, connect_provider


class DeepgramProvider(Provider):
    """A provider reached over a WebSocket that already speaks the component protocol."""

    def __init__(self, connection: ClientConnection, label: str = "deepgram") -> None:
        self._ws = connection
        self.label = label

    async def send(self, frame: Frame) -> None:
        try:
            await self._ws.send(frame)
        except ConnectionClosed as exc:
            raise closed_from(exc) from None

    async def recv(self) -> Frame:
        try:
            return await self._ws.recv()
        except ConnectionClosed as exc:
            raise closed_from(exc) from None

    async def close(self) -> None:
        await self._ws.close()


async def open_deepgram(url: str, api_key: str, open_timeout: float = 10.0) -> DeepgramProvider:
    """Connect to the Voice Agent endpoint with the gateway's key."""
    connection = await connect_provider(url, f"Token {api_key}", "Deepgram", "DEEPGRAM_API_KEY", open_timeout)
    return DeepgramProvider(connection)
