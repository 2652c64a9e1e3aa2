"""Who may talk to the gateway: static tokens, short-lived signed tokens, and an Origin allowlist.

A credential is accepted in any of the three places clients can put one:

- ``Authorization: Bearer <t>`` (or ``Token <t>``, as Deepgram SDKs send it) — servers and SDKs;
- ``?token=<t>`` in the URL — simple tools;
- the subprotocol pair ``["token", "<t>"]`` — browsers, which cannot set headers (Deepgram's own scheme).

Signed tokens let an app backend hand a browser a credential that expires, without sharing the gateway's
secret: ``v1.<expiry unix seconds>.<nonce>.<hex HMAC-SHA256 of the first three parts>``. Mint one with
``python -m gateway.auth mint --ttl 300`` (reads TOKEN_SECRET) or :func:`mint_token`.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import ipaddress
import secrets
import sys
import time
from collections.abc import Iterable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

from websockets.datastructures import Headers

from shared.config import Config

TOKEN_VERSION = "v1"


def mint_token(secret: str, ttl: float, now: float | None = None) -> str:
    """A signed token valid for ``ttl`` seconds."""
    expiry = int((now if now is not None else time.time()) + ttl)
    body = f"{TOKEN_VERSION}.{expiry}.{secrets.token_hex(8)}"
    return f"{body}.{_sign(secret, body)}"


def verify_signed(secret: str, token: str, now: float | None = None) -> bool:
    parts = token.split(".")
    if len(parts) != 4 or parts[0] != TOKEN_VERSION or not parts[1].isdigit():
        return False
    body = ".".join(parts[:3])
    if not hmac.compare_digest(_sign(secret, body), parts[3]):
        return False
    return int(parts[1]) >= (now if now is not None else time.time())


def _sign(secret: str, body: str) -> str:
    return hmac.new(secret.encode(), body.encode(), hashlib.sha256).hexdigest()


def presented_token(headers: Headers | dict[str, str], path: str) -> str | None:
    """The credential a request carries, from the Authorization header, ``?token=``, or the subprotocols."""
    authorization = headers.get("Authorization") or headers.get("authorization") or ""
    scheme, _, value = authorization.partition(" ")
    if scheme.lower() in ("bearer", "token") and value.strip():
        return value.strip()
    query = parse_qs(urlsplit(path).query).get("token")
    if query and query[0]:
        return query[0]
    offered = headers.get("Sec-WebSocket-Protocol") or headers.get("sec-websocket-protocol") or ""
    protocols = [p.strip() for p in offered.split(",")]
    if len(protocols) >= 2 and protocols[0] == "token" and protocols[1]:
        return protocols[1]
    return None


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    status: int = 200
    reason: str = ""


class AccessPolicy:
    """Decides each request from the configuration; with no credentials configured everything is allowed
    (the gateway then listens on loopback only, see :func:`check_bind`)."""

    def __init__(self, config: Config) -> None:
        self._tokens = [
            t.strip()
            for t in (config.gateway_tokens.get_secret_value() if config.gateway_tokens else "").split(",")
            if t.strip()
        ]
        self._secret = config.token_secret.get_secret_value() if config.token_secret else None
        self._origins = {o.strip().rstrip("/") for o in config.allowed_origins.split(",") if o.strip()}

    @property
    def requires_credentials(self) -> bool:
        return bool(self._tokens or self._secret)

    def valid(self, token: str | None) -> bool:
        if not token:
            return False
        if any(hmac.compare_digest(token.encode(), t.encode()) for t in self._tokens):
            return True
        return bool(self._secret) and verify_signed(self._secret, token)  # type: ignore[arg-type]

    def check(self, headers: Headers | dict[str, str], path: str) -> Verdict:
        origin = headers.get("Origin") or headers.get("origin")
        if self._origins and origin is not None and origin.rstrip("/") not in self._origins:
            return Verdict(False, 403, "Origin not allowed.")
        if self.requires_credentials and not self.valid(presented_token(headers, path)):
            return Verdict(False, 401, "A valid token is required (Authorization: Bearer, ?token= or subprotocol).")
        return Verdict(True)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
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


def main(argv: Iterable[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway.auth")
    sub = parser.add_subparsers(dest="command", required=True)
    mint = sub.add_parser("mint", help="print a signed token (needs TOKEN_SECRET)")
    mint.add_argument("--ttl", type=float, default=300, help="seconds of validity (default 300)")
    args = parser.parse_args(list(argv) if argv is not None else None)
    config = Config()
    if config.token_secret is None:
        sys.exit("TOKEN_SECRET is not set.")
    print(mint_token(config.token_secret.get_secret_value(), args.ttl))


if __name__ == "__main__":
    main()
