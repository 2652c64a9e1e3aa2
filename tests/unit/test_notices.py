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
from tests.support.fakes import CALL_REQUEST, FakeCatalog, FakeDispatcher, FakeProvider


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

    class Client(StalledClient):
        """Sends Settings, then nothing; accepts no message (every send waits)."""

        def __init__(self) -> None:
            super().__init__()
            self.waiting: list[str] = []

        async def __aiter__(self) -> Any:
            yield json.dumps({"type": "Settings", "agent": {}})
            await asyncio.Event().wait()

        async def send(self, text: str) -> None:
            if '"Conversation"' in text:
                return  # the session's first message goes out on an idle connection: only later ones stall
            self.waiting.append(text)
            await super().send(text)

        async def close(self, code: int = 1000, reason: str = "") -> None:
            pass

    # Asks for one backend call, then stays quiet.
    provider, client = FakeProvider(CALL_REQUEST), Client()

    async def open_provider() -> FakeProvider:
        return provider

    session = Session(client, open_provider, FakeDispatcher(), FakeCatalog(), Config())  # type: ignore[arg-type]
    running = asyncio.create_task(session.run())
    for _ in range(100):
        if len(provider.frames) == 2:
            break
        await asyncio.sleep(0.01)
    assert [json.loads(f)["type"] for f in provider.frames[1:]] == ["FunctionCallResponse"]  # after Settings
    # started, finished: still waiting for the client (one in the send the client does not complete)
    assert client.sent == [] and len(client.waiting) + session.notices.pending == 2
    running.cancel()
    await asyncio.gather(running, return_exceptions=True)
