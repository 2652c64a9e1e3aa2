"""``python -m gateway``: serve voice-agent sessions on $HOST:$PORT until SIGTERM or Ctrl-C."""

from __future__ import annotations

import asyncio
import logging
import signal

from gateway.auth import AccessPolicy, check_bind
from gateway.server import run_gateway
from shared.config import get_config
from shared.redis_server import redacted


async def serve_forever() -> None:
    config = get_config()
    policy = AccessPolicy(config)
    refusal = check_bind(config, policy)
    if refusal:
        logging.getLogger("gateway").error(refusal)
        raise SystemExit(2)
    if not policy.requires_credentials:
        logging.getLogger("gateway").warning(
            "no credentials configured (GATEWAY_TOKENS / TOKEN_SECRET): anyone who reaches %s may connect", config.host
        )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with run_gateway(config) as (_, server):
        port = next(iter(server.sockets)).getsockname()[1]
        upstream = config.resolved_upstream()
        note = " (simulated agent: offline, no account needed)" if upstream == "simulated" else ""
        logging.getLogger("gateway").info(
            "gateway listening on ws://%s:%d/v1/agent/converse, upstream %s%s, Redis %s",
            config.host, port, upstream, note, redacted(config.redis_url),
        )  # fmt: skip
        await stop.wait()
        logging.getLogger("gateway").info("shutting down")


def main() -> None:
    config = get_config()
    logging.basicConfig(level=config.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    asyncio.run(serve_forever())


if __name__ == "__main__":
    main()
