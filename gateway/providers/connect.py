"""Opening a provider's WebSocket, shared by the adapters: one place turns connection failures into messages
that are safe to show a client (never the key) and close frames into :class:`ProviderClosed`."""

from __future__ import annotations

import logging

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

from gateway.providers.base import ProviderClosed, ProviderUnavailable

log = logging.getLogger(__name__)


async def connect_provider(
    url: str, authorization: str, provider: str, key_variable: str, open_timeout: float = 10.0
) -> ClientConnection:
    """Connect with ``Authorization: <authorization>``; raise :class:`ProviderUnavailable` on failure."""
    try:
        return await connect(
            url,
            additional_headers={"Authorization": authorization},
            open_timeout=open_timeout,
            max_size=None,  # the provider is trusted; audio frames can be large
            compression=None,  # audio barely compresses, and deflate costs CPU on every frame
        )
    except InvalidStatus as exc:
        status = exc.response.status_code
        hint = f" (check {key_variable})" if status in (401, 403) else ""
        raise ProviderUnavailable(f"{provider} refused the connection: HTTP {status}{hint}.") from None
    except (InvalidURI, InvalidHandshake, OSError, TimeoutError) as exc:
        log.warning("cannot reach %s at %s: %s", provider, url, type(exc).__name__)
        raise ProviderUnavailable(f"Cannot reach the provider ({type(exc).__name__}).") from None


def closed_from(exc: ConnectionClosed) -> ProviderClosed:
    """The close the provider sent (or ours, or 1006 when the connection just dropped)."""
    frame = exc.rcvd or exc.sent
    return ProviderClosed(frame.code if frame else 1006, frame.reason if frame else "connection lost")
