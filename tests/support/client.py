"""A test client speaking the component protocol over a real WebSocket, recording every frame both ways."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from websockets.asyncio.client import ClientConnection, connect

from gateway.client import SETTINGS


class AgentClient:
    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.sent: list[str | bytes] = []
        self.received: list[str | bytes] = []

    @classmethod
    async def connect(cls, url: str, **kwargs: Any) -> AgentClient:
        return cls(await connect(url, **kwargs))

    async def send(self, frame: str | bytes | dict[str, Any]) -> None:
        if isinstance(frame, dict):
            frame = json.dumps(frame)
        self.sent.append(frame)
        await self.ws.send(frame)

    async def start(self, functions: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """Send Settings (with optional client functions) and wait for SettingsApplied."""
        settings = json.loads(json.dumps(SETTINGS))
        if functions is not None:
            settings["agent"]["think"]["functions"] = functions
        await self.send(settings)
        return await self.expect("SettingsApplied")

    async def say(self, text: str) -> None:
        await self.send({"type": "InjectUserMessage", "content": text})

    async def next(self, timeout: float = 10) -> str | bytes:
        frame = await asyncio.wait_for(self.ws.recv(), timeout)
        self.received.append(frame)
        return frame

    async def expect(self, *types: str, timeout: float = 10, **fields: Any) -> dict[str, Any]:
        """Read frames until a text message of one of ``types`` (matching ``fields``) arrives; return it."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            frame = await self.next(max(0.01, deadline - loop.time()))
            if isinstance(frame, bytes):
                continue
            message = json.loads(frame)
            if message.get("type") in types and all(message.get(k) == v for k, v in fields.items()):
                return message

    async def assistant_text(self, timeout: float = 10) -> str:
        return str((await self.expect("ConversationText", role="assistant", timeout=timeout))["content"])

    async def stats(self) -> dict[str, Any]:
        """Ask the simulated agent what reached it."""
        await self.send({"type": "SimulatedAgentStats"})
        return await self.expect("SimulatedAgentStats")

    def messages(self) -> list[dict[str, Any]]:
        return [json.loads(f) for f in self.received if isinstance(f, str)]

    def sent_types(self) -> list[str]:
        return [json.loads(f).get("type") for f in self.sent if isinstance(f, str) and f.startswith("{")]

    async def close(self) -> None:
        await self.ws.close()

    async def drop(self) -> None:
        """Lose the connection without a close frame (the network goes): the gateway sees 1006 and parks the
        session, where a normal close (1000) would end it."""
        self.ws.transport.abort()
        await self.ws.wait_closed()
