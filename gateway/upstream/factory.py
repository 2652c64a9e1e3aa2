"""Choose and open the configured upstream for a new session."""

from __future__ import annotations

from gateway.upstream.base import Upstream, UpstreamUnavailable
from shared.config import Config


async def open_upstream(config: Config) -> Upstream:
    kind = config.resolved_upstream()
    if kind == "deepgram":
        from gateway.upstream.deepgram import open_deepgram

        if config.deepgram_api_key is None:
            raise UpstreamUnavailable("UPSTREAM=deepgram needs DEEPGRAM_API_KEY on the gateway.")
        return await open_deepgram(config.deepgram_url, config.deepgram_api_key.get_secret_value())
    if kind == "openai":
        from gateway.upstream.openai import open_openai

        if config.openai_api_key is None:
            raise UpstreamUnavailable("UPSTREAM=openai needs OPENAI_API_KEY on the gateway.")
        key = config.openai_api_key.get_secret_value()
        return await open_openai(config.openai_url, config.openai_model, key, config.openai_voice)
    from gateway.upstream.simulated import open_simulated

    return await open_simulated()
