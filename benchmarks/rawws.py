"""A minimal WebSocket (RFC 6455) client and server for the load generator, on bare asyncio protocols.

Why not the ``websockets`` library, which the gateway uses? The load generator shares two cores with the system
it measures: hundreds of sessions streaming 20 ms audio frames mean tens of thousands of frames a second on
the load side. Sending here is one ``transport.write`` of a prebuilt frame and parsing is a few slices, so the
load generator costs a fraction of what the gateway does and the numbers describe the gateway.

Deliberately small: no extensions, no fragmented messages (neither side of the benchmark fragments), pings
answered, close frames answered. Client frames use a zero masking key, which RFC 6455 allows (the key must be
unpredictable to protect proxies from cache poisoning, irrelevant on loopback) and which makes masking free.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import struct
from collections.abc import Callable
from typing import TypeVar
from urllib.parse import urlsplit

from websockets.frames import apply_mask

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA
ZERO_MASK = b"\x00\x00\x00\x00"
E = TypeVar("E", bound="ClientEndpoint")


def encode(opcode: int, payload: bytes, masked: bool) -> bytes:
    """One complete frame (FIN set). ``masked`` frames (client → server) carry a zero key."""
    n = len(payload)
    mask_bit = 0x80 if masked else 0
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, mask_bit | n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, mask_bit | 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, mask_bit | 127, n)
    return header + ZERO_MASK + payload if masked else header + payload


def accept_key(key: bytes) -> bytes:
    return base64.b64encode(hashlib.sha1(key + GUID).digest())


class _Endpoint(asyncio.Protocol):
    """Frame parsing and sending shared by both ends. Subclasses set ``masked`` and handle the handshake."""

    masked = False

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self._buf = bytearray()
        self.open = False
        self.closed = asyncio.get_running_loop().create_future()

    # --- overridden by users -------------------------------------------------------------------------------
    def on_open(self) -> None: ...

    def on_text(self, text: str) -> None: ...

    def on_binary(self, data: bytes) -> None: ...

    # --- sending -------------------------------------------------------------------------------------------
    def send_text(self, text: str) -> None:
        self.send_frame(TEXT, text.encode())

    def send_binary(self, data: bytes) -> None:
        self.send_frame(BINARY, data)

    def send_frame(self, opcode: int, payload: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(encode(opcode, payload, self.masked))

    def send_raw(self, frame: bytes) -> None:
        """A frame built once with :func:`encode` (the cheapest way to send the same audio frame many times)."""
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    def close(self, code: int = 1000) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.send_frame(CLOSE, struct.pack("!H", code))
            self.transport.close()

    # --- receiving -----------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def connection_lost(self, exc: Exception | None) -> None:
        self.open = False
        if not self.closed.done():
            self.closed.set_result(None)

    def _frames(self, data: bytes) -> None:
        buf = self._buf
        buf += data
        while len(buf) >= 2:
            n = buf[1] & 0x7F
            pos = 2
            if n == 126:
                if len(buf) < 4:
                    return
                n = int.from_bytes(buf[2:4], "big")
                pos = 4
            elif n == 127:
                if len(buf) < 10:
                    return
                n = int.from_bytes(buf[2:10], "big")
                pos = 10
            masked = buf[1] & 0x80
            if len(buf) < pos + (4 if masked else 0) + n:
                return
            opcode = buf[0] & 0x0F
            if masked:
                key = bytes(buf[pos : pos + 4])
                pos += 4
                payload = bytes(buf[pos : pos + n])
                if key != ZERO_MASK:
                    payload = apply_mask(payload, key)
            else:
                payload = bytes(buf[pos : pos + n])
            del buf[: pos + n]
            self._dispatch(opcode, payload)

    def _dispatch(self, opcode: int, payload: bytes) -> None:
        if opcode == BINARY:
            self.on_binary(payload)
        elif opcode == TEXT:
            self.on_text(payload.decode())
        elif opcode == PING:
            self.send_frame(PONG, payload)
        elif opcode == CLOSE and self.transport is not None and not self.transport.is_closing():
            self.send_frame(CLOSE, payload[:2])
            self.transport.close()


class ServerEndpoint(_Endpoint):
    """The server side of one connection: answers the handshake on any path, then exchanges frames."""

    def data_received(self, data: bytes) -> None:
        if self.open:
            self._frames(data)
            return
        self._buf += data
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            return
        head, rest = bytes(self._buf[:end]), bytes(self._buf[end + 4 :])
        self._buf.clear()
        key = b""
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"sec-websocket-key":
                key = value.strip()
        assert self.transport is not None
        self.transport.write(
            b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Accept: " + accept_key(key) + b"\r\n\r\n"
        )
        self.open = True
        self.on_open()
        if rest:
            self._frames(rest)


class ClientEndpoint(_Endpoint):
    """The client side of one connection. Use :func:`connect`."""

    masked = True

    def __init__(self) -> None:
        super().__init__()
        self.opened = asyncio.get_running_loop().create_future()

    def data_received(self, data: bytes) -> None:
        if self.open:
            self._frames(data)
            return
        self._buf += data
        end = self._buf.find(b"\r\n\r\n")
        if end < 0:
            return
        status = bytes(self._buf[: self._buf.find(b"\r\n")])
        rest = bytes(self._buf[end + 4 :])
        self._buf.clear()
        if b" 101 " not in status:
            self.opened.set_exception(ConnectionError(status.decode(errors="replace")))
            assert self.transport is not None
            self.transport.close()
            return
        self.open = True
        self.opened.set_result(None)
        self.on_open()
        if rest:
            self._frames(rest)

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.opened.done():
            self.opened.set_exception(ConnectionError("connection closed during the handshake"))
        super().connection_lost(exc)


async def connect(url: str, factory: Callable[[], E], timeout: float = 10.0) -> E:
    """Open a WebSocket to ``url`` (``ws://host:port/path``) with an endpoint made by ``factory``."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    _, endpoint = await asyncio.get_running_loop().create_connection(factory, host, port)
    key = base64.b64encode(os.urandom(16))
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    assert endpoint.transport is not None
    endpoint.transport.write(
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n".encode()
        + b"Sec-WebSocket-Key: "
        + key
        + b"\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await asyncio.wait_for(asyncio.shield(endpoint.opened), timeout)
    return endpoint
