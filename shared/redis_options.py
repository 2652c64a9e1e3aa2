"""The options every Redis client of the gateway and the workers is built with, from its URL and the settings.

Managed Redis services (Heroku Redis, Upstash, Render, AWS ElastiCache with in-transit encryption) hand out
``rediss://`` URLs: TLS, sometimes with a self-signed certificate. redis-py speaks TLS for such a URL by itself;
what it cannot know is how to check the server's certificate, which REDIS_TLS_VERIFY and REDIS_CA_CERT say.
Every client creation site passes ``**redis_options(url)`` so they all agree.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlparse

from shared.config import Config, get_config

TLS_SCHEMES = {"rediss"}


def redis_options(url: str, config: Config | None = None) -> dict[str, Any]:
    """Keyword arguments for ``redis.Redis.from_url`` (and redis.asyncio's pools) beyond the URL.

    Empty for a plain ``redis://`` or ``unix://`` URL. For ``rediss://``: the certificate check REDIS_TLS_VERIFY
    asks for (``required``: a certificate chaining to the system's CAs, or to REDIS_CA_CERT, for the URL's host;
    ``none``: encrypted, unchecked, for services whose certificate is self-signed and not published).
    """
    if urlparse(url).scheme not in TLS_SCHEMES:
        return {}
    config = config or get_config()
    if config.redis_tls_verify == "none":
        return {"ssl_cert_reqs": "none", "ssl_check_hostname": False}
    options: dict[str, Any] = {"ssl_cert_reqs": "required", "ssl_check_hostname": True}
    if config.redis_ca_cert:
        options["ssl_ca_certs"] = str(config.redis_ca_cert)
    return options
