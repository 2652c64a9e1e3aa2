"""Call notices never hold up a call for a slow client: queued, sent in order by a task, dropped past a limit."""

from __future__ import annotations

import asyncio
import json
import logging
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosedOK

from gateway.notices import ClientNotices
from gateway.session import Session
from shared.config import Config
from shared.envelopes import FunctionSpec, Result
from shared.protocol import FunctionCall


class StalledClient:
    """A client connection whose sends wait until ``unblock`` is set, like a congested socket."""

    def __init__(self) -> None:
        self.sent: list[str] = []
        self.unblock = asyncio.Event()

    async def send(self, text: str) -> None:
        await self.unblock.wait()
        self.sent.append(text)


async def test_put_never_waits_and_messages_go_out_in_order() -> None:
    client = StalledClient()
    notices = ClientNotices(client, "s1")  # type: ignore[arg-type]
    sender = asyncio.create_task(notices.run())
    for i in range(5):
        notices.put(f"m{i}")  # returns at once although the client takes nothing
    await asyncio.sleep(0.01)
    assert client.sent == [] and notices.pending == 4  # one is being sent
    client.unblock.set()
    await asyncio.sleep(0.01)
    assert client.sent == [f"m{i}" for i in range(5)] and notices.pending == 0
    sender.cancel()


async def test_past_the_limit_newer_messages_are_dropped_and_counted(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="gateway.notices")
    notices = ClientNotices(StalledClient(), "s2", limit=3)  # type: ignore[arg-type]
    for i in range(10):
        notices.put(f"m{i}")
    assert notices.pending == 3 and notices.dropped == 7
    assert sum("dropping call notices" in r.message for r in caplog.records) == 1


async def test_the_sender_stops_when_the_client_is_gone() -> None:
    class Gone:
        async def send(self, text: str) -> None:
            raise ConnectionClosedOK(None, None)

    notices = ClientNotices(Gone(), "s3")  # type: ignore[arg-type]
    sender = asyncio.create_task(notices.run())
    notices.put("m")
    await asyncio.wait_for(sender, 1)


async def test_a_call_is_answered_while_its_client_is_congested() -> None:
    """The provider gets its FunctionCallResponse although the client accepts none of the call's notices."""

    class Upstream:
        def __init__(self) -> None:
            self.frames: list[Any] = []

        async def send(self, frame: Any) -> None:
            self.frames.append(frame)

    class Dispatcher:
        async def call(self, *args: Any) -> Result:
            return Result(call_id="c1", ok=True, content='{"ok": true}', worker_id="w1")

    spec = FunctionSpec(name="f", description="f", parameters={"type": "object"})
    client = StalledClient()
    session = Session(client, None, Dispatcher(), None, Config())  # type: ignore[arg-type]
    session.upstream = upstream = Upstream()  # type: ignore[assignment]
    session.owned = {"f": spec}
    call = FunctionCall(id="c1", name="f", arguments="{}")
    session.calls["c1"] = asyncio.current_task()  # type: ignore[assignment]
    await asyncio.wait_for(session._run_call(call), 1)
    assert [json.loads(f)["type"] for f in upstream.frames] == ["FunctionCallResponse"]
    assert client.sent == [] and session.notices.pending == 2  # started, finished: still waiting for the client
