"""``vfg``: one command for the gateway, the workers, the test client and signed tokens.

Each subcommand runs what its ``python -m`` form runs (those keep working); settings come from the
environment as always. ``--help``, at the top or after a subcommand, imports and starts nothing else.
"""

from __future__ import annotations

import argparse
import sys

COMMANDS = {
    "gateway": "serve voice-agent sessions on $HOST:$PORT until SIGTERM (python -m gateway)",
    "workers": "run the backend function workers (python -m workers)",
    "client": "talk to a gateway from the terminal, one turn per argument (python -m gateway.client)",
    "token": "print a signed token for a caller, a JWT (python -m gateway.auth mint; needs TOKEN_SECRET)",
}


def run(command: str, rest: list[str]) -> int | None:
    """Run one subcommand; imports are deferred so ``vfg --help`` stays instant."""
    if command == "gateway":
        gateway_parser = argparse.ArgumentParser(
            prog="vfg gateway",
            description=COMMANDS["gateway"] + ". Settings come from the environment (README: Configuration).",
        )
        gateway_parser.parse_args(rest)
        from gateway.__main__ import main as gateway_main

        return gateway_main()
    if command == "workers":
        from workers.__main__ import main as workers_main

        return workers_main(rest)
    if command == "client":
        from gateway.client import main as client_main

        client_main(rest)
        return 0
    from gateway.auth import main as auth_main

    auth_main(["mint", *rest])
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="vfg",
        description="voice-function-gateway: run voice-agent function calls on backend workers through Redis.",
        epilog="`vfg COMMAND --help` describes each command's options.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, summary in COMMANDS.items():
        commands.add_parser(name, help=summary, add_help=False)  # the command's own parser answers --help
    args, rest = parser.parse_known_args(sys.argv[1:] if argv is None else argv)
    return run(args.command, rest) or 0  # bad settings: each command exits 2 with one line (config_or_exit)


if __name__ == "__main__":
    sys.exit(main())
