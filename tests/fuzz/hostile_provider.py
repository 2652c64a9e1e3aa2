"""A hostile provider: a WebSocket server the gateway reaches as its Deepgram provider (PROVIDER=deepgram,
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

It is also a recorder: a connection registered with :meth:`HostileProvider.record` is served by the simulated
agent, like the canary's, but keeps every frame it received and every text frame it sent. Tests assert on what
the provider actually got (the Settings, every FunctionCallResponse), not on what the client saw of it. And the
first frame of every connection is kept (``first_frames``), so a test can check that nothing but a valid Settings
ever reached the provider first.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from gateway.providers.simulated.agent import SimulatedAgent

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
    """Every frame the gateway sent after its Settings, in order."""
    finish: asyncio.Event = field(default_factory=asyncio.Event)
    settings: str | bytes | None = None
    """The gateway's first frame on this connection: the Settings it passed on."""
    sent: list[str] = field(default_factory=list)
    """Every text frame the provider sent (recorded connections only: a script's frames are known already)."""


SIMULATED = "simulated"
"""A script ending that means "no script": the simulated agent answers, and the connection is recorded."""


class HostileProvider:
    def __init__(self) -> None:
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="hostile-provider", daemon=True)
        self._server: Server | None = None
        self._scripts: dict[int, Script] = {}
        self.first_frames: list[str | bytes] = []
        """The first frame the gateway sent on each connection (recorded or not), in order of arrival."""
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

    async def _close(self, server: Server) -> None:
        for script in self._scripts.values():  # a failed test leaves its script waiting to be told to finish
            script.finish.set()
        server.close()  # on the provider's own loop: websockets' server is not thread-safe
        await server.wait_closed()

    # --- the test's side ------------------------------------------------------------------------------------

    def add(self, fuzz_id: int, frames: list[str | bytes], ending: str) -> None:
        async def create() -> None:  # the Event must belong to the provider's loop
            self._scripts[fuzz_id] = Script(frames, ending)

        asyncio.run_coroutine_threadsafe(create(), self._loop).result(10)

    def record(self, fuzz_id: int) -> None:
        """Serve the connection of ``fuzz_id`` with the simulated agent and record it (see :meth:`received`)."""
        self.add(fuzz_id, [], SIMULATED)

    def forget(self, fuzz_id: int) -> None:
        """Drop what ``fuzz_id`` recorded (a recording may hold megabytes of hostile frames)."""
        self._loop.call_soon_threadsafe(self._scripts.pop, fuzz_id, None)

    def settings(self, fuzz_id: int) -> str | bytes | None:
        """The Settings the gateway sent on the connection of ``fuzz_id`` (None before it arrived)."""
        return self._scripts[fuzz_id].settings

    def received(self, fuzz_id: int) -> list[str | bytes]:
        """Every frame the gateway sent on the connection of ``fuzz_id`` after its Settings, in order."""
        return list(self._scripts[fuzz_id].received)  # a copy: the provider's thread appends to it

    def sent(self, fuzz_id: int) -> list[str]:
        """Every text frame the simulated agent sent on the recorded connection of ``fuzz_id``."""
        return list(self._scripts[fuzz_id].sent)

    def finish(self, fuzz_id: int) -> None:
        """Let the connection of ``fuzz_id`` end as its script says."""
        self._loop.call_soon_threadsafe(self._scripts[fuzz_id].finish.set)

    def responses(self, fuzz_id: int) -> list[dict[str, Any]]:
        """The FunctionCallResponse messages the gateway sent on the connection of ``fuzz_id``, in order."""
        return function_responses(self.received(fuzz_id))

    def answer_counts(self, fuzz_id: int) -> Counter[str]:
        """How many FunctionCallResponse messages the gateway sent, by call id."""
        return Counter(message["id"] for message in self.responses(fuzz_id))

    # --- the provider's side --------------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        try:
            await ws.send(WELCOME)
            settings = await ws.recv()
            self.first_frames.append(settings)
            fuzz_id = _fuzz_id(settings)
            script = self._scripts.get(fuzz_id) if fuzz_id is not None else None
            if script is None:
                await self._simulated(ws, settings)
                return
            script.settings = settings
            if script.ending == SIMULATED:
                await self._simulated(ws, settings, script)
            else:
                await self._play(ws, script)
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

    async def _simulated(self, ws: ServerConnection, settings: str | bytes, script: Script | None = None) -> None:
        """The simulated agent; with a ``script``, every frame is recorded before the agent answers it, so a test
        that got the answer knows the frame is in ``script.received``."""
        agent = SimulatedAgent()
        frame = settings
        while True:
            for reply in agent.receive(frame):
                if script is not None and isinstance(reply, str):
                    script.sent.append(reply)
                await ws.send(reply)
            frame = await ws.recv()
            if script is not None:
                script.received.append(frame)


def _fuzz_id(settings: str | bytes) -> int | None:
    """The ``fuzz_id`` of a first frame, or None: the first frame may be anything the gateway let through."""
    try:
        data = json.loads(settings) if isinstance(settings, str) else None
    except (ValueError, RecursionError):
        return None
    fuzz_id = data.get("fuzz_id") if isinstance(data, dict) else None
    return fuzz_id if isinstance(fuzz_id, int) else None


def function_responses(frames: list[str | bytes]) -> list[dict[str, Any]]:
    """The FunctionCallResponse messages among ``frames``, parsed, in order."""
    found = []
    for frame in frames:
        if isinstance(frame, str) and '"FunctionCallResponse"' in frame:
            with contextlib.suppress(ValueError, RecursionError):
                message = json.loads(frame)
                if isinstance(message, dict) and message.get("type") == "FunctionCallResponse":
                    found.append(message)
    return found


def check_settings(settings: str | bytes | None, definitions: dict[str, dict[str, Any]]) -> None:
    """The Settings that reached the provider define every backend function as its worker does."""
    assert isinstance(settings, str), f"the provider got no text Settings: {settings!r}"
    message = json.loads(settings)
    assert message["type"] == "Settings", message
    agent = message.get("agent") or {}
    if isinstance(agent, str):
        return  # a stored agent configuration's id: relayed as it is, nothing could be merged into it
    think = agent.get("think")
    for entry in think if isinstance(think, list) else [think]:  # fallback providers: each one merged
        functions = {f["name"]: f for f in (entry or {}).get("functions") or []}
        for name, definition in definitions.items():
            assert name in functions, f"{name} missing from the Settings the provider got: {sorted(functions)}"
            got = {k: functions[name].get(k) for k in definition}
            assert got == definition, f"the provider got {name} defined as {got}, its worker says {definition}"
