"""Who may talk to the gateway: static tokens, signed JWTs, the Host and Origin rules, and who the caller is.

A credential is accepted in any of the places clients can put one:

- ``Authorization: Bearer <t>`` (or ``Token <t>``, as Deepgram SDKs send it) — servers and SDKs;
- ``?token=<t>`` in the URL — simple tools;
- the subprotocol pair ``["token", "<t>"]`` or ``["bearer", "<t>"]`` — browsers, which cannot set headers
  (Deepgram's own browser components offer ``bearer``); the handshake echoes the scheme offered.

Signed tokens are standard JWTs (HS256 with TOKEN_SECRET as the key, ``exp``, ``aud`` = TOKEN_AUDIENCE and ``sub``
required), so an app backend in any language can hand a browser a credential that expires without sharing the
secret. ``sub`` names the caller. Mint one with ``python -m gateway.auth mint --sub alice --ttl 300`` or
:func:`mint_token`.

Every request that acts (WebSocket handshakes, ``POST /function-call``) passes :meth:`AccessPolicy.check`:

1. Host: the Host header must name a loopback address or one in ALLOWED_HOSTS, so a page on a DNS name rebound
   to 127.0.0.1 cannot reach a developer's gateway. With credentials configured and ALLOWED_HOSTS empty any
   Host is accepted: a deploy behind a domain keeps working, and a rebinding page holds no credential.
2. Origin: absent (SDKs, servers), the gateway's own origin (same host and port as the Host header), or listed
   in ALLOWED_ORIGINS. Any other browser origin is refused even when no credentials are configured.
3. Credential, when GATEWAY_TOKENS or TOKEN_SECRET is set. Every malformed credential is a 401, never a 500.

The verdict carries the verified caller (``principal``): the JWT's ``sub`` or the static token's name. It
travels with each call to the worker (``CallContext.principal``); it is ``""`` when no credentials are
configured, since then nobody was verified.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import ipaddress
import sys
import time
import warnings
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import jwt
from jwt.warnings import InsecureKeyLengthWarning
from websockets.datastructures import Headers

from shared.config import Config, config_or_exit

ALGORITHMS = ["HS256"]
"""The only algorithm accepted: pinning it refuses ``alg: none`` and algorithm-confusion tokens."""
MIN_SECRET_BYTES = 32
"""RFC 7518's minimum HMAC key for HS256; a shorter TOKEN_SECRET is logged as a warning at startup."""
SUBPROTOCOL_SCHEMES = ("token", "bearer")
"""First item of the subprotocol pair that carries a credential (compared case-insensitively)."""
DEFAULT_AUDIENCE: str = Config.model_fields["token_audience"].default
"""``aud`` of minted tokens unless TOKEN_AUDIENCE says otherwise."""
STATIC_PRINCIPAL_PREFIX = "token-"
"""Principal of a bare static token: this prefix and a short fingerprint of the token (stable when the list
changes, and does not reveal the token)."""

# PyJWT warns on every encode/decode with a short key; the gateway says it once at startup instead
# (weak_secret_warning), so the log is not flooded with one warning per handshake.
warnings.filterwarnings("ignore", category=InsecureKeyLengthWarning)


def mint_token(
    secret: str,
    ttl: float,
    *,
    sub: str,
    audience: str = DEFAULT_AUDIENCE,
    now: float | None = None,
) -> str:
    """A signed JWT naming ``sub`` as the caller, valid for ``ttl`` seconds.

    An app backend calls this (or any JWT library with the same claims) after it has authenticated its user,
    and hands the token to the browser.
    """
    if not sub:
        raise ValueError("sub (the caller's name) is required")
    issued = int(now if now is not None else time.time())
    claims = {"sub": sub, "aud": audience, "iat": issued, "exp": int(issued + ttl)}
    return jwt.encode(claims, secret, algorithm=ALGORITHMS[0])


def verify_signed(
    secret: str,
    token: str,
    *,
    audience: str = DEFAULT_AUDIENCE,
    now: float | None = None,
) -> str | None:
    """The caller (``sub``) of a valid JWT, or None for anything else: bad signature, other algorithm,
    expired, wrong audience, missing claims, or bytes that are not a JWT at all."""
    options = {
        "require": ["exp", "sub", "aud"],
        # iat is informational: a minting backend whose clock runs a little ahead must not make fresh tokens fail.
        "verify_iat": False,
        "verify_exp": now is None,
    }
    try:
        claims = jwt.decode(token, secret, algorithms=ALGORITHMS, audience=audience, options=options)  # type: ignore[arg-type]
    except (jwt.InvalidTokenError, ValueError, TypeError):
        # ValueError/TypeError: PyJWT lets a few malformed inputs through as those (odd padding, non-text parts).
        return None
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub:
        return None
    if now is not None and not (isinstance(claims["exp"], int | float) and claims["exp"] > now):
        return None
    return sub


def presented_token(headers: Mapping[str, str], path: str) -> str | None:
    """The credential a request carries, from the Authorization header, ``?token=``, or the subprotocols."""
    authorization = _header(headers, "Authorization") or ""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() in ("bearer", "token") and value.strip():
        return value.strip()
    query = parse_qs(urlsplit(path).query).get("token")
    if query and query[0]:
        return query[0]
    protocols = [p.strip() for p in (_header(headers, "Sec-WebSocket-Protocol") or "").split(",")]
    if len(protocols) >= 2 and protocols[0].lower() in SUBPROTOCOL_SCHEMES and protocols[1]:
        return protocols[1]
    return None


def subprotocol_scheme(offered: Iterable[str]) -> str | None:
    """The subprotocol the handshake must echo: the scheme exactly as offered (``token``, ``bearer``, any case),
    or None. Browsers drop a connection whose answer is not one of the subprotocols they offered."""
    first = next(iter(offered), None)
    return first if first is not None and first.lower() in SUBPROTOCOL_SCHEMES else None


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    status: int = 200
    reason: str = ""
    principal: str = ""
    """Who was verified: the JWT's ``sub`` or the static token's name; ``""`` when no credentials are
    configured (functions see that as an anonymous caller)."""


@dataclass(frozen=True)
class StaticToken:
    principal: str
    secret: bytes


def parse_static_tokens(raw: str) -> list[StaticToken]:
    """GATEWAY_TOKENS entries: ``name:token`` (principal ``name``) or a bare ``token`` (principal
    ``token-<fingerprint>``). A bare token therefore must not contain ``:``."""
    tokens = []
    for entry in (e.strip() for e in raw.split(",")):
        if not entry:
            continue
        name, sep, token = entry.partition(":")
        if sep and name.strip() and token.strip():
            tokens.append(StaticToken(name.strip(), token.strip().encode()))
        else:
            secret = entry.encode()
            tokens.append(StaticToken(STATIC_PRINCIPAL_PREFIX + hashlib.sha256(secret).hexdigest()[:12], secret))
    return tokens


def allowed_origins(config: Config) -> frozenset[str]:
    """ALLOWED_ORIGINS as a set of normalised origins (lower case, no trailing slash): compare with
    :func:`normal_origin` of a request's ``Origin``."""
    return frozenset(normal_origin(o) for o in config.allowed_origins.split(",") if o.strip())


def normal_origin(origin: str) -> str:
    return origin.strip().rstrip("/").lower()


class AccessPolicy:
    """Decides each request from the configuration (see the module docstring for the rules)."""

    def __init__(self, config: Config) -> None:
        self._tokens = parse_static_tokens(config.gateway_tokens.get_secret_value() if config.gateway_tokens else "")
        self._secret = config.token_secret.get_secret_value() if config.token_secret else None
        self._audience = config.token_audience
        self._origins = allowed_origins(config)
        self._hosts = {h.strip().lower().strip("[]") for h in config.allowed_hosts.split(",") if h.strip()}

    @property
    def requires_credentials(self) -> bool:
        return bool(self._tokens or self._secret)

    def principal(self, token: str | None) -> str | None:
        """The caller a credential names, or None when it is missing, malformed or not valid."""
        if not token or not token.isascii() or not token.isprintable():
            return None  # a non-ASCII credential can match nothing, and must not reach the comparisons below
        presented = token.encode("ascii")
        matched: str | None = None
        for static in self._tokens:  # every entry is compared, so timing does not tell which one matched
            if hmac.compare_digest(presented, static.secret) and matched is None:
                matched = static.principal
        if matched is not None:
            return matched
        if self._secret:
            return verify_signed(self._secret, token, audience=self._audience)
        return None

    def valid(self, token: str | None) -> bool:
        return self.principal(token) is not None

    def check(self, headers: Mapping[str, str], path: str) -> Verdict:
        host = _header(headers, "Host") or ""
        if not self._host_allowed(host):
            return Verdict(False, 403, "Host not allowed: add it to ALLOWED_HOSTS.")
        origin = _header(headers, "Origin")
        if origin is not None and not self._origin_allowed(origin, host):
            return Verdict(False, 403, "Origin not allowed: add it to ALLOWED_ORIGINS.")
        if not self.requires_credentials:
            return Verdict(True)
        principal = self.principal(presented_token(headers, path))
        if principal is None:
            return Verdict(False, 401, "A valid token is required (Authorization: Bearer, ?token= or subprotocol).")
        return Verdict(True, principal=principal)

    def _host_allowed(self, host_header: str) -> bool:
        if "*" in self._hosts or (self.requires_credentials and not self._hosts):
            return True
        split = _split_authority(host_header)
        return split is not None and (is_loopback(split[0]) or split[0] in self._hosts)

    def _origin_allowed(self, origin: str, host_header: str) -> bool:
        if normal_origin(origin) in self._origins:
            return True
        try:
            parts = urlsplit(origin.strip())
            scheme = parts.scheme.lower()
        except ValueError:
            return False
        if scheme not in ("http", "https") or parts.path not in ("", "/") or parts.query or parts.username:
            return False
        default_port = 443 if scheme == "https" else 80
        own = _split_authority(host_header, default_port)
        theirs = _split_authority(parts.netloc, default_port)
        return own is not None and own == theirs


def _header(headers: Mapping[str, str], name: str) -> str | None:
    """A header from websockets' case-insensitive ``Headers`` or from a plain dict (any case), None if absent.

    A header sent several times comes back joined with ", " (HTTP's own rule): websockets' ``get`` would raise,
    and the joined value fails every check that expects one value (Host, Origin, a credential).
    """
    if isinstance(headers, Headers):
        values = headers.get_all(name)
        return ", ".join(values) if values else None
    value = headers.get(name)
    return value if value is not None else headers.get(name.lower())


def _split_authority(authority: str, default_port: int | None = None) -> tuple[str, int | None] | None:
    """``(host, port)`` of ``host[:port]`` / ``[v6][:port]``, host lower-cased without brackets; None if malformed."""
    if not authority or not authority.isascii() or any(c in authority for c in "/\\@?# \t"):
        return None
    try:
        parts = urlsplit("//" + authority)
        host, port = parts.hostname, parts.port
    except ValueError:
        return None
    if not host:
        return None
    return host, port if port is not None else default_port


def is_loopback(host: str) -> bool:
    if host.lower() in ("localhost", "localhost."):
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_bind(config: Config, policy: AccessPolicy) -> str | None:
    """A reason to refuse to start, or None. Without credentials, only loopback unless explicitly allowed."""
    if policy.requires_credentials or is_loopback(config.host) or config.allow_public_without_auth:
        return None
    return (
        f"Refusing to listen on {config.host} without credentials: set GATEWAY_TOKENS or TOKEN_SECRET, "
        "bind HOST=127.0.0.1, or set ALLOW_PUBLIC_WITHOUT_AUTH=true to accept anyone."
    )


def weak_secret_warning(config: Config) -> str | None:
    """A warning to log at startup when TOKEN_SECRET is too short to resist guessing from one stolen token."""
    if config.token_secret and len(config.token_secret.get_secret_value().encode()) < MIN_SECRET_BYTES:
        return f"TOKEN_SECRET is shorter than {MIN_SECRET_BYTES} bytes: use a longer random secret"
    return None


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway.auth")
    sub = parser.add_subparsers(dest="command", required=True)
    mint = sub.add_parser("mint", help="print a signed token, a JWT (needs TOKEN_SECRET)")
    mint.add_argument("--sub", required=True, help="who the token speaks for (functions see it as ctx.principal)")
    mint.add_argument("--ttl", type=float, default=300, help="seconds of validity (default 300)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    config = config_or_exit("python -m gateway.auth")
    if config.token_secret is None:
        sys.exit("TOKEN_SECRET is not set.")
    print(mint_token(config.token_secret.get_secret_value(), args.ttl, sub=args.sub, audience=config.token_audience))


if __name__ == "__main__":
    main()
