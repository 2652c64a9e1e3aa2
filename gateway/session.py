"""One client conversation: relay both ways, run backend-owned function calls on the workers.

A session owns two loops, one per direction, so each direction keeps its order, plus a keepalive loop.
Frames are relayed as received; the gateway parses text frames only to find the few types it acts on:

client → provider: ``Settings`` (must come first; backend functions merged in), ``UpdateThink`` (merged
the same way), ``FunctionCallResponse`` for a backend call (dropped with a Warning), ``FunctionCallRequest``
(only a provider may send it: refused).

provider → client: ``FunctionCallRequest`` (backend-owned calls go to the workers; malformed elements are
answered with an error; the rest to the client), ``FunctionCallCancelled`` (cancels backend calls; the client
sees only its own), ``History`` (the backend's calls removed unless HISTORY_BACKEND_CALLS=shown).

Every backend call gets exactly one ``FunctionCallResponse`` upstream, result or error, unless the provider
cancelled it: the dispatcher always returns a result by the call's deadline, and a call is answered only if
it is still in ``self.calls`` when its result arrives.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections import ChainMap
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from gateway.catalog import Catalog
from gateway.dispatcher import REDIS_ERRORS, Dispatcher
from gateway.intercept import (
    MalformedCall,
    filter_cancelled,
    filter_history,
    malformed_response_frame,
    merge_functions,
    merge_update_think,
    response_frame,
    split_request,
)
from gateway.limits import TokenBucket, frame_size, functions_problem
from gateway.notices import ClientNotices
from gateway.providers import Provider, ProviderClosed, ProviderUnavailable
from shared.config import Config
from shared.envelopes import FunctionSpec, Result
from shared.protocol import (
    BackendFunctionCall,
    Error,
    ErrorCode,
    FunctionCall,
    FunctionCallCancelled,
    FunctionCallResponse,
    ProtocolError,
    Settings,
    UpdateThink,
    Warning,
    dump,
    parse_json_object,
    validate,
)

log = logging.getLogger(__name__)

KEEPALIVE = '{"type":"KeepAlive"}'
CLOSE_POLICY = 1008
CLOSE_INTERNAL = 1011


class Session:
    def __init__(
        self,
        client: ServerConnection,
        open_upstream: Callable[[], Awaitable[Provider]],
        dispatcher: Dispatcher,
        catalog: Catalog,
        config: Config,
        principal: str = "",
    ) -> None:
        self.id = uuid.uuid4().hex[:12]
        self.principal = principal
        """The caller the handshake verified (``""`` without credentials configured); every call carries it."""
        self.client = client
        self._open_upstream = open_upstream
        self.dispatcher = dispatcher
        self.catalog = catalog
        self.config = config
        self.upstream: Provider | None = None
        self.settings_applied = False
        self.owned: dict[str, FunctionSpec] = {}
        """Backend functions as of this session's Settings: what the provider was told exists."""
        self.calls: dict[str, asyncio.Task[None]] = {}
        """Backend calls awaiting their answer, by call id."""
        self.backend_ids: set[str] = set()
        """Every call id the backend has taken, answered or not: the client may answer none of them."""
        self._last_upstream_send = time.monotonic()
        self._rate = TokenBucket(config.client_message_rate, 2 * config.client_message_rate)
        # The burst also fits the largest frame the port accepts, or such a frame could never pass.
        self._bytes = TokenBucket(config.client_byte_rate, max(2 * config.client_byte_rate, config.max_frame_bytes))
        self._last_error: dict[str, float] = {}
        """When each throttled Error code was last sent (see ``_throttled_error``)."""
        self.notices = ClientNotices(client, self.id)
        self._hide_history = config.history_backend_calls == "hidden"

    # --- lifecycle ----------------------------------------------------------------------------------------

    async def run(self) -> None:
        log.info("session %s: client connected", self.id)
        try:
            self.upstream = await self._open_upstream()
        except ProviderUnavailable as exc:
            await self._fatal(ErrorCode.UPSTREAM_UNAVAILABLE, str(exc), CLOSE_INTERNAL)
            return
        loops = [
            asyncio.create_task(self._client_to_upstream(), name=f"{self.id}-client"),
            asyncio.create_task(self._upstream_to_client(), name=f"{self.id}-upstream"),
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
            await self.upstream.close()
            await self.client.close()
            dropped = f" ({self.notices.dropped} call notices dropped)" if self.notices.dropped else ""
            log.info("session %s: closed%s", self.id, dropped)

    async def _after_loop(self, task: asyncio.Task[None]) -> None:
        """Tell the client why the session ends, when the reason is not its own disconnect."""
        exc = task.exception()
        if exc is None or isinstance(exc, ConnectionClosed):
            return
        if isinstance(exc, ProviderClosed):
            log.info("session %s: upstream closed (%s %s)", self.id, exc.code, exc.reason)
            if exc.code in (1000, 1001):
                await self.client.close(exc.code, exc.reason[:120])
            else:
                description = f"The provider closed the connection (code {exc.code}: {exc.reason or 'no reason'})."
                await self._fatal(ErrorCode.UPSTREAM_CLOSED, description, CLOSE_INTERNAL)
            return
        log.error("session %s: internal error", self.id, exc_info=exc)
        await self._fatal(ErrorCode.INTERNAL_ERROR, "The gateway failed; the session ends.", CLOSE_INTERNAL)

    # --- client → provider --------------------------------------------------------------------------------

    async def _client_to_upstream(self) -> None:
        async for frame in self.client:
            size = frame_size(frame)
            if not (self._rate.allow() and self._bytes.allow(size)):
                await self._rate_limited()
                continue
            if self.settings_applied and isinstance(frame, str) and size > self.config.max_text_frame_bytes:
                # Dropped before parsing: big JSON parsed on the shared loop delays every session's frames.
                await self._throttled_error(
                    ErrorCode.MESSAGE_TOO_LARGE,
                    f"Text frames after Settings may be at most {self.config.max_text_frame_bytes} bytes; "
                    "larger ones were dropped.",
                )
                continue
            if isinstance(frame, bytes):
                if not self.settings_applied:
                    return await self._not_settings_first()
                await self._send_upstream(frame)
                continue
            try:
                data = parse_json_object(frame)
            except ProtocolError as exc:
                if not self.settings_applied:
                    return await self._not_settings_first()
                await self._send_client(Error(code=exc.code, description=exc.description))
                continue
            kind = data["type"]
            if not self.settings_applied:
                if kind != "Settings":
                    return await self._not_settings_first()
                if not await self._apply_settings(frame, data):
                    return
            elif kind == "Settings":
                await self._send_client(
                    Error(code=ErrorCode.SETTINGS_ALREADY_APPLIED, description="Settings were already applied.")
                )
            elif kind == "FunctionCallResponse":
                await self._on_client_function_response(frame, data)
            elif kind == "UpdateThink":
                await self._on_update_think(frame, data)
            elif kind == "FunctionCallRequest":
                await self._send_client(
                    Warning(
                        code=ErrorCode.FUNCTION_REQUEST_REFUSED,
                        description="Only the provider may send FunctionCallRequest; the message was dropped.",
                    )
                )
            else:
                await self._send_upstream(frame)

    async def _on_client_function_response(self, frame: str, data: dict[str, Any]) -> None:
        """Relay the client's answer to its own call; drop one for a backend call (the client may not choose
        what a backend function returns)."""
        try:
            response: FunctionCallResponse = validate(FunctionCallResponse, data)
        except ProtocolError as exc:
            await self._send_client(Error(code=exc.code, description=exc.description))
            return
        if response.id in self.backend_ids or response.name in self.backend_functions:
            await self._send_client(
                Warning(
                    code=ErrorCode.FUNCTION_RESPONSE_REFUSED,
                    description=f"Function {response.name!r} runs on the backend; the client's answer was dropped.",
                )
            )
            return
        await self._send_upstream(frame)

    async def _on_update_think(self, frame: str, data: dict[str, Any]) -> None:
        """Merge the backend functions into an UpdateThink as into Settings: it replaces the provider's whole
        think configuration, so relayed as is it could redefine a backend function (an ``endpoint`` of the
        client's own) or drop it. Every name the backend owns is merged, not only those of Settings."""
        try:
            message: UpdateThink = validate(UpdateThink, data)
        except ProtocolError as exc:
            await self._send_client(Error(code=exc.code, description=exc.description))
            return
        problem = functions_problem(message.think.functions, self.config.max_settings_functions)
        if problem is not None:
            await self._send_client(
                Error(code=ErrorCode.INVALID_MESSAGE, description=f"Invalid UpdateThink: {problem}")
            )
            return
        backend = self.backend_functions
        await self._send_upstream(dump(merge_update_think(message, backend)) if backend else frame)

    async def _apply_settings(self, frame: str, data: dict[str, Any]) -> bool:
        try:
            settings: Settings = validate(Settings, data)
        except ProtocolError as exc:
            await self._fatal(ErrorCode.INVALID_SETTINGS, exc.description, CLOSE_POLICY)
            return False
        # Before anything goes upstream or any audio is relayed: a format the upstream cannot honour would be
        # garbled, and too many functions cost every later call.
        assert self.upstream is not None  # opened before any client frame is read
        problem = self.upstream.audio_problem(settings.audio)
        problem = problem or functions_problem(settings.functions, self.config.max_settings_functions)
        if problem is not None:
            await self._fatal(ErrorCode.INVALID_SETTINGS, f"Invalid Settings: {problem}", CLOSE_POLICY)
            return False
        try:
            self.owned = await self.catalog.session_functions(self.config.catalog_wait)
        except REDIS_ERRORS:
            log.warning("session %s: backend catalog unreadable (Redis down?)", self.id)
            await self._send_client(
                Warning(code=ErrorCode.BACKEND_UNAVAILABLE, description="Backend functions are unavailable right now.")
            )
        self.upstream.use_functions(self.owned)  # type: ignore[union-attr]  # opened before any client frame
        self.settings_applied = True
        await self._send_upstream(dump(merge_functions(settings, self.owned)) if self.owned else frame)
        log.info("session %s: settings sent upstream with %d backend functions", self.id, len(self.owned))
        return True

    async def _rate_limited(self) -> None:
        await self._throttled_error(ErrorCode.RATE_LIMITED, "Too many messages or bytes; some were dropped.")

    async def _throttled_error(self, code: str, description: str) -> None:
        """A non-fatal Error, at most one a second per code: a flood must not get a flood back."""
        now = time.monotonic()
        if now - self._last_error.get(code, float("-inf")) >= 1.0:
            self._last_error[code] = now
            await self._send_client(Error(code=code, description=description))

    async def _not_settings_first(self) -> None:
        await self._fatal(
            ErrorCode.NON_SETTINGS_MESSAGE_BEFORE_SETTINGS,
            "The first message must be Settings.",
            CLOSE_POLICY,
        )

    # --- provider → client --------------------------------------------------------------------------------

    async def _upstream_to_client(self) -> None:
        assert self.upstream is not None
        while True:
            frame = await self.upstream.recv()
            # A JSON escape can spell the type ("\u0046unctionCallRequest" is a FunctionCallRequest too): such a
            # frame is parsed, not relayed blind, or its backend calls would never be answered (tests/fuzz).
            # Substring tests keep audio and most text frames off the parser.
            if isinstance(frame, str) and (
                '"FunctionCall' in frame or "\\u" in frame or (self._hide_history and '"History"' in frame)
            ):
                await self._on_function_message(frame)
            else:
                await self.client.send(frame)

    async def _on_function_message(self, frame: str) -> None:
        data: dict[str, Any] = {}
        with contextlib.suppress(ProtocolError):  # not a message the gateway acts on: relayed as it is
            # Also refuses nesting a rewrite could not serialise (tests/fuzz).
            data = parse_json_object(frame, duplicate_keys=True)
        kind = data.get("type")
        try:
            if kind == "FunctionCallRequest":
                await self._on_function_request(frame, data)
                return
            if kind == "History" and self._hide_history:
                rest = filter_history(data, frame, self.backend_functions, self.backend_ids)
                if rest is not None:
                    await self.client.send(rest)
                return
            if kind == "FunctionCallCancelled":
                ours, rest = filter_cancelled(validate(FunctionCallCancelled, data), frame, self.backend_ids)
                await self._cancel_calls(ours)
                if rest is not None:
                    await self.client.send(rest)
                return
        except ProtocolError as exc:
            log.warning("session %s: provider sent a malformed %s: %s", self.id, kind, exc.description)
        await self.client.send(frame)

    async def _on_function_request(self, frame: str, data: dict[str, Any]) -> None:
        split = split_request(data, frame, self.backend_functions)
        for call in split.backend:
            self._start_call(call)
        if split.client_frame is not None:
            await self.client.send(split.client_frame)
        if not split.problems:
            return
        # One line per request, the first few problems only: a provider can send any number of elements.
        log.warning(
            "session %s: provider sent %d malformed function call(s): %s",
            self.id, len(split.problems), "; ".join(split.problems[:3]),
        )  # fmt: skip
        answered = [bad for bad in split.malformed if await self._answer_malformed(bad)]
        await self._send_client(
            Warning(
                code=ErrorCode.MALFORMED_FUNCTION_CALL,
                description=f"The provider sent {len(split.problems)} malformed function call(s); they were not "
                f"relayed, and {len(answered)} were answered with an error.",
            )
        )

    async def _answer_malformed(self, call: MalformedCall) -> bool:
        """Answer a malformed element at once, with an error: the provider would otherwise wait for it forever.
        Its id joins the backend's, so it is answered once only and the client may not answer it too."""
        if call.id in self.backend_ids:
            log.warning("session %s: malformed element repeats a call id the backend took; not answered", self.id)
            return False
        self.backend_ids.add(call.id)
        with contextlib.suppress(ProviderClosed):
            await self._send_upstream(malformed_response_frame(call))
        return True

    # --- backend calls ------------------------------------------------------------------------------------

    def _start_call(self, call: FunctionCall) -> None:
        if call.id in self.backend_ids:
            log.warning("session %s: duplicate request for call %s ignored", self.id, call.id)
            return
        self.backend_ids.add(call.id)
        over_limit = len(self.calls) >= self.config.max_pending_calls
        self.calls[call.id] = asyncio.create_task(self._run_call(call, over_limit), name=f"{self.id}-call-{call.id}")

    async def _run_call(self, call: FunctionCall, over_limit: bool = False) -> None:
        """Get the call's result and answer the provider once, unless the call is cancelled meanwhile.

        Only the enqueue and the answer are on the caller's critical path: notices are queued for the client
        (sent by the session's notice task once this one waits), the log line follows the answer.
        """
        started = time.monotonic()
        self._notify(BackendFunctionCall(id=call.id, name=call.name, status="started", arguments=call.arguments))
        try:
            result = await self._result(call, over_limit)
        except asyncio.CancelledError:
            self._notify(BackendFunctionCall(id=call.id, name=call.name, status="cancelled"))
            raise
        if self.calls.pop(call.id, None) is None:
            return  # cancelled meanwhile: the provider wants no answer
        elapsed = (time.monotonic() - started) * 1000
        # Queued before the answer goes out, so the client hears of it before whatever the provider says next.
        self._notify(
            BackendFunctionCall(
                id=call.id,
                name=call.name,
                status="finished",
                ok=result.ok,
                worker=result.worker_id,
                duration_ms=round(elapsed, 2),
                **({} if result.ok else {"error": result.error}),
            )
        )
        with contextlib.suppress(ProviderClosed):
            await self._send_upstream(response_frame(call, result.content))
        log.info(
            "session %s: call %s %s %s in %.1f ms on %s",
            self.id, call.id, call.name, "ok" if result.ok else "error", elapsed, result.worker_id or "-",
        )  # fmt: skip

    async def _result(self, call: FunctionCall, over_limit: bool) -> Result:
        """The call's result; never raises (but for cancellation), since every call must be answered."""
        if over_limit:
            self.notices.put(
                dump(
                    Warning(
                        code=ErrorCode.TOO_MANY_PENDING_CALLS,
                        description=f"{call.name} was not run: {self.config.max_pending_calls} calls already pending.",
                    )
                )
            )
            return Result.failure(call.id, f"{call.name} was not run: too many calls are pending. Try again shortly.")
        spec = self.owned[call.name] if call.name in self.owned else self.catalog.ever_owned[call.name]
        try:
            return await self.dispatcher.call(
                self.backend_key(call.id), call.name, call.arguments, spec, self.id, self.principal
            )
        except Exception:
            # A bug must not hang the conversation: the provider still gets an answer.
            log.exception("session %s: call %s failed inside the gateway", self.id, call.id)
            return Result.failure(call.id, f"{call.name} failed: internal gateway error.")

    @property
    def backend_functions(self) -> Mapping[str, FunctionSpec]:
        """The functions whose calls the backend takes: this session's Settings-time snapshot, then every name
        this process ever saw a worker own. A session that started during a catalog gap (or before a function
        was deployed) must still never hand a backend-named call to the client."""
        return ChainMap(self.owned, self.catalog.ever_owned)

    def backend_key(self, call_id: str) -> str:
        """The call's identity on the backend: the provider's id within this session.

        Provider call ids are unique only as far as the provider cares; keyed alone, a provider reusing an id
        in another session would get that session's stored result. Duplicates within a session still share
        one job (and the session answers an id only once anyway).
        """
        return f"{self.id}-{call_id}"

    async def _cancel_calls(self, call_ids: list[str]) -> None:
        tasks = [task for call_id in call_ids if (task := self.calls.pop(call_id, None)) is not None]
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)
            log.info("session %s: cancelled %d backend call(s)", self.id, len(tasks))

    async def _keepalive(self) -> None:
        """While backend calls are pending no audio may flow; the provider must still hear from us."""
        interval = self.config.keepalive_interval
        while True:
            await asyncio.sleep(min(1.0, interval / 2))
            if self.calls and time.monotonic() - self._last_upstream_send >= interval:
                await self._send_upstream(KEEPALIVE)

    # --- sending ------------------------------------------------------------------------------------------

    async def _send_upstream(self, frame: str | bytes) -> None:
        assert self.upstream is not None
        self._last_upstream_send = time.monotonic()
        await self.upstream.send(frame)

    async def _send_client(self, message: Error | Warning) -> None:
        await self.client.send(dump(message))

    def _notify(self, notice: BackendFunctionCall) -> None:
        """Best effort: a notice must never delay or break the call it describes (see gateway/notices.py)."""
        if self.config.backend_call_notices:
            self.notices.put(dump(notice))

    async def _fatal(self, code: str, description: str, close_code: int) -> None:
        """Send an Error the client can show, then close. The client may already be gone."""
        with contextlib.suppress(ConnectionClosed):
            await self._send_client(Error(code=code, description=description))
            await self.client.close(close_code, code)
