"""Messages a client may miss, sent so that a client reading slowly never holds up a function call.

A backend call tells the client about itself (``BackendFunctionCall`` notices, a ``Warning`` when it is
refused). Sending straight from the call would make the call wait whenever the client's connection is
congested (``websockets`` waits for the socket buffer to drain), and its answer to the provider with it: under
load the benchmark saw calls held for seconds behind their notices. So calls hand their messages to a
:class:`ClientNotices` queue and move on; one task per session sends them in order. When the client falls
further behind than ``limit`` messages, newer ones are dropped and counted: they describe calls, they are not
the conversation.
"""

from __future__ import annotations

import asyncio
import collections
import logging

from websockets.asyncio.connection import Connection
from websockets.exceptions import ConnectionClosed

from gateway import metrics

log = logging.getLogger(__name__)

LIMIT = 256
"""Messages that may wait for a slow client before newer ones are dropped."""


class ClientNotices:
    def __init__(self, client: Connection, session_id: str, limit: int = LIMIT) -> None:
        self.client = client
        self.session_id = session_id
        self.limit = limit
        self.dropped = 0
        self._queue: collections.deque[str] = collections.deque()
        self._ready = asyncio.Event()

    def put(self, text: str) -> None:
        """Queue ``text`` for the client; never waits."""
        if len(self._queue) >= self.limit:
            if self.dropped == 0:
                log.info("session %s: the client reads too slowly; dropping call notices", self.session_id)
            self.dropped += 1
            metrics.dropped_notices.inc()
            return
        self._queue.append(text)
        self._ready.set()

    async def run(self) -> None:
        """Send queued messages in order until the client goes away."""
        try:
            while True:
                await self._ready.wait()
                self._ready.clear()
                while self._queue:
                    await self.client.send(self._queue.popleft())
        except ConnectionClosed:
            return

    @property
    def pending(self) -> int:
        return len(self._queue)
