"""What OpenAI Realtime (GA) can take of a client's audio formats and voice, decided without I/O.

Input and output formats are chosen independently, as the GA ``session.update`` allows: ``linear16`` at any
rate the gateway supports becomes ``audio/pcm`` (24 kHz only; resampled between the client's rate and 24 kHz),
``mulaw``/``alaw`` pass through as ``audio/pcmu``/``audio/pcma`` (G.711, 8 kHz only). Any other encoding, or
G.711 at another rate, is refused before Settings go anywhere (the session's ``INVALID_SETTINGS``).

Realtime voices are a set of their own: TTS-only names (``nova``, ``onyx``, ``fable``...), which a Deepgram
``speak.provider`` of type ``open_ai`` may name, are refused by ``session.update``. Such a voice is never sent:
the default voice is used and the client is warned.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from gateway.providers.openai.audio import OPENAI_RATE

DEFAULT_INPUT_RATE = 16000
"""The component sends 16 kHz when Settings do not say (sources disagree; clients should always say)."""
DEFAULT_OUTPUT_RATE = 24000
G711 = {"mulaw": "audio/pcmu", "alaw": "audio/pcma"}
"""Encodings OpenAI takes as they are (8 kHz telephony), so they pass without resampling."""
G711_RATE = 8000
ENCODINGS = frozenset({"linear16", *G711})
REALTIME_VOICES = frozenset({"alloy", "ash", "ballad", "coral", "echo", "sage", "shimmer", "verse", "marin", "cedar"})
"""The voices ``session.update`` accepts (PROTOCOL.md §2); TTS-only names are refused."""
OPENAI_SPEAK_TYPES = ("open_ai", "openai")


@dataclass(frozen=True)
class Direction:
    """One direction of audio: OpenAI's format, the client's rate, and whether PCM16 is resampled."""

    format: dict[str, Any]
    client_rate: int
    resample: bool
    """True for linear16: resampled between ``client_rate`` and 24 kHz. G.711 bytes pass as they are."""

    @property
    def bytes_per_ms(self) -> float:
        """Bytes of OpenAI's audio in this format per millisecond: PCM16 at 24 kHz, or G.711 (a byte a sample)."""
        return OPENAI_RATE * 2 / 1000 if self.resample else G711_RATE / 1000


@dataclass(frozen=True)
class AudioPlan:
    input: Direction
    output: Direction


def _direction(fmt: Mapping[str, Any], default_rate: int) -> Direction:
    encoding = fmt.get("encoding") or "linear16"
    if encoding in G711:
        return Direction({"type": G711[encoding]}, G711_RATE, False)
    rate = fmt.get("sample_rate")
    return Direction({"type": "audio/pcm", "rate": OPENAI_RATE}, rate if isinstance(rate, int) else default_rate, True)


def audio_plan(settings: Mapping[str, Any]) -> AudioPlan:
    """``audio.input``/``audio.output`` of Settings (already checked by :func:`audio_problem`) as OpenAI formats."""
    audio = _dict(settings.get("audio"))
    return AudioPlan(
        _direction(_dict(audio.get("input")), DEFAULT_INPUT_RATE),
        _direction(_dict(audio.get("output")), DEFAULT_OUTPUT_RATE),
    )


def audio_problem(encoding: str | None, sample_rate: int | None, direction: str) -> str | None:
    """Why OpenAI cannot take this format (beyond the encodings the session checks): G.711 only at 8 kHz."""
    if encoding in G711 and sample_rate not in (None, G711_RATE):
        return f"With the openai provider, audio.{direction} {encoding} must be {G711_RATE} Hz (got {sample_rate})."
    return None


def voice(speak: Any, default: str) -> tuple[str, str | None]:
    """The Realtime voice for ``agent.speak`` (an object, or a list of fallbacks: the first one counts), and a
    warning when the voice asked for is not a Realtime voice (the default is used instead)."""
    provider = speak_provider(speak)
    wanted = provider.get("voice")
    if provider.get("type") not in OPENAI_SPEAK_TYPES or not isinstance(wanted, str):
        return default, None
    if wanted.lower() in REALTIME_VOICES:
        return wanted.lower(), None
    return default, (
        f"Voice {wanted[:40]!r} is not an OpenAI Realtime voice (use one of: {', '.join(sorted(REALTIME_VOICES))}); "
        f"{default!r} is used."
    )


def speak_provider(speak: Any) -> dict[str, Any]:
    """``speak.provider``; of a list of fallback speak configurations, the first one's."""
    if isinstance(speak, list):
        speak = next((s for s in speak if isinstance(s, dict)), {})
    return _dict(_dict(speak).get("provider"))


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}
