"""Deepgram's Voice Agent API, which speaks the component protocol itself: :mod:`.adapter` relays frames."""

from __future__ import annotations

from gateway.providers.base import ProviderUnavailable
from gateway.providers.deepgram.adapter import DeepgramProvider, open_deepgram
from shared.config import Config

__all__ = ["DeepgramProvider", "open_deepgram", "open_from_config"]


async def open_from_config(config: Config) -> DeepgramProvider:
    """Connect with the gateway's ``DEEPGRAM_API_KEY``; without one, say which setting is missing."""
    if config.deepgram_api_key is None:
        raise ProviderUnavailable("PROVIDER=deepgram needs DEEPGRAM_API_KEY on the gateway.")
    return await open_deepgram(config.deepgram_url, config.deepgram_api_key.get_secret_value())
