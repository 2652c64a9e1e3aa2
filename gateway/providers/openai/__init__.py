"""OpenAI Realtime (GA) behind the component protocol: pure translation, conversation state, audio resampling.

- :mod:`.translate`: pure functions, component messages ↔ OpenAI events;
- :mod:`.bridge`: the per-conversation state (readiness, calls, one response at a time), no I/O;
- :mod:`.ledger`: the responses and function calls the bridge is waiting on;
- :mod:`.configure` and :mod:`.updates`: Settings and Update* as ``session.update``s, one at a time;
- :mod:`.formats`: audio formats per direction and Realtime voices; :mod:`.errors`: OpenAI errors by kind;
- :mod:`.playback`: what the client heard (barge-in), client call deadlines; :mod:`.mapping`: Settings fields,
  ConversationText/History/AgentThinking; :mod:`.inputs`: ``Out`` and checks on client messages;
- :mod:`.audio`: streaming PCM16 resampling to and from 24 kHz;
- :mod:`.adapter`: the WebSocket I/O that feeds the bridge.
"""

from __future__ import annotations

from gateway.providers.base import ProviderUnavailable
from gateway.providers.openai.adapter import OpenAIProvider, open_openai
from shared.config import Config

__all__ = ["OpenAIProvider", "open_from_config", "open_openai"]


async def open_from_config(config: Config) -> OpenAIProvider:
    """Connect with the gateway's ``OPENAI_API_KEY``; without one, say which setting is missing."""
    if config.openai_api_key is None:
        raise ProviderUnavailable("PROVIDER=openai needs OPENAI_API_KEY on the gateway.")
    key = config.openai_api_key.get_secret_value()
    return await open_openai(
        config.openai_url, config.openai_model, key, config.openai_voice, function_timeout=config.function_timeout
    )
