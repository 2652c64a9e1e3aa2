"""A hostile provider: a WebSocket server the gateway reaches as its Deepgram upstream (UPSTREAM=deepgram,
DEEPGRAM_URL pointing here), which plays scripts of hypothesis-generated frames.

It runs in the test process, on an event loop of its own in a background thread, so a test can hand it a
script and read back what the gateway sent it. A connection is matched to its script by ``fuzz_id``, a field
the test adds to the client's Settings (the gateway relays unknown fields untouched). A connection whose Settings
carry no ``fuzz_id`` is served by the simulated agent instead: that is how a canary session on the same gateway
gets a well-behaved provider.

For each script the provider sends Welcome, answers the Settings with SettingsApplied, then sends every frame
followed by a marker (``FuzzMarker``, a type the gateway relays as is), records everything the gateway sends it,
and, once the test says so, ends the connection the way the script says: a close code, or cutting the TCP
connection without a close frame ("abort"), or waiting for the gateway to close it ("client").
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from gateway.simulated_agent import SimulatedAgent

WELCOME = json.dumps({"type": "Welcome", "request_id": "hostile"})
SETTINGS_APPLIED = json.dumps({"type": "SettingsApplied"})


def marker(index: int) -> str:
    return json.dumps({"type": "FuzzMarker", "n": index})


@dataclass
class Script:
    frames: list[str | bytes]
    ending: str
    """``client`` (wait for the gateway to close), ``abort`` (cut the connection) or a close code, e.g. ``1011``."""
    received: list[str | bytes] = field(default_factory=list)
    finish: asyncio.Event = field(default_factory=asyncio.Event)


class HostileProvider:
    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="hostile-provider", daemon=True)
        self._server: Server | None = None
        self._scripts: dict[int, Script] = {}
        self.url = ""

    def start(self) -> HostileProvider:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._serve(), self._loop).result(10)
        port = next(iter(self._server.sockets)).getsockname()[1]
        self.url = f"ws://127.0.0.1:{port}/v1/agent/converse"
        return self

    async def _serve(self) -> Server:
        return await serve(self._handle, "127.0.0.1", 0, max_size=None, compression=None)

    def stop(self) -> None:
        if self._server is not None:
            # A test that failed midway never said finish: its connection would keep the server from closing.
            for script in list(self._scripts.values()):
                self._loop.call_soon_threadsafe(script.finish.set)
            asyncio.run_coroutine_threadsafe(self._close(self._server), self._loop).result(15)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)

    @staticmethod
    async def _close(server: Server) -> None:
        server.close()  # on the provider's own loop: websockets' server is not thread-safe
        await server.wait_closed()

    # --- the test's side ------------------------------------------------------------------------------------

    def add(self, fuzz_id: int, frames: list[str | bytes], ending: str) -> None:
        async def create() -> None:  # the Event must belong to the provider's loop
            self._scripts[fuzz_id] = Script(frames, ending)

        asyncio.run_coroutine_threadsafe(create(), self._loop).result(10)

    def finish(self, fuzz_id: int) -> None:
        """Let the connection of ``fuzz_id`` end as its script says."""
        self._loop.call_soon_threadsafe(self._scripts[fuzz_id].finish.set)

    def received(self, fuzz_id: int) -> list[str | bytes]:
        """Every frame the gateway sent on the connection of ``fuzz_id`` after its Settings, in order."""
        return list(self._scripts[fuzz_id].received)  # a copy: the provider's thread appends to it

    def responses(self, fuzz_id: int) -> list[dict[str, Any]]:
        """The FunctionCallResponse messages the gateway sent on the connection of ``fuzz_id``, in order."""
        found = []
        for frame in list(self._scripts[fuzz_id].received):  # a copy: the provider's thread appends to it
            if isinstance(frame, str) and '"FunctionCallResponse"' in frame:
                message = json.loads(frame)
                if message.get("type") == "FunctionCallResponse":
                    found.append(message)
        return found

    def answer_counts(self, fuzz_id: int) -> Counter[str]:
        """How many FunctionCallResponse messages the gateway sent, by call id."""
        return Counter(message["id"] for message in self.responses(fuzz_id))

    # --- the provider's side --------------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        try:
            await ws.send(WELCOME)
            settings = await ws.recv()
            fuzz_id = json.loads(settings).get("fuzz_id") if isinstance(settings, str) else None
            if fuzz_id is None:
                await self._simulated(ws, settings)
            else:
                await self._play(ws, self._scripts[fuzz_id])
        except ConnectionClosed:
            pass

    async def _play(self, ws: ServerConnection, script: Script) -> None:
        reader = asyncio.create_task(self._record(ws, script))
        await ws.send(SETTINGS_APPLIED)
        for index, frame in enumerate(script.frames):
            await ws.send(frame)
            await ws.send(marker(index))
        await script.finish.wait()
        if script.ending == "abort":
            ws.transport.abort()
        elif script.ending != "client":
            await ws.close(int(script.ending), "hostile provider")
        await reader

    async def _record(self, ws: ServerConnection, script: Script) -> None:
        try:
            async for frame in ws:
                script.received.append(frame)
        except ConnectionClosed:
            pass

    async def _simulated(self, ws: ServerConnection, settings: str | bytes) -> None:
        agent = SimulatedAgent()
        for reply in agent.receive(settings):
            await ws.send(reply)
        async for frame in ws:
            for reply in agent.receive(frame):
                await ws.send(reply)
