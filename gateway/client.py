"""A command-line client: talk to the gateway the way an app would, and watch where functions run.

    python -m gateway.client "What's the weather in Paris?"

It connects, sends Settings, sends each message as ``InjectUserMessage``, prints the conversation and the
function calls (backend calls from the gateway's ``BackendFunctionCall`` notices; calls the backend does not own
are refused with an error answer, since this client runs no function logic), and exits 0 once every message
has been answered. Exit status: 1 for an Error from the gateway or provider, 2 when the gateway is unreachable
or refuses the connection, 3 on timeout.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from typing import Any, TextIO

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus, InvalidURI

DEFAULT_URL = "ws://127.0.0.1:8080/v1/agent/converse"
SETTINGS: dict[str, Any] = {
    "type": "Settings",
    "audio": {
        "input": {"encoding": "linear16", "sample_rate": 16000},
        "output": {"encoding": "linear16", "sample_rate": 24000, "container": "none"},
    },
    "agent": {
        "listen": {"provider": {"type": "deepgram", "model": "nova-3"}},
        "think": {"provider": {"type": "open_ai", "model": "gpt-4o-mini"}, "prompt": "You are a helpful assistant."},
        "speak": {"provider": {"type": "deepgram", "model": "aura-2-thalia-en"}},
    },
}


class ClientFailure(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class Conversation:
    """Sends messages one at a time and prints what comes back until each is answered."""

    def __init__(self, ws: ClientConnection, out: TextIO) -> None:
        self.ws = ws
        self.out = out

    def print(self, line: str) -> None:
        print(line, file=self.out, flush=True)

    async def run(self, messages: list[str]) -> None:
        await self.ws.send(json.dumps(SETTINGS))
        await self.read_until(lambda m: m.get("type") == "SettingsApplied")
        for text in messages:
            await self.ws.send(json.dumps({"type": "InjectUserMessage", "content": text}))
            await self.read_until(self.answered())

    def answered(self):  # type: ignore[no-untyped-def]
        """True at the end of the agent's turn: its audio is done after it said something, and no backend call
        the gateway announced is still running (a filler line said while a call runs is not the answer)."""
        spoke = False
        running: set[str] = set()

        def check(message: dict[str, Any]) -> bool:
            nonlocal spoke
            kind = message.get("type")
            if kind == "ConversationText" and message.get("role") == "assistant":
                spoke = True
            elif kind == "BackendFunctionCall":
                if message.get("status") == "started":
                    running.add(str(message.get("id")))
                elif message.get("status") in ("finished", "cancelled"):
                    running.discard(str(message.get("id")))
            return spoke and not running and kind == "AgentAudioDone"

        return check

    async def read_until(self, done) -> None:  # type: ignore[no-untyped-def]
        while True:
            try:
                frame = await self.ws.recv()
            except ConnectionClosed as exc:
                raise ClientFailure(
                    1, f"connection closed by the gateway ({exc.rcvd.code if exc.rcvd else 1006})"
                ) from None
            if isinstance(frame, bytes):
                continue  # agent audio: a terminal has nothing to play it with
            message = json.loads(frame)
            await self.show(message)
            if done(message):
                return

    async def show(self, message: dict[str, Any]) -> None:
        kind = message.get("type")
        if kind == "Welcome":
            note = " (simulated agent)" if message.get("simulated") else ""
            self.print(f"connected: {message.get('request_id', '')}{note}")
        elif kind == "ConversationText":
            self.print(f"{message.get('role')}: {message.get('content')}")
        elif kind == "BackendFunctionCall":
            self.print(_call_line(message))
        elif kind == "FunctionCallRequest":
            for fn in message.get("functions", []):
                if not fn.get("client_side", True):
                    continue
                self.print(f"[client] {fn.get('name')}({fn.get('arguments')}): not run, this client executes nothing")
                refusal = {"error": f"{fn.get('name')} is not executed by this client"}
                await self.ws.send(
                    json.dumps(
                        {
                            "type": "FunctionCallResponse",
                            "id": fn.get("id"),
                            "name": fn.get("name"),
                            "content": json.dumps(refusal),
                        }
                    )
                )
        elif kind == "Warning":
            self.print(f"warning {message.get('code')}: {message.get('description')}")
        elif kind == "Error":
            raise ClientFailure(1, f"error {message.get('code')}: {message.get('description')}")


def _call_line(notice: dict[str, Any]) -> str:
    name, status = notice.get("name"), notice.get("status")
    if status == "started":
        return f"[backend] {name}({notice.get('arguments')}) started"
    if status == "finished":
        outcome = "ok" if notice.get("ok") else f"error: {notice.get('error')}"
        return f"[backend] {name} {outcome} in {notice.get('duration_ms')} ms on worker {notice.get('worker') or '-'}"
    if status == "progress":
        return f"[backend] {name}: {notice.get('message')}"
    return f"[backend] {name} {status}"


async def talk(url: str, messages: list[str], timeout: float, out: TextIO = sys.stdout) -> None:
    try:
        async with asyncio.timeout(timeout):
            try:
                ws = await connect(url, open_timeout=min(10.0, timeout), compression=None)
            except InvalidStatus as exc:
                raise ClientFailure(
                    2, f"the gateway at {url} refused the connection: HTTP {exc.response.status_code}"
                ) from None
            except (InvalidURI, InvalidHandshake, OSError) as exc:
                raise ClientFailure(2, f"cannot reach the gateway at {url}: {exc}") from None
            async with ws:
                await Conversation(ws, out).run(messages)
    except TimeoutError:
        raise ClientFailure(3, f"no complete answer within {timeout:g} s") from None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway.client", description=__doc__.split("\n\n")[0])
    parser.add_argument("messages", nargs="+", help="what the user says, one turn per argument")
    parser.add_argument("--url", default=os.environ.get("GATEWAY_URL", DEFAULT_URL), help=f"default {DEFAULT_URL}")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds for the whole conversation")
    args = parser.parse_args(argv)
    try:
        asyncio.run(talk(args.url, args.messages, args.timeout))
    except ClientFailure as exc:
        print(f"voice-agent-client: {exc}", file=sys.stderr)
        sys.exit(exc.status)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
