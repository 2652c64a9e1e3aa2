"""The built-in simulated agent: offline, deterministic, no account. The provider of the tests and of demos.

- :mod:`.agent`: the sans-I/O protocol core (Deepgram's protocol: frames in, frames out);
- :mod:`.intents`: which function calls a user message asks for;
- :mod:`.adapter`: the core in the gateway's own process, behind the provider interface;
- :mod:`.server`: the core as a standalone WebSocket server (``python -m gateway.providers.simulated``).
"""

from __future__ import annotations

from gateway.providers.simulated.adapter import SimulatedProvider, open_simulated
from shared.config import Config

__all__ = ["SimulatedProvider", "open_from_config", "open_simulated"]


async def open_from_config(config: Config) -> SimulatedProvider:
    """A new simulated conversation; it needs no setting."""
    return await open_simulated()
