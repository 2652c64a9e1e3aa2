"""One client conversation's I/O: the loops that feed a :class:`~gateway.conversation.Conversation` and perform
what it returns.

Every rule (what is intercepted, refused, merged, answered) lives in the conversation core; this module only
reads frames, sends frames, awaits the catalog, runs backend calls as tasks and keeps time. A session runs one
loop per direction, so each direction keeps its order, a keepalive ticker and the notices sender
(``gateway/notices.py``, so a slow client never delays a call's answer).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from gateway import actions
from gateway.actions import FORWARD, Frame
from gateway.catalog import Catalog
from gateway.conversation import Conversation
from gateway.dispatcher import Dispatcher
from gateway.memory import MemoryStore, SessionMemory, provisional_conversation_id, session_memory
from gateway.notices import ClientNotices
from gateway.providers import Provider, ProviderClosed, ProviderUnavailable
from shared.config import Config
from shared.envelopes import CallResult, FunctionSpec
from shared.redis_errors import REDIS_ERRORS

log = logging.getLogger(__name__)

Send = Callable[[Frame], Awaitable[None]]


class Session:
    def __init__(
        self,
        client: ServerConnection,
        open_provider: Callable[[], Awaitable[Provider]],
        dispatcher: Dispatcher,
        catalog: Catalog,
        config: Config,
        principal: str = "",
        memory: MemoryStore | None = None,
    ) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.conversation = Conversation(config, catalog.ever_owned, time.monotonic(), self.id)
        self.principal = principal
        """The caller the handshake verified (``""`` without credentials configured); every call carries it."""
        self.client = client
        self.notices = ClientNotices(client, self.id)
        self.provider: Provider | None = None
        self._open_provider = open_provider
        self.dispatcher = dispatcher
        self.calls: dict[str, asyncio.Task[None]] = {}
        """Backend calls awaiting their result, by provider call id."""
        self._catalog, self._catalog_wait = catalog, config.catalog_wait
        self._keepalive_period = min(1.0, config.keepalive_interval / 2)
        self._store = memory
        self.memory: SessionMemory | None = None

    # --- lifecycle ----------------------------------------------------------------------------------------

    async def run(self) -> None:
        log.info("session %s: client connected", self.id)
        if self._store is not None:
            # The handshake names the conversation (issue 17 items 1-2); until it does, the query's id stands in.
            conversation_id = getattr(self, "conversation_id", "") or provisional_conversation_id(self.client)
            self.memory = session_memory(self._store, conversation_id, self.id)
        try:
            self.provider = await self._open_provider()
        except ProviderUnavailable as exc:
            await self._perform(self.conversation.provider_unavailable(str(exc)))
            return
        self.conversation.provider_opened(self.provider.settings_problem)
        loops = [
            asyncio.create_task(self._client_to_provider(), name=f"{self.id}-client"),
            asyncio.create_task(self._provider_to_client(), name=f"{self.id}-provider"),
            asyncio.create_task(self._keepalive(), name=f"{self.id}-keepalive"),
            asyncio.create_task(self.notices.run(), name=f"{self.id}-notices"),
        ]
        try:
            done, _ = await asyncio.wait(loops, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                await self._after_loop(task)
        finally:
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            await self._cancel_calls(list(self.calls))
            if self.memory is not None:
                await self.memory.close()
            await self.provider.close()
            await self.client.close()
            dropped = f" ({self.notices.dropped} call notices dropped)" if self.notices.dropped else ""
            log.info("session %s: closed%s", self.id, dropped)

    async def _after_loop(self, task: asyncio.Task[None]) -> None:
        """Tell the client why the session ends, when the reason is not its own disconnect."""
        exc = task.exception()
        if exc is None or isinstance(exc, ConnectionClosed):
            return
        if isinstance(exc, ProviderClosed):
            log.info("session %s: provider closed (%s %s)", self.id, exc.code, exc.reason)
            await self._perform(self.conversation.provider_closed(exc.code, exc.reason))
            return
        log.error("session %s: internal error", self.id, exc_info=exc)
        await self._perform(self.conversation.failed())

    # --- the loops ----------------------------------------------------------------------------------------

    async def _client_to_provider(self) -> None:
        assert self.provider is not None
        to_provider, conversation, clock = self._send_provider, self.conversation, time.monotonic
        async for frame in self.client:
            todo = conversation.client_frame(frame, clock())
            if todo is FORWARD:
                await self.provider.send(frame)
                continue
            await self._perform(todo, frame, to_provider)
            if conversation.closed:
                return

    async def _provider_to_client(self) -> None:
        assert self.provider is not None
        recv, to_client, conversation, clock = self.provider.recv, self.client.send, self.conversation, time.monotonic
        while True:
            frame = await recv()
            todo = conversation.provider_frame(frame, clock)
            if todo is FORWARD:
                await to_client(frame)
            else:
                await self._perform(todo, frame, to_client)

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self._keepalive_period)
            await self._perform(self.conversation.tick(time.monotonic()))

    # --- performing actions -------------------------------------------------------------------------------

    async def _perform(self, todo: actions.Actions, frame: Frame = b"", forward: Send | None = None) -> None:
        """Do what the conversation asked, in order. ``forward`` sends the event's ``frame`` on as received."""
        for action in todo:
            match action:
                case actions.Forward():
                    assert forward is not None
                    await forward(frame)
                case actions.ToClient(frame=out):
                    await self.client.send(out)
                case actions.Notify(frame=out):
                    self.notices.put(out)
                case actions.ToProvider(frame=out):
                    await self._send_provider(out)
                case actions.Answer(frame=out):
                    with contextlib.suppress(ProviderClosed):  # the provider is gone: nobody waits for it
                        await self._send_provider(out)
                case actions.StartCall():
                    self.calls[action.call.id] = asyncio.create_task(
                        self._run_call(action), name=f"{self.id}-call-{action.call.id}"
                    )
                case actions.CancelCalls(ids=ids):
                    await self._cancel_calls(ids)
                case actions.ReadCatalog():
                    if self.memory is not None:  # read with the catalog: Settings carry the conversation so far
                        owned, history = await asyncio.gather(self._read_catalog(), self.memory.history())
                        self.conversation.remember(history)
                    else:
                        owned = await self._read_catalog()
                    await self._perform(self.conversation.catalog_read(owned, time.monotonic()))
                case actions.Remember(entry=entry):
                    if self.memory is not None:
                        self.memory.record(entry)
                case actions.UseFunctions(owned=owned):
                    assert self.provider is not None
                    self.provider.use_functions(owned)
                case actions.Close():
                    with contextlib.suppress(ConnectionClosed):  # the client may already be gone
                        if action.error is not None:
                            await self.client.send(action.error)
                        await self.client.close(action.code, action.reason)

    async def _send_provider(self, frame: Frame) -> None:
        assert self.provider is not None
        await self.provider.send(frame)

    async def _read_catalog(self) -> Mapping[str, FunctionSpec] | None:
        """This session's backend functions; None when Redis cannot tell (the conversation warns the client)."""
        try:
            return await self._catalog.session_functions(self._catalog_wait)
        except REDIS_ERRORS:
            return None

    async def _run_call(self, start: actions.StartCall) -> None:
        """Get the call's result and hand it to the conversation, which answers the provider once.

        Only the enqueue and the answer are on the caller's critical path: notices are queued for the client,
        the log line follows the answer.
        """
        call, started = start.call, time.monotonic()
        try:
            result = await self.dispatcher.call(
                start.key, call.name, call.arguments, start.spec, self.id, self.principal
            )
        except Exception:
            # A bug must not hang the conversation: the provider still gets an answer.
            log.exception("session %s: call %s failed inside the gateway", self.id, call.id)
            result = CallResult.failure(call.id, f"{call.name} failed: internal gateway error.")
        self.calls.pop(call.id, None)
        elapsed = (time.monotonic() - started) * 1000
        await self._perform(self.conversation.call_finished(call.id, result, time.monotonic()))
        log.info(
            "session %s: call %s %s %s in %.1f ms on %s",
            self.id, call.id, call.name, "ok" if result.ok else "error", elapsed, result.worker_id or "-",
        )  # fmt: skip

    async def _cancel_calls(self, call_ids: Iterable[str]) -> None:
        tasks = [task for call_id in call_ids if (task := self.calls.pop(call_id, None)) is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
            log.info("session %s: cancelled %d backend call(s)", self.id, len(tasks))
