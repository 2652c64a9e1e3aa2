"""``rediss://`` URLs: the options every Redis client is built with (shared/redis_options.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from pydantic import ValidationError

from gateway.redis_pool import redis_pool
from shared.config import Config
from shared.redis_options import redis_options

TLS_URL = "rediss://:secret@redis.example.com:6380/0"


@pytest.mark.parametrize("url", ["redis://127.0.0.1:6379/0", "unix:///tmp/redis.sock"])
def test_plain_urls_get_no_tls_options(url: str):
    assert redis_options(url, Config(redis_tls_verify="none")) == {}


def test_tls_checks_the_certificate_by_default():
    assert redis_options(TLS_URL, Config()) == {"ssl_cert_reqs": "required", "ssl_check_hostname": True}


def test_tls_with_a_ca_of_its_own(tmp_path: Path):
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    options = redis_options(TLS_URL, Config(redis_ca_cert=ca))
    assert options == {"ssl_cert_reqs": "required", "ssl_check_hostname": True, "ssl_ca_certs": str(ca)}


def test_tls_without_verification_for_self_signed_services():
    assert redis_options(TLS_URL, Config(redis_tls_verify="none")) == {
        "ssl_cert_reqs": "none",
        "ssl_check_hostname": False,
    }


def test_a_missing_ca_file_is_refused(tmp_path: Path):
    with pytest.raises(ValidationError, match="redis_ca_cert"):
        Config(redis_ca_cert=tmp_path / "missing.pem")


def test_a_bad_verify_mode_is_refused():
    with pytest.raises(ValidationError, match="redis_tls_verify"):
        Config(redis_tls_verify="optional")


def test_the_options_reach_the_clients(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("REDIS_TLS_VERIFY", "none")
    from shared.config import get_config

    get_config.cache_clear()
    try:
        pool = redis_pool(TLS_URL)
        assert pool.connection_kwargs["ssl_cert_reqs"] == "none"
        assert "SSL" in pool.connection_class.__name__
        client = redis.Redis.from_url(TLS_URL, **redis_options(TLS_URL))
        assert client.connection_pool.connection_kwargs["ssl_check_hostname"] is False
    finally:
        get_config.cache_clear()
