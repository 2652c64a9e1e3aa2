"""Credentials, Host/Origin rules and the caller's identity, decided without sockets."""

import base64
import json
import time

import jwt
import pytest
from pydantic import SecretStr
from websockets.datastructures import Headers

from gateway import auth
from gateway.auth import (
    AccessPolicy,
    check_bind,
    is_loopback,
    mint_token,
    presented_token,
    subprotocol_scheme,
    verify_signed,
    weak_secret_warning,
)
from gateway.server import _select_subprotocol
from shared.config import Config

SECRET = "s3cret-for-tests-0123456789abcdef"
AUD = "voice-function-gateway"
LOCAL = {"Host": "127.0.0.1:8080"}


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict, claims: dict, signature: str = "") -> str:
    return f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims).encode())}.{signature}"


def claims(**overrides: object) -> dict:
    return {"sub": "alice", "aud": AUD, "exp": int(time.time()) + 60, **overrides}


# --- signed tokens (JWT) ----------------------------------------------------------------------------------


def test_signed_token_round_trip_names_the_caller_and_expires():
    token = mint_token(SECRET, ttl=60, sub="alice", now=1000)
    standard = jwt.decode(token, SECRET, algorithms=["HS256"], audience=AUD, options={"verify_exp": False})
    assert standard == {"sub": "alice", "aud": AUD, "iat": 1000, "exp": 1060}
    assert verify_signed(SECRET, token, now=1059) == "alice"
    assert verify_signed(SECRET, token, now=1061) is None
    assert verify_signed("other-secret-0123456789abcdef0123", token, now=1000) is None
    assert verify_signed(SECRET, mint_token(SECRET, ttl=60, sub="alice")) == "alice"
    assert verify_signed(SECRET, mint_token(SECRET, ttl=-5, sub="alice")) is None


def test_a_jwt_from_any_library_with_the_right_claims_is_accepted():
    assert verify_signed(SECRET, jwt.encode(claims(sub="bob"), SECRET, algorithm="HS256")) == "bob"
    assert verify_signed(SECRET, jwt.encode(claims(aud=[AUD, "other"]), SECRET, algorithm="HS256")) == "alice"


@pytest.mark.parametrize(
    "token",
    [
        jwt.encode(claims(aud="another-service"), SECRET, algorithm="HS256"),  # wrong audience
        jwt.encode({k: v for k, v in claims().items() if k != "aud"}, SECRET, algorithm="HS256"),
        jwt.encode({k: v for k, v in claims().items() if k != "sub"}, SECRET, algorithm="HS256"),
        jwt.encode({k: v for k, v in claims().items() if k != "exp"}, SECRET, algorithm="HS256"),
        jwt.encode(claims(sub=""), SECRET, algorithm="HS256"),
        jwt.encode(claims(exp=int(time.time()) - 5), SECRET, algorithm="HS256"),
        jwt.encode(claims(), SECRET, algorithm="HS512"),  # only HS256 is accepted
        forged({"alg": "none", "typ": "JWT"}, claims()),
        forged({"alg": "HS256", "typ": "JWT"}, claims(), "é" * 43),  # non-ASCII signature
        forged({"alg": "HS256", "typ": "JWT"}, claims(), "@@@"),
        "",
        "v1.1999999999.abcd.0123",  # the old token format is gone
        "a.b.c",
        "a.b.c.d.e",
        "é.é.é",
        "\udcff\udcfe.x.y",
    ],
)
def test_malformed_or_unacceptable_signed_tokens_are_refused(token: str):
    assert verify_signed(SECRET, token) is None
    refused = policy(token_secret=SecretStr(SECRET)).check({**LOCAL, "Authorization": f"Bearer {token}"}, "/")
    assert (refused.allowed, refused.status) == (False, 401)


def test_mint_requires_a_caller():
    with pytest.raises(ValueError):
        mint_token(SECRET, 60, sub="")


def test_mint_cli_prints_a_jwt_for_the_caller(monkeypatch, capsys):
    monkeypatch.setenv("TOKEN_SECRET", SECRET)
    monkeypatch.setenv("TOKEN_AUDIENCE", "my-gateway")
    auth.main(["mint", "--sub", "alice", "--ttl", "60"])
    token = capsys.readouterr().out.strip()
    assert verify_signed(SECRET, token, audience="my-gateway") == "alice"
    assert verify_signed(SECRET, token) is None  # minted for the configured audience only


def test_short_secret_is_warned_about():
    assert weak_secret_warning(Config(token_secret=SecretStr("short"))) is not None
    assert weak_secret_warning(Config(token_secret=SecretStr(SECRET))) is None
    assert weak_secret_warning(Config()) is None


# --- where the credential travels -------------------------------------------------------------------------


def test_token_is_found_in_each_place_clients_put_it():
    assert presented_token({"Authorization": "Bearer abc"}, "/") == "abc"
    assert presented_token({"Authorization": "Token abc"}, "/") == "abc"
    assert presented_token({}, "/v1/agent/converse?token=abc&x=1") == "abc"
    assert presented_token({"Sec-WebSocket-Protocol": "token, abc"}, "/") == "abc"
    assert presented_token({"Sec-WebSocket-Protocol": "bearer, abc"}, "/") == "abc"
    assert presented_token({"sec-websocket-protocol": "Bearer,abc"}, "/") == "abc"
    assert presented_token({"Authorization": "Basic abc"}, "/") is None
    assert presented_token({"Sec-WebSocket-Protocol": "chat"}, "/") is None
    assert presented_token({"Sec-WebSocket-Protocol": "chat, abc"}, "/") is None
    assert presented_token({}, "/") is None


def test_the_handshake_echoes_the_scheme_exactly_as_offered():
    assert subprotocol_scheme(["token", "abc"]) == "token"
    assert subprotocol_scheme(["bearer", "abc"]) == "bearer"
    assert subprotocol_scheme(["Bearer", "abc"]) == "Bearer"
    assert subprotocol_scheme(["chat"]) is None
    assert subprotocol_scheme([]) is None
    assert _select_subprotocol(None, ["bearer", "abc"]) == "bearer"  # type: ignore[arg-type]
    assert _select_subprotocol(None, ["TOKEN", "abc"]) == "TOKEN"  # type: ignore[arg-type]
    assert _select_subprotocol(None, ["chat", "token"]) is None  # type: ignore[arg-type]


# --- static tokens and the caller -------------------------------------------------------------------------


def policy(**fields: object) -> AccessPolicy:
    return AccessPolicy(Config(**fields))


def test_open_gateway_allows_local_callers_without_a_principal():
    verdict = policy().check(LOCAL, "/")
    assert verdict.allowed and verdict.principal == ""
    assert not policy().requires_credentials


def test_static_tokens_name_their_caller():
    p = policy(gateway_tokens=SecretStr("alice:one, two, bob:th:ree"))
    assert p.check({**LOCAL, "Authorization": "Bearer one"}, "/").principal == "alice"
    assert p.check({**LOCAL, "Authorization": "Bearer th:ree"}, "/").principal == "bob"
    bare = p.check({**LOCAL, "Authorization": "Bearer two"}, "/")
    assert bare.allowed and bare.principal.startswith("token-") and "two" not in bare.principal
    assert (
        bare.principal
        == policy(gateway_tokens=SecretStr("x:y, two")).check({"Authorization": "Bearer two"}, "/").principal
    )
    for wrong in ["three", "alice:one", "alice", "ONE"]:
        refused = p.check({**LOCAL, "Authorization": f"Bearer {wrong}"}, "/")
        assert (refused.allowed, refused.status) == (False, 401)
    assert not p.check(LOCAL, "/").allowed


@pytest.mark.parametrize(
    "headers, path",
    [
        ({"Authorization": "Bearer \u00e9t\u00e9"}, "/"),  # non-ASCII (websockets decodes headers as Latin-1)
        ({"Authorization": "Bearer \xff\xfe"}, "/"),  # bytes that are not UTF-8, as Latin-1 text
        ({"Authorization": "Bearer \udcff"}, "/"),  # a lone surrogate cannot even be encoded
        ({"Authorization": "Bearer one\x00"}, "/"),
        ({}, "/?token=%FF%FE"),  # percent-encoded non-UTF-8
        ({}, "/?token=%C3%A9"),
        ({"Sec-WebSocket-Protocol": "token, \u00e9"}, "/"),
    ],
)
def test_malformed_credentials_are_401_never_an_exception(headers: dict, path: str):
    p = policy(gateway_tokens=SecretStr("alice:one"), token_secret=SecretStr(SECRET))
    refused = p.check({**LOCAL, **headers}, path)
    assert (refused.allowed, refused.status) == (False, 401)


def test_signed_tokens_through_the_policy():
    p = policy(token_secret=SecretStr(SECRET), token_audience="gw-test")
    verdict = p.check(LOCAL, "/?token=" + mint_token(SECRET, ttl=30, sub="carol", audience="gw-test"))
    assert verdict.allowed and verdict.principal == "carol"
    assert not p.check(LOCAL, "/?token=" + mint_token(SECRET, ttl=-1, sub="carol", audience="gw-test")).allowed
    assert not p.check(LOCAL, "/?token=" + mint_token(SECRET, ttl=30, sub="carol")).allowed  # other audience


# --- Origin -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("fields", [{}, {"gateway_tokens": SecretStr("one")}])
def test_foreign_origins_are_refused_even_without_credentials(fields: dict):
    p = policy(**fields)
    creds = {"Authorization": "Bearer one"}
    for origin in ["https://evil.example", "http://127.0.0.1:9999", "null", "http://127.0.0.1:8080/x", ""]:
        refused = p.check({**LOCAL, **creds, "Origin": origin}, "/")
        assert (refused.allowed, refused.status) == (False, 403), origin
    for origin in ["http://127.0.0.1:8080", "https://127.0.0.1:8080", "HTTP://127.0.0.1:8080/"]:
        assert p.check({**LOCAL, **creds, "Origin": origin}, "/").allowed, origin  # the gateway's own page
    assert p.check({**LOCAL, **creds}, "/").allowed  # non-browser clients send no Origin


def test_same_origin_uses_the_default_port_of_the_scheme():
    p = policy(gateway_tokens=SecretStr("one"))
    creds = {"Authorization": "Bearer one"}
    assert p.check({"Host": "gw.example.com", "Origin": "https://gw.example.com", **creds}, "/").allowed
    assert p.check({"Host": "gw.example.com:443", "Origin": "https://gw.example.com", **creds}, "/").allowed
    assert not p.check({"Host": "gw.example.com:8443", "Origin": "https://gw.example.com", **creds}, "/").allowed
    assert not p.check({"Host": "gw.example.com", "Origin": "https://gw.example.com.evil", **creds}, "/").allowed


def test_origin_allowlist():
    p = policy(allowed_origins="https://app.example.com, http://localhost:3000/")
    assert p.check({**LOCAL, "Origin": "https://app.example.com"}, "/").allowed
    assert p.check({**LOCAL, "Origin": "http://localhost:3000"}, "/").allowed
    refused = p.check({**LOCAL, "Origin": "https://evil.example"}, "/")
    assert (refused.allowed, refused.status) == (False, 403)


# --- Host (DNS rebinding) ---------------------------------------------------------------------------------


def test_without_credentials_only_loopback_host_names_are_served():
    p = policy()
    for host in ["127.0.0.1:8080", "localhost:8080", "LOCALHOST", "[::1]:8080", "127.1.2.3", "localhost."]:
        assert p.check({"Host": host}, "/").allowed, host
    for host in ["evil.example:8080", "evil.example", "10.0.0.1:8080", "", "[::1", "127.0.0.1:x", "a b", "é"]:
        refused = p.check({"Host": host}, "/")
        assert (refused.allowed, refused.status) == (False, 403), host
    assert not p.check({}, "/").allowed  # HTTP/1.1 requires Host


def test_a_rebound_name_is_refused_even_as_its_own_origin():
    refused = policy().check({"Host": "evil.example:8080", "Origin": "http://evil.example:8080"}, "/")
    assert (refused.allowed, refused.status) == (False, 403) and "ALLOWED_HOSTS" in refused.reason


def test_allowed_hosts():
    p = policy(allowed_hosts="gw.internal, [fd00::1]")
    assert p.check({"Host": "gw.internal:8080"}, "/").allowed
    assert p.check({"Host": "GW.INTERNAL"}, "/").allowed
    assert p.check({"Host": "[fd00::1]:8080"}, "/").allowed
    assert p.check({"Host": "localhost:8080"}, "/").allowed
    assert not p.check({"Host": "evil.example"}, "/").allowed
    assert policy(allowed_hosts="*").check({"Host": "anything.example"}, "/").allowed


def test_with_credentials_any_host_unless_hosts_are_listed():
    creds = {"Authorization": "Bearer one"}
    assert policy(gateway_tokens=SecretStr("one")).check({"Host": "gw.example.com", **creds}, "/").allowed
    listed = policy(gateway_tokens=SecretStr("one"), allowed_hosts="gw.example.com")
    assert listed.check({"Host": "gw.example.com", **creds}, "/").allowed
    assert not listed.check({"Host": "evil.example", **creds}, "/").allowed


def test_repeated_headers_are_refused_not_a_crash():
    p = policy(gateway_tokens=SecretStr("one"))
    twice = Headers([("Host", "127.0.0.1:8080"), ("Origin", "http://127.0.0.1:8080"), ("Origin", "https://x.test")])
    assert p.check(twice, "/").status == 403
    auth_twice = Headers([("Host", "127.0.0.1"), ("Authorization", "Bearer one"), ("Authorization", "Bearer one")])
    assert p.check(auth_twice, "/").status == 401
    hosts = Headers([("Host", "127.0.0.1"), ("Host", "evil.example")])
    assert policy().check(hosts, "/").status == 403


# --- binding ----------------------------------------------------------------------------------------------


def test_public_bind_needs_credentials_or_opt_in():
    assert check_bind(Config(host="127.0.0.1"), policy()) is None
    refusal = check_bind(Config(host="0.0.0.0"), policy())
    assert refusal and "ALLOW_PUBLIC_WITHOUT_AUTH" in refusal
    assert check_bind(Config(host="0.0.0.0", allow_public_without_auth=True), policy()) is None
    assert check_bind(Config(host="0.0.0.0"), policy(gateway_tokens=SecretStr("t"))) is None


def test_is_loopback():
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("10.0.0.1") and not is_loopback("example.com")
