"""Stand-ins for a session's collaborators, for unit tests of ``gateway.session`` without sockets or Redis: a
provider that plays a script and records what it is sent, a dispatcher that answers every call, a catalog of one
backend function ``f``."""

from __future__ import annotations

import asyncio
from typing import Any

from shared.envelopes import CallResult, FunctionSpec

CALL_REQUEST = '{"type":"FunctionCallRequest","functions":[{"id":"c1","name":"f","arguments":"{}"}]}'
"""The provider asking for one call of the catalog's function ``f``."""


class FakeProvider:
    """Sends what is put on :attr:`out`, records what it is sent (:attr:`frames`); never closes by itself."""

    def __init__(self, *script: str) -> None:
        self.frames: list[Any] = []
        self.out: asyncio.Queue[str] = asyncio.Queue()
        for frame in script:
            self.out.put_nowait(frame)

    async def send(self, frame: Any) -> None:
        self.frames.append(frame)

    async def recv(self) -> Any:
        return await self.out.get()

    def settings_problem(self, settings: Any) -> None:
        return None

    def use_functions(self, owned: Any) -> None:
        pass

    async def say_filler(self, text: str) -> None:
        pass

    async def close(self) -> None:
        pass


class FakeDispatcher:
    """Answers every call with ``{"ok": true}`` once :attr:`release` is set (set from the start unless ``held``)."""

    def __init__(self, held: bool = False) -> None:
        self.release = asyncio.Event()
        if not held:
            self.release.set()

    async def call(self, call_id: str, *args: Any, **options: Any) -> CallResult:
        await self.release.wait()
        return CallResult(call_id=call_id, ok=True, content='{"ok": true}', worker_id="w1")


class FakeCatalog:
    """The backend owns one function, ``f``."""

    ever_owned: dict[str, FunctionSpec] = {}

    async def session_functions(self, wait: float) -> dict[str, FunctionSpec]:
        return {"f": FunctionSpec(name="f", description="f", parameters={"type": "object"})}
