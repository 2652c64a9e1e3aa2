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

from gateway import actions, metrics
from gateway.actions import FORWARD, Frame
from gateway.catalog import Catalog
from gateway.conversation import Conversation
from gateway.dispatcher import Dispatcher
from gateway.memory import MemoryStore, SessionMemory, session_memory
from gateway.notices import ClientNotices
from gateway.providers import Provider, ProviderClosed, ProviderUnavailable
from gateway.resume import Connection, Parking, Resumable
from shared.config import Config
from shared.envelopes import CallResult, FunctionSpec
from shared.logs import log_context
from shared.redis_errors import REDIS_ERRORS
from shared.tracing import span

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
        conversation_id: str = "",
        resumable: Resumable | None = None,
        memory: MemoryStore | None = None,
        traceparent: str = "",
    ) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.traceparent = traceparent
        """The client's W3C trace context (validated), or the session span's once it runs; each call's job
        carries it (or its call span's), so workers' logs join the client's trace."""
        self._provider_name = config.resolved_provider()
        self.conversation = Conversation(config, catalog.ever_owned, time.monotonic(), self.id)
        self.principal = principal
        """The caller the handshake verified (``""`` without credentials configured); every call carries it."""
        self.conversation_id = conversation_id or self.id
        self.parking = Parking(client, self.conversation_id, self.id, resumable or Resumable(0))
        self.client = self.parking.link
        """Where frames for the client go: its WebSocket, or the kept messages while it is away."""
        self.notices = ClientNotices(self.client, self.id)  # type: ignore[arg-type]  # sends as a connection does
        self.provider: Provider | None = None
        self._open_provider = open_provider
        self.dispatcher = dispatcher
        self.calls_running = 0
        """Backend calls whose answer has not been sent yet (a drain waits for them)."""
        self.calls: dict[str, asyncio.Task[None]] = {}
        """Backend calls awaiting their result, by provider call id."""
        self._catalog, self._catalog_wait = catalog, config.catalog_wait
        self._keepalive_period = min(1.0, config.keepalive_interval / 2)
        self._woken: set[asyncio.Task[None]] = set()
        """Wakes asked for by the conversation (``actions.Wake``), until they are done: cancelled when the session
        ends."""
        self._store = memory
        self.memory: SessionMemory | None = None

    # --- lifecycle ----------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Relay the conversation until either side ends it; its log lines carry the session id."""
        metrics.sessions.labels(self._provider_name).inc()
        try:
            with (
                span("session", self.traceparent, session_id=self.id) as self.traceparent,
                log_context(session_id=self.id, traceparent=self.traceparent),
            ):
                await self._run()
        finally:
            metrics.sessions.labels(self._provider_name).dec()

    async def _run(self) -> None:
        log.info("session %s: client connected (conversation %s)", self.id, self.conversation_id)
        await self.parking.greet()
        if self._store is not None:
            self.memory = session_memory(self._store, self.conversation_id, self.id, self.principal)
        try:
            self.provider = await self._open_provider()
        except ProviderUnavailable as exc:
            metrics.upstream_connect_failures.labels(self._provider_name).inc()
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
            await self.parking.end()
            for task in loops:
                task.cancel()
            await asyncio.gather(*loops, return_exceptions=True)
            for woken in self._woken:
                woken.cancel()
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
        """Relay the client's frames; when it drops, park (``gateway/resume.py``) until one reconnects."""
        ws: Connection | None = self.client.ws
        while ws is not None:
            with contextlib.suppress(ConnectionClosed):
                await self._relay_client(ws)
            if self.conversation.closed or not self.conversation.settings_applied:
                return
            ws = await self.parking.next_client(ws)

    async def _relay_client(self, ws: Connection) -> None:
        assert self.provider is not None
        to_provider, conversation, clock = self._send_provider, self.conversation, time.monotonic
        async for frame in ws:
            if not conversation.settings_applied and isinstance(frame, str):
                self.parking.settings = frame  # what a resuming client's Settings are compared with
            todo = conversation.client_frame(frame, clock())
            if todo is FORWARD:
                await self.provider.send(frame)
                continue
            await self._perform(todo, frame, to_provider)
            if conversation.closed:
                return

    async def attach(self, ws: Connection) -> bool:
        """A client reconnected to this conversation (``Parking.attach``); False when the session is ending."""
        return await self.parking.attach(ws)

    async def _provider_to_client(self) -> None:
        assert self.provider is not None
        recv, to_client, conversation, clock = self.provider.recv, self.client.send, self.conversation, time.monotonic
        # to_client is the link's send: it follows the client across re-attaches.
        while True:
            frame = await recv()
            todo = conversation.provider_frame(frame, clock)
            if todo is FORWARD:
                await to_client(frame)
            else:
                await self._perform(todo, frame, to_client)

    async def _tick_after(self, after: float) -> None:
        """A ``Wake``: tick the conversation ``after`` seconds from now, not at the keepalive loop's next turn."""
        await asyncio.sleep(after)
        if self.conversation.closed:
            return
        # A closed connection is the loops' to notice (they end the session); this task just stops.
        with contextlib.suppress(ProviderClosed, ConnectionClosed):
            await self._perform(self.conversation.tick(time.monotonic()))

    def _progress(self, call_id: str, message: str) -> None:
        """A worker's progress report on one of this session's calls: queued for the client at once."""
        for action in self.conversation.call_progress(call_id, message):
            if isinstance(action, actions.Notify):
                self.notices.put(action.frame)

    async def _keepalive(self) -> None:
        while True:
            await asyncio.sleep(self._keepalive_period)
            await self._perform(self.conversation.tick(time.monotonic(), parked=self.client.ws is None))

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
                case actions.SayFiller(text=text):
                    assert self.provider is not None
                    await self.provider.say_filler(text)
                case actions.Wake(after=after):
                    woken = asyncio.create_task(self._tick_after(after), name=f"{self.id}-wake")
                    self._woken.add(woken)
                    woken.add_done_callback(self._woken.discard)
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
        self.calls_running += 1
        with (
            span("call", self.traceparent, function=call.name, call_id=call.id) as trace,
            log_context(call_id=call.id, function=call.name, traceparent=trace),
        ):
            try:
                await self._call(start, trace, started)
            finally:
                self.calls_running -= 1

    async def _call(self, start: actions.StartCall, trace: str, started: float) -> None:
        call = start.call
        try:
            result = await self.dispatcher.call(
                start.key,
                call.name,
                call.arguments,
                start.spec,
                self.id,
                self.principal,
                on_progress=lambda message: self._progress(call.id, message),
                traceparent=trace,
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
            extra={"duration_ms": round(elapsed, 2), "worker_id": result.worker_id},
        )  # fmt: skip

    async def _cancel_calls(self, call_ids: Iterable[str]) -> None:
        tasks = [task for call_id in call_ids if (task := self.calls.pop(call_id, None)) is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
            log.info("session %s: cancelled %d backend call(s)", self.id, len(tasks))
