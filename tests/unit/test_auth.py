"""Credentials and access decisions, without sockets."""

from pydantic import SecretStr

from gateway.auth import AccessPolicy, check_bind, is_loopback, mint_token, presented_token, verify_signed
from shared.config import Config

SECRET = "s3cret-for-tests"


def test_signed_token_round_trip_and_expiry():
    token = mint_token(SECRET, ttl=60, now=1000)
    assert verify_signed(SECRET, token, now=1059)
    assert not verify_signed(SECRET, token, now=1061)
    assert not verify_signed("other-secret", token, now=1000)


def test_tampered_signed_tokens_are_refused():
    version, expiry, nonce, mac = mint_token(SECRET, ttl=60, now=1000).split(".")
    assert not verify_signed(SECRET, ".".join([version, str(int(expiry) + 999), nonce, mac]), now=1000)
    assert not verify_signed(SECRET, ".".join([version, expiry, nonce, "0" * len(mac)]), now=1000)
    for junk in ["", "v1", "v1.x.y.z", "v2.1.2.3", "a.b.c.d.e"]:
        assert not verify_signed(SECRET, junk, now=1000)


def test_token_is_found_in_each_place_clients_put_it():
    assert presented_token({"Authorization": "Bearer abc"}, "/") == "abc"
    assert presented_token({"Authorization": "Token abc"}, "/") == "abc"
    assert presented_token({}, "/v1/agent/converse?token=abc&x=1") == "abc"
    assert presented_token({"Sec-WebSocket-Protocol": "token, abc"}, "/") == "abc"
    assert presented_token({"Authorization": "Basic abc"}, "/") is None
    assert presented_token({"Sec-WebSocket-Protocol": "chat"}, "/") is None
    assert presented_token({}, "/") is None


def policy(**fields: object) -> AccessPolicy:
    return AccessPolicy(Config(**fields))


def test_open_gateway_allows_everyone():
    assert policy().check({}, "/").allowed
    assert not policy().requires_credentials


def test_static_tokens():
    p = policy(gateway_tokens=SecretStr("one, two"))
    assert p.check({"Authorization": "Bearer two"}, "/").allowed
    refused = p.check({"Authorization": "Bearer three"}, "/")
    assert (refused.allowed, refused.status) == (False, 401)
    assert not p.check({}, "/").allowed


def test_signed_tokens_through_the_policy():
    p = policy(token_secret=SecretStr(SECRET))
    assert p.check({}, "/?token=" + mint_token(SECRET, ttl=30)).allowed
    assert not p.check({}, "/?token=" + mint_token(SECRET, ttl=-1)).allowed


def test_origin_allowlist():
    p = policy(allowed_origins="https://app.example.com, http://127.0.0.1:8080/")
    assert p.check({"Origin": "https://app.example.com"}, "/").allowed
    assert p.check({"Origin": "http://127.0.0.1:8080"}, "/").allowed
    assert p.check({}, "/").allowed  # non-browser clients send no Origin
    refused = p.check({"Origin": "https://evil.example"}, "/")
    assert (refused.allowed, refused.status) == (False, 403)


def test_public_bind_needs_credentials_or_opt_in():
    assert check_bind(Config(host="127.0.0.1"), policy()) is None
    refusal = check_bind(Config(host="0.0.0.0"), policy())
    assert refusal and "ALLOW_PUBLIC_WITHOUT_AUTH" in refusal
    assert check_bind(Config(host="0.0.0.0", allow_public_without_auth=True), policy()) is None
    assert check_bind(Config(host="0.0.0.0"), policy(gateway_tokens=SecretStr("t"))) is None


def test_is_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1") and not is_loopback("example.com")
