"""Settings read from the environment (and a ``.env`` file), shared by the gateway and the workers.

Names follow PaaS conventions (``REDIS_URL``, ``PORT``) so a Procfile deploy needs no renaming.
Secrets that only workers may hold (API keys of the functions) are *not* here: they live in the worker's
own settings (``workers.examples``), so the gateway process never even reads them.
"""

from __future__ import annotations

import math
import sys
from functools import lru_cache
from typing import Literal

from pydantic import AliasChoices, Field, FilePath, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict


class Config(BaseSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore", case_sensitive=False)

    redis_url: str = "redis://127.0.0.1:6379/0"
    """The Redis shared by gateways and workers; ``rediss://`` for TLS (managed services), see REDIS_TLS_VERIFY."""
    redis_tls_verify: Literal["required", "none"] = "required"
    """How a ``rediss://`` server's certificate is checked: ``required`` (valid for the URL's host, chaining to
    the system's CAs or REDIS_CA_CERT) or ``none`` (encrypted but unchecked: services with self-signed
    certificates, such as Heroku Redis). Plain ``redis://`` URLs ignore it."""
    redis_ca_cert: FilePath | None = None
    """A PEM file of the CA that signed a ``rediss://`` server's certificate (a self-signed one, for instance);
    the gateway and the workers refuse to start when it does not exist."""
    host: str = "127.0.0.1"
    """Address the gateway binds; a PaaS needs 0.0.0.0 (the Procfile sets it)."""
    port: int = Field(default=8080, ge=0, le=65535)
    web_concurrency: int = Field(default=1, ge=1, le=64)
    """Gateway processes sharing HOST:PORT (``SO_REUSEPORT``, Linux), under a supervisor that replaces one that
    dies. One process relays about 100 streaming sessions per core before frames queue (docs/PERFORMANCE.md);
    the name is the one PaaS platforms set for the web process."""

    gateway_tokens: SecretStr | None = None
    """Comma-separated static tokens clients may present, each ``name:token`` (the caller is ``name``) or a bare
    ``token`` (the caller is ``token-<fingerprint>``). With none (and no TOKEN_SECRET) anyone may connect, so
    the gateway then binds loopback only unless ALLOW_PUBLIC_WITHOUT_AUTH is set."""
    token_secret: SecretStr | None = None
    """HMAC key (HS256) of signed tokens: JWTs with ``exp``, ``aud`` and ``sub`` (the caller), minted by an app
    backend or ``python -m gateway.auth mint --sub NAME``. Use at least 32 random bytes."""
    token_audience: str = Field(default="voice-function-gateway", min_length=1)
    """The ``aud`` a signed token must carry, so a token minted for another service with the same key is refused."""
    allowed_origins: str = ""
    """Comma-separated browser origins allowed besides the gateway's own (e.g. ``https://app.example.com``).
    Requests without Origin (SDKs, servers) are not affected; any other browser origin is refused."""
    allowed_hosts: str = ""
    """Comma-separated host names the Host header may carry besides loopback ones (``*``: any). Refusing other
    names stops DNS rebinding; empty with credentials configured: any (the deploy's domain needs no listing)."""
    allow_public_without_auth: bool = False
    """Explicit opt-in to listen on a non-loopback address with no credentials configured."""

    provider: Literal["auto", "simulated", "deepgram", "openai"] = Field(
        default="auto", validation_alias=AliasChoices("provider", "upstream")
    )
    """Who the gateway talks to for each session, one folder of ``gateway/providers/`` each. ``auto`` picks
    Deepgram when DEEPGRAM_API_KEY is set, else OpenAI when OPENAI_API_KEY is set, else the built-in simulated
    agent. ``UPSTREAM``, the old name, is still read when PROVIDER is not set."""
    deepgram_api_key: SecretStr | None = None
    deepgram_url: str = "wss://agent.deepgram.com/v1/agent/converse"
    openai_api_key: SecretStr | None = None
    openai_url: str = "wss://api.openai.com/v1/realtime"
    """The Realtime endpoint; ``?model=`` is added from ``openai_model`` unless the URL has one."""
    openai_model: str = "gpt-realtime"
    openai_voice: str = "marin"
    """Used unless the client's Settings choose one (``agent.speak.provider`` of type ``open_ai``)."""

    max_frame_bytes: int = Field(default=1 << 20, ge=1024)
    """Largest frame a client may send; a larger one closes the connection with 1009 (message too big)."""
    max_pending_calls: int = Field(default=16, ge=1)
    """Backend calls one session may have in flight; more are answered at once with an error."""
    client_message_rate: float = Field(default=200.0, gt=0)
    """Frames per second a client may send on average (bursts of twice that); excess frames are dropped."""
    client_byte_rate: int = Field(default=1 << 20, ge=1024)
    """Bytes per second a client may send on average (bursts of twice that, or of MAX_FRAME_BYTES if larger, so
    any frame the gateway accepts can pass); excess frames are dropped. The default leaves room for the heaviest
    real audio (48 kHz linear32 stereo is 384 KB/s) while one client cannot keep the shared event loop busy."""
    max_text_frame_bytes: int = Field(default=64 << 10, ge=256)
    """Largest text frame after Settings (Settings itself may be up to MAX_FRAME_BYTES: prompts are long). A
    larger one is dropped unread with ``Error MESSAGE_TOO_LARGE``: parsing big JSON on the shared event loop
    delays every session's frames."""
    max_settings_functions: int = Field(default=128, ge=1)
    """Most functions a client may declare in Settings (``agent.think.functions``); more refuse the Settings."""
    catalog_wait: float = Field(default=2.0, ge=0)
    """Seconds a session start retries the backend catalog when Redis cannot be read and this process has never
    read it; once it has, the last catalog it read is used at once."""
    max_sessions: int = Field(default=1000, ge=1)
    """Concurrent sessions per gateway process (each of WEB_CONCURRENCY); beyond it the handshake gets HTTP 503."""

    function_timeout: float = Field(default=10.0, gt=0)
    """Deadline in seconds for a backend function that declares none."""
    result_ttl: int = Field(default=300, ge=1)
    """Seconds a stored result, a call's claim and its cancel marker live. Must cover the longest function
    deadline (gateways and workers refuse to start otherwise): a claim expiring while its call still runs would
    let a duplicate job run it again, and a result must outlive the wait for it."""
    keepalive_interval: float = Field(default=5.0, gt=0)
    """Seconds without a frame sent to the provider after which the gateway sends KeepAlive while calls are pending."""
    backend_call_notices: bool = True
    """Tell the client about each backend call (``BackendFunctionCall`` messages) for its call panel."""
    history_backend_calls: Literal["hidden", "shown"] = "hidden"
    """``hidden``: the backend's function calls (their arguments and results) are removed from the provider's
    ``History`` messages before the client gets them, as they are from ``FunctionCallRequest``: results may hold
    data meant for the model only. ``shown`` relays History unchanged (a client that renders a transcript of
    every call)."""
    resume_grace: float = Field(default=15.0, ge=0)
    """Seconds a session whose client dropped stays parked (provider kept alive, backend calls answered, text
    messages kept) for the client to reconnect with the same ``?conversation=``; 0 closes it at once."""
    conversation_memory: bool = True
    """Keep each conversation's turns and backend calls (with arguments and results) in Redis, so a new provider
    session for the same ``?conversation=`` id starts with that history (docs/CONVERSATION-STORAGE.md). Off:
    nothing is stored and ``GET /conversations/<id>`` answers 404."""
    conversation_ttl: int = Field(default=86400, ge=1)
    """Seconds a conversation's memory and ownership live after it was last used: the memory's expiry is renewed at
    each write, the owner key's at each handshake and with each memory write (in the same script), so ownership
    never expires before the memory it guards."""
    conversation_max_entries: int = Field(default=200, ge=1)
    """Most entries (turns and calls) a conversation's memory keeps: the oldest go first. Each entry is at most
    about 8 KiB (longer text is cut and marked ``truncated``), so a conversation stores at most about
    ``8 KiB x CONVERSATION_MAX_ENTRIES``."""
    catalog_ttl: int = Field(default=15, ge=2)
    """Seconds a worker's catalog lives in Redis unless refreshed (it refreshes every third of that)."""

    worker_processes: int = Field(default=2, ge=1)
    worker_concurrency: int = Field(default=32, ge=1, le=1024)
    """Calls one worker process runs at once: ``async def`` functions on its event loop, blocking ones in a
    thread pool of this size. A process takes a job from its queue only while it has a free slot."""
    worker_queues: str = "default"
    """Comma-separated logical queues the workers listen on, highest priority first."""
    worker_modules: str = "workers.examples"
    """Comma-separated modules imported by workers to register their functions."""
    worker_metrics_port: int = Field(default=0, ge=0, le=65535)
    """Port on which ``python -m workers`` serves ``/metrics`` (Prometheus) for all its worker processes, on
    every interface and without credentials (keep it off the public network); 0 serves nothing."""

    log_level: str = "INFO"
    log_format: Literal["text", "json"] = "text"
    """``json``: every log line of the gateway and the workers is one JSON object (level, logger, message, and
    the session id, the provider's call id, function, duration, worker and traceparent where they apply), for log
    pipelines that join one call's lines across processes. ``text``: lines for people."""
    drain_timeout: float = Field(default=20.0, ge=0)
    """Seconds a gateway given SIGTERM waits for the calls in flight to be answered with their results (new
    sessions and calls are refused meanwhile) before it answers the rest with an error, closes sessions with 1001
    and exits. The default stays under common platforms' stop grace periods (Heroku's 30 s, Kubernetes' 30 s)."""

    def resolved_provider(self) -> Literal["simulated", "deepgram", "openai"]:
        """The provider ``auto`` stands for with the keys this gateway holds."""
        if self.provider != "auto":
            return self.provider
        if self.deepgram_api_key:
            return "deepgram"
        return "openai" if self.openai_api_key else "simulated"

    @property
    def queues(self) -> list[str]:
        return [q.strip() for q in self.worker_queues.split(",") if q.strip()]

    @property
    def modules(self) -> list[str]:
        return [m.strip() for m in self.worker_modules.split(",") if m.strip()]


def result_ttl_refusal(config: Config, longest_timeout: float, what: str) -> str | None:
    """A reason to refuse to start when RESULT_TTL is shorter than ``longest_timeout`` (the deadline of
    ``what``), or None. Checked at start so a bad setting is a clear message, not a rare double execution."""
    if config.result_ttl >= longest_timeout:
        return None
    return (
        f"Refusing to start: RESULT_TTL={config.result_ttl} s is shorter than {what} ({longest_timeout:g} s). "
        "Results, claims and cancel markers would expire while calls may still run or be waited for; "
        f"set RESULT_TTL to at least {math.ceil(longest_timeout)}."
    )


@lru_cache(maxsize=1)
def get_config() -> Config:
    return Config()


def config_or_exit(program: str) -> Config:
    """The settings, or exit 2 with one line naming what is wrong (never a traceback): for the entry points."""
    try:
        get_config.cache_clear()  # the environment as it is now, which the rest of the process then reads
        return get_config()
    except ValidationError as exc:
        print(f"{program}: invalid settings: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
