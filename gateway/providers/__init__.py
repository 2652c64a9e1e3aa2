"""The provider side of a session: one small interface (:mod:`.base`) and one folder per provider.

Each provider folder (``deepgram/``, ``openai/``, ``simulated/``) is a package whose ``__init__`` defines
``async def open_from_config(config: Config) -> Provider``. Its modules import only :mod:`.base` (and
:mod:`.connect`, shared by the WebSocket providers), their own folder and ``shared/``, never the session or
the dispatcher (``tests/unit/providers/test_layout.py`` checks), so adding a provider is adding a folder and
its name to ``Config.provider``.

Provider packages are imported only when chosen: a gateway serving the simulated agent never loads numpy and
soxr for OpenAI's resampling.
"""

from __future__ import annotations

import importlib

from gateway.providers.base import Frame, Provider, ProviderClosed, ProviderUnavailable
from shared.config import Config

__all__ = ["Frame", "Provider", "ProviderClosed", "ProviderUnavailable", "open_provider"]


async def open_provider(config: Config) -> Provider:
    """Open the configured provider (``PROVIDER``, resolved from ``auto``) for one new session."""
    package = importlib.import_module(f"{__name__}.{config.resolved_provider()}")
    provider: Provider = await package.open_from_config(config)
    return provider
