"""A fake OpenAI Realtime (GA) server for tests: offline, deterministic, strict about the rules that matter.

It sends server events in the order the real API does (PROTOCOL.md §2) and enforces what a gateway can get
wrong: ``session.update`` needs ``session.type``; a ``response.create`` while a response is active gets the
``conversation_already_has_active_response`` error (and is counted); a ``function_call_output`` must name a
call the model made; unknown client events are refused; a ``session.update`` naming a voice that is not a
Realtime voice, an unknown audio format, or a new voice once the assistant has spoken, is refused with an
``error`` echoing its ``event_id`` and naming the ``param``, as the real API does. Audio appended before the
first ``session.update`` is counted (``audio_before_session``). A user text with "fail the response" gets a
response that ends ``failed``. Each session keeps statistics a test reads over HTTP
on the same port: ``GET /stats/<session_id>`` (JSON) and ``GET /audio/<session_id>`` (the input audio as raw
24 kHz PCM16). The session id is what the gateway gives its client as ``Welcome.request_id``.

How the "model" behaves, on ``response.create``:

- function outputs arrived since the last response → it says ``NAME returned: OUTPUT.`` for each, verbatim;
- else the latest user text: ``call NAME {json}`` (several → parallel calls in one response) or
  "weather in Paris" → a response of ``function_call`` items for declared tools; ``response.done`` follows after
  ``done_delay`` seconds, so answers can arrive while the response is still active. With "interrupt" in the
  text the user "barges in": ``speech_started`` and the response ends ``cancelled``;
- otherwise it says ``You said: TEXT`` (or the ``response.instructions`` it was given);
- an out-of-band response (``response.conversation: "none"``) says its instructions and touches nothing of the
  conversation: no ``conversation.item.*`` events, pending function outputs and user texts left for the next
  in-conversation response; its ``metadata`` is echoed; stats ``out_of_band`` (it still counts as active);
- speech is a 440 Hz sine at 24 kHz in ``response.output_audio.delta`` chunks, with its transcript (240 ms; 4.8 s
  when the text has "long story", so a listener can barge in while it plays). ``conversation.item.truncate`` is
  refused, as OpenAI does, for an unknown item or an ``audio_end_ms`` past the item's audio; stats ``truncates``.

Input audio is collected; the first loud chunk gives ``input_audio_buffer.speech_started`` (and cancels an
active response, as server VAD with ``interrupt_response`` does). The next quiet chunk ends the turn, as server
VAD with ``create_response`` does: ``speech_stopped``, ``committed``, the user's audio item, a response saying
"I heard you." and, later (``TRANSCRIPT_DELAY``, as OpenAI's async transcription does), the item's transcript
"(spoken)". There is no speech recognition. With "think" in the user's text, a response with calls first says
"Let me check." (text before a tool call).

Run it alone: ``python -m tests.support.fake_openai --port 8765 [--require-key K] [--done-delay 0.3]``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import json
import logging
import math
import re
import uuid
from http import HTTPStatus
from typing import Any

import numpy as np
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from gateway.providers.simulated.intents import explicit_calls

log = logging.getLogger(__name__)

RATE = 24000
TONE_HZ = 440.0
TONE_SAMPLES = 5760
"""240 ms of speech per answer, in 20 ms deltas."""
CHUNK = 480
SPEECH_RMS = 500.0
"""An input chunk louder than this (PCM16 RMS) counts as speech for the fake's voice activity detection."""
TRANSCRIPT_DELAY = 0.5
VOICES = frozenset({"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"})
"""Realtime voices; TTS-only names (nova, onyx, fable...) are refused, as by the real API."""
FORMATS = frozenset({"audio/pcm", "audio/pcmu", "audio/pcma"})
FAIL = "fail the response"
"""A user text containing this gets a response that ends ``failed`` (``status_details.error``)."""
_WEATHER = re.compile(r"weather (?:in|for) ([A-Z][\w'-]*(?:\s+[A-Z][\w'-]*)*)")


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def tone(samples: int = TONE_SAMPLES, rate: int = RATE) -> bytes:
    t = np.arange(samples) / rate
    return (0.3 * 32767 * np.sin(2 * math.pi * TONE_HZ * t)).astype("<i2").tobytes()


class FakeSession:
    """One connection: the conversation state and what reached the "provider"."""

    def __init__(self, ws: ServerConnection, done_delay: float) -> None:
        self.ws = ws
        self.id = _id("sess")
        self.done_delay = done_delay
        self.session: dict[str, Any] = {"type": "realtime", "id": self.id, "object": "realtime.session"}
        self.audio_in = bytearray()
        self.speaking = False
        self.active: str | None = None
        self.cancel = asyncio.Event()
        self.task: asyncio.Task[None] | None = None
        self.background: asyncio.Task[None] | None = None
        self.calls: dict[str, str] = {}
        """call_id → name of every call the model made."""
        self.outputs: list[tuple[str, str]] = []
        """(name, output) received since the last response."""
        self.user_texts: list[str] = []
        self.audio_items: dict[str, int] = {}
        """item_id → ms of audio in each assistant item."""
        self.stats: dict[str, Any] = {
            "session_id": self.id,
            "events": [],
            "session_updates": [],
            "response_creates": 0,
            "active_response_errors": 0,
            "errors": [],
            "function_calls": [],
            "function_outputs": [],
            "responses": [],
            "audio_in_bytes": 0,
            "audio_before_session": 0,
            "audio_out_samples": 0,
            "user_messages": [],
            "truncates": [],
            "response_options": [],
            "out_of_band": [],
        }

    async def send(self, event: dict[str, Any]) -> None:
        await self.ws.send(json.dumps({"event_id": _id("event"), **event}))

    async def error(
        self, code: str | None, message: str, client_event: dict[str, Any], param: str | None = None
    ) -> None:
        self.stats["errors"].append(code or message)
        details = {"type": "invalid_request_error", "code": code, "message": message, "param": param}
        await self.send({"type": "error", "error": {**details, "event_id": client_event.get("event_id")}})

    async def run(self) -> None:
        await self.send({"type": "session.created", "session": self.session})
        async for message in self.ws:
            if isinstance(message, bytes):
                await self.error(None, "Binary frames are not supported.", {})
                continue
            event = json.loads(message)
            kind = event.get("type")
            self.stats["events"].append(kind)
            handler = getattr(self, "on_" + str(kind).replace(".", "_"), None)
            if handler is None:
                await self.error("invalid_value", f"Invalid value: '{kind}'. Supported values are: ...", event)
            else:
                await handler(event)

    # --- client events ------------------------------------------------------------------------------------

    async def on_session_update(self, event: dict[str, Any]) -> None:
        session = event.get("session") or {}
        if session.get("type") != "realtime":
            await self.error("missing_required_parameter", "Missing required parameter: 'session.type'.", event)
            return
        refusal = self.refusal(session)
        if refusal is not None:
            self.stats["refused_updates"] = self.stats.get("refused_updates", 0) + 1
            await self.error("invalid_value", refusal[1], event, refusal[0])
            return
        self.stats["session_updates"].append(session)
        self.session.update({k: v for k, v in session.items() if k != "audio"})
        for direction in ("input", "output"):
            old = self.session.setdefault("audio", {}).setdefault(direction, {})
            old.update((session.get("audio") or {}).get(direction) or {})
        await self.send({"type": "session.updated", "session": self.session})

    def refusal(self, session: dict[str, Any]) -> tuple[str, str] | None:
        """(param, message) for what the real API refuses in a session.update: unknown voices and formats, and a
        voice change once the assistant has spoken."""
        output = (session.get("audio") or {}).get("output") or {}
        voice = output.get("voice")
        if voice is not None and voice not in VOICES:
            return "session.audio.output.voice", f"Invalid value: '{voice}'. Supported values are: {sorted(VOICES)}."
        if (
            voice is not None
            and self.stats["audio_out_samples"]
            and voice != self.session.get("audio", {}).get("output", {}).get("voice")
        ):
            return "session.audio.output.voice", "Cannot update a conversation's voice if assistant audio is present."
        for direction in ("input", "output"):
            kind = (((session.get("audio") or {}).get(direction) or {}).get("format") or {}).get("type")
            if kind is not None and kind not in FORMATS:
                return f"session.audio.{direction}.format.type", f"Invalid value: '{kind}'."
        return None

    async def on_input_audio_buffer_append(self, event: dict[str, Any]) -> None:
        if not self.stats["session_updates"]:
            self.stats["audio_before_session"] += 1
        pcm = base64.b64decode(event["audio"])
        self.audio_in += pcm
        self.stats["audio_in_bytes"] += len(pcm)
        samples = np.frombuffer(pcm[: len(pcm) - len(pcm) % 2], dtype="<i2").astype(np.float64)
        loud = samples.size > 0 and math.sqrt(float(np.mean(samples**2))) > SPEECH_RMS
        if loud and not self.speaking:
            self.speaking = True
            await self.send({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": _id("item")})
            if self.active and self.session.get("audio", {}).get("input", {}).get("turn_detection"):
                self.cancel.set()  # server VAD interrupts the agent
        elif not loud and self.speaking and samples.size:
            self.speaking = False
            await self.send({"type": "input_audio_buffer.speech_stopped", "audio_end_ms": 0, "item_id": _id("item")})
            turn = self.session.get("audio", {}).get("input", {}).get("turn_detection") or {}
            if turn.get("create_response") and self.active is None:
                await self.audio_turn()

    async def audio_turn(self) -> None:
        """Server VAD ends the user's turn: the audio item, an automatic response, the transcript later."""
        item_id = _id("item")
        await self.send({"type": "input_audio_buffer.committed", "item_id": item_id, "previous_item_id": None})
        content = [{"type": "input_audio", "transcript": None}]
        item = {"id": item_id, "type": "message", "object": "realtime.item", "role": "user", "content": content}
        await self.send({"type": "conversation.item.added", "previous_item_id": None, "item": item})
        self.active = _id("resp")
        self.cancel.clear()
        self.task = asyncio.create_task(self.respond(self.active, "I heard you."))
        asyncio.get_running_loop().call_later(TRANSCRIPT_DELAY, self._transcribed, item_id)

    def _transcribed(self, item_id: str) -> None:
        event = {"type": "conversation.item.input_audio_transcription.completed", "item_id": item_id}
        self.background = asyncio.create_task(self.send({**event, "content_index": 0, "transcript": "(spoken)"}))

    async def on_input_audio_buffer_commit(self, event: dict[str, Any]) -> None:
        await self.send({"type": "input_audio_buffer.committed", "item_id": _id("item"), "previous_item_id": None})

    async def on_conversation_item_create(self, event: dict[str, Any]) -> None:
        item = dict(event.get("item") or {})
        if item.get("type") == "message" and item.get("role") == "user":
            text = " ".join(p.get("text", "") for p in item.get("content", []) if p.get("type") == "input_text")
            self.user_texts.append(text)
            self.stats["user_messages"].append(text)
        elif item.get("type") == "function_call_output":
            call_id = item.get("call_id")
            if call_id not in self.calls:
                await self.error("invalid_tool_call_id", f"Tool call ID '{call_id}' not found in conversation.", event)
                return
            self.outputs.append((self.calls[call_id], str(item.get("output"))))
            self.stats["function_outputs"].append({"call_id": call_id, "output": item.get("output")})
        else:
            await self.error("invalid_value", f"Unsupported item type {item.get('type')!r}.", event)
            return
        item.update(id=item.get("id") or _id("item"), object="realtime.item", status="completed")
        await self.send({"type": "conversation.item.added", "previous_item_id": None, "item": item})
        await self.send({"type": "conversation.item.done", "previous_item_id": None, "item": item})

    async def on_response_create(self, event: dict[str, Any]) -> None:
        if self.active is not None:
            self.stats["active_response_errors"] += 1
            message = f"Conversation already has an active response in progress: {self.active}."
            await self.error("conversation_already_has_active_response", message, event)
            return
        self.stats["response_creates"] += 1
        self.stats["response_options"].append(event.get("response") or {})
        self.active = _id("resp")
        self.cancel.clear()
        options = event.get("response") or {}
        instructions = options.get("instructions")
        if options.get("conversation") == "none":
            self.stats["out_of_band"].append(options)
            self.task = asyncio.create_task(self.respond_out_of_band(self.active, instructions or "", options))
            return
        self.task = asyncio.create_task(self.respond(self.active, instructions))

    async def on_conversation_item_truncate(self, event: dict[str, Any]) -> None:
        item_id, end = event.get("item_id"), event.get("audio_end_ms")
        if item_id not in self.audio_items or event.get("content_index") != 0:
            await self.error("invalid_value", f"Item {item_id!r} has no audio content to truncate.", event)
        elif not isinstance(end, int) or not 0 <= end <= self.audio_items[item_id]:
            await self.error("invalid_value", f"audio_end_ms {end} is past the item's audio.", event)
        else:
            self.stats["truncates"].append({"item_id": item_id, "audio_end_ms": end})
            await self.send({"type": "conversation.item.truncated", "item_id": item_id, "audio_end_ms": end})

    async def on_response_cancel(self, event: dict[str, Any]) -> None:
        if self.active is None:
            await self.error("response_cancel_not_active", "Cancellation failed: no active response found.", event)
            return
        self.cancel.set()

    # --- the "model" --------------------------------------------------------------------------------------

    async def respond(self, response_id: str, instructions: str | None) -> None:
        try:
            await self.send({"type": "response.created", "response": _response(response_id, "in_progress", [])})
            if self.outputs:
                text = " ".join(f"{name} returned: {output}." for name, output in self.outputs)
                self.outputs = []
                await self.say(response_id, text)
                return
            user = self.user_texts[-1] if self.user_texts else ""
            self.user_texts = []
            if FAIL in user:
                await self.finish(response_id, [], failed="The model is unavailable.")
                return
            calls = self.plan_calls(user) if instructions is None else []
            if calls:
                if "think" in user.lower():
                    await self.speak_text(response_id, "Let me check.")
                await self.call(response_id, calls, interrupt="interrupt" in user.lower())
            else:
                await self.say(response_id, instructions or (f"You said: {user}" if user else "How can I help?"))
        except ConnectionClosed:
            pass

    async def respond_out_of_band(self, response_id: str, instructions: str, options: dict[str, Any]) -> None:
        metadata = options.get("metadata")
        created = {**_response(response_id, "in_progress", []), "conversation_id": None, "metadata": metadata}
        try:
            await self.send({"type": "response.created", "response": created})
            await self.say(response_id, instructions, metadata=metadata)
        except ConnectionClosed:
            pass

    def plan_calls(self, text: str) -> list[tuple[str, dict[str, Any]]]:
        declared = {t.get("name") for t in self.session.get("tools") or []}
        wanted = [(i.name, i.arguments) for i in explicit_calls(text, declared)]
        if not wanted and (match := _WEATHER.search(text)):
            wanted = [("get_weather", {"location": match.group(1)})]
        return [(name, args) for name, args in wanted if name in declared]

    async def call(self, response_id: str, calls: list[tuple[str, dict[str, Any]]], interrupt: bool) -> None:
        items = []
        for index, (name, arguments) in enumerate(calls):
            call_id, item_id, args = _id("call"), _id("item"), json.dumps(arguments)
            self.calls[call_id] = name
            self.stats["function_calls"].append({"call_id": call_id, "name": name, "arguments": args})
            item = {"id": item_id, "type": "function_call", "object": "realtime.item", "call_id": call_id, "name": name}
            where = {"response_id": response_id, "output_index": index}
            await self.send({"type": "response.output_item.added", **where, "item": {**item, "arguments": ""}})
            await self.send({"type": "conversation.item.added", "item": {**item, "arguments": ""}})
            ids = {**where, "item_id": item_id, "call_id": call_id}
            await self.send({"type": "response.function_call_arguments.delta", **ids, "delta": args})
            await self.send({"type": "response.function_call_arguments.done", **ids, "name": name, "arguments": args})
            done = {**item, "arguments": args, "status": "completed"}
            await self.send({"type": "response.output_item.done", **where, "item": done})
            await self.send({"type": "conversation.item.done", "item": done})
            items.append(done)
        await self._wait(self.done_delay)
        if interrupt:
            self.speaking = True
            await self.send({"type": "input_audio_buffer.speech_started", "audio_start_ms": 0, "item_id": _id("item")})
            self.cancel.set()
        await self.finish(response_id, items)

    async def speak_text(self, response_id: str, text: str) -> None:
        """A text-only message item before the calls (``output_text``), as a model thinking aloud does."""
        item_id = _id("item")
        where = {"response_id": response_id, "output_index": 0, "item_id": item_id, "content_index": 0}
        await self.send({"type": "response.output_text.delta", **where, "delta": text})
        await self.send({"type": "response.output_text.done", **where, "text": text})

    async def say(self, response_id: str, text: str, metadata: Any = False) -> None:
        """Speak ``text``; with ``metadata`` (an out-of-band response's, None included) outside the conversation."""
        in_conversation = metadata is False
        item_id = _id("item")
        item = {"id": item_id, "type": "message", "object": "realtime.item", "role": "assistant"}
        where = {"response_id": response_id, "output_index": 0}
        part = {**where, "item_id": item_id, "content_index": 0}
        await self.send({"type": "response.output_item.added", **where, "item": {**item, "content": []}})
        if in_conversation:
            await self.send({"type": "conversation.item.added", "item": {**item, "content": []}})
        await self.send({"type": "response.content_part.added", **part, "part": {"type": "audio", "transcript": ""}})
        await self.send({"type": "response.output_audio_transcript.delta", **part, "delta": text})
        audio = tone(TONE_SAMPLES * 20 if "long story" in text else TONE_SAMPLES)
        self.audio_items[item_id] = len(audio) // 2 * 1000 // RATE
        for start in range(0, len(audio), 2 * CHUNK):
            if self.cancel.is_set():
                break
            delta = base64.b64encode(audio[start : start + 2 * CHUNK]).decode()
            await self.send({"type": "response.output_audio.delta", **part, "delta": delta})
            self.stats["audio_out_samples"] += len(audio[start : start + 2 * CHUNK]) // 2
            await asyncio.sleep(0)
        await self.send({"type": "response.output_audio.done", **part})
        await self.send({"type": "response.output_audio_transcript.done", **part, "transcript": text})
        content = [{"type": "output_audio", "transcript": text}]
        await self.send({"type": "response.content_part.done", **part, "part": content[0]})
        done = {**item, "status": "completed", "content": content}
        await self.send({"type": "response.output_item.done", **where, "item": done})
        if in_conversation:
            await self.send({"type": "conversation.item.done", "item": done})
            await self.finish(response_id, [done])
        else:
            await self.finish(response_id, [done], metadata=metadata)

    async def finish(
        self, response_id: str, output: list[dict[str, Any]], failed: str | None = None, metadata: Any = False
    ) -> None:
        status = "failed" if failed else "cancelled" if self.cancel.is_set() else "completed"
        self.stats["responses"].append({"id": response_id, "status": status})
        self.active = None  # before response.done: a response.create sent after it must be accepted
        response = _response(response_id, status, output)
        if metadata is not False:
            response.update(conversation_id=None, metadata=metadata)
        if failed:
            error = {"type": "server_error", "code": "server_error", "message": failed}
            response["status_details"] = {"type": "failed", "error": error}
        await self.send({"type": "response.done", "response": response})

    async def _wait(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.cancel.wait(), seconds)


def _response(response_id: str, status: str, output: list[dict[str, Any]]) -> dict[str, Any]:
    details = {"type": "cancelled", "reason": "turn_detected"} if status == "cancelled" else None
    return {"id": response_id, "object": "realtime.response", "status": status, "status_details": details,
            "output": output}  # fmt: skip


class FakeOpenAI:
    """The server: one :class:`FakeSession` per connection, all kept for inspection (``sessions``)."""

    def __init__(self, api_key: str | None = None, done_delay: float = 0.3) -> None:
        self.api_key = api_key
        self.done_delay = done_delay
        self.sessions: dict[str, FakeSession] = {}

    def serve(self, host: str = "127.0.0.1", port: int = 0) -> Server:
        """An awaitable / async context manager, as ``websockets.serve`` returns; port 0 picks a free port."""
        return serve(self._converse, host, port, process_request=self._http, max_size=None, compression=None)

    async def _converse(self, ws: ServerConnection) -> None:
        session = FakeSession(ws, self.done_delay)
        self.sessions[session.id] = session
        with contextlib.suppress(ConnectionClosed):
            await session.run()
        if session.task is not None:
            session.task.cancel()

    def _http(self, connection: ServerConnection, request: Request) -> Response | None:
        path = request.path.split("?", 1)[0]
        kind, _, session_id = path.strip("/").partition("/")
        if kind in ("stats", "audio"):
            session = self.sessions.get(session_id)
            if session is None:
                return connection.respond(HTTPStatus.NOT_FOUND, "no such session\n")
            if kind == "stats":
                return _response_of(HTTPStatus.OK, json.dumps(session.stats).encode(), "application/json")
            return _response_of(HTTPStatus.OK, bytes(session.audio_in), "application/octet-stream")
        if path != "/v1/realtime":
            return connection.respond(HTTPStatus.NOT_FOUND, "not found\n")
        if "websocket" not in request.headers.get("Upgrade", "").lower():
            return connection.respond(HTTPStatus.UPGRADE_REQUIRED, "WebSocket here\n")
        if self.api_key is not None and request.headers.get("Authorization") != f"Bearer {self.api_key}":
            return connection.respond(HTTPStatus.UNAUTHORIZED, "Incorrect API key provided.\n")
        return None


def _response_of(status: HTTPStatus, body: bytes, content_type: str) -> Response:
    headers = Headers([("Content-Type", content_type), ("Content-Length", str(len(body)))])
    return Response(status.value, status.phrase, headers, body)


async def _main(host: str, port: int, api_key: str | None, done_delay: float) -> None:
    async with FakeOpenAI(api_key, done_delay).serve(host, port) as server:
        log.info("fake OpenAI Realtime on ws://%s:%d/v1/realtime", host, next(iter(server.sockets)).getsockname()[1])
        await server.serve_forever()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Serve a fake OpenAI Realtime API for tests.")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--require-key", help="refuse connections without 'Authorization: Bearer KEY'")
    parser.add_argument("--done-delay", type=float, default=0.3, help="seconds between a call and response.done")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("websockets").setLevel(logging.WARNING)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_main(args.host, args.port, args.require_key, args.done_delay))


if __name__ == "__main__":
    main()
