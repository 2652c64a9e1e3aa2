"""``python -m gateway``: serve voice-agent sessions on $HOST:$PORT until SIGTERM or Ctrl-C.

With ``WEB_CONCURRENCY`` above 1, that many gateway processes share the port under a supervisor
(:mod:`shared.supervisor`): each one relays on a core of its own, and one that dies is replaced.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import sys

from gateway.auth import AccessPolicy, check_bind
from gateway.server import run_gateway_process, serve_forever, setup_logging
from shared.config import config_or_exit, result_ttl_refusal
from shared.prometheus import multiprocess_directory, process_died
from shared.supervisor import EXIT_BAD_CONFIG, Supervisor

STOP_MARGIN = 5.0
"""Seconds a gateway child gets beyond DRAIN_TIMEOUT to close its sessions and exit before it is killed."""


def main() -> int:
    config = config_or_exit("gateway")
    setup_logging(config)
    if config.web_concurrency == 1:
        asyncio.run(serve_forever(config))
        return 0
    refusal = check_bind(config, AccessPolicy(config)) or result_ttl_refusal(
        config, config.function_timeout, "FUNCTION_TIMEOUT"
    )
    if refusal:  # said once here, rather than by every process
        logging.getLogger("gateway").error(refusal)
        return EXIT_BAD_CONFIG
    if config.port == 0:  # every process must bind the same port: choose it here
        with socket.socket() as sock:
            sock.bind((config.host, 0))
            config = config.model_copy(update={"port": sock.getsockname()[1]})
    logging.getLogger("gateway").info(
        "starting %d gateway processes on %s:%d", config.web_concurrency, config.host, config.port
    )
    with multiprocess_directory():
        supervisor = Supervisor(
            run_gateway_process,
            (config,),
            config.web_concurrency,
            "gateway",
            on_death=lambda process, _: process_died(process.pid or 0),
            stop_grace=config.drain_timeout + STOP_MARGIN,  # a draining child must not be killed mid-drain
        )
        return supervisor.run()


if __name__ == "__main__":
    sys.exit(main())
