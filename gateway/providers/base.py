"""The interface every provider adapter implements; the only gateway module a provider folder may import.

A session talks to its provider only through these three calls, in the component protocol
(Deepgram Voice Agent messages): text frames are JSON strings, binary frames are audio. An adapter for a
provider with another protocol translates inside ``send`` and ``recv``.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

if TYPE_CHECKING:
    from shared.envelopes import FunctionSpec
    from shared.protocol import Audio, Settings

Frame = str | bytes


@dataclass(frozen=True)
class AudioSupport:
    """The audio formats a provider can honour. The session refuses Settings that declare any other before it
    sends anything to the provider: a format an adapter cannot handle would otherwise be garbled, or (an absurd sample
    rate) make the simulated agent or the OpenAI resampler build huge buffers."""

    input_encodings: frozenset[str]
    output_encodings: frozenset[str]
    min_rate: int = 8000
    max_rate: int = 48000

    def problem(self, audio: Audio | None, provider: str) -> str | None:
        """Why ``audio`` cannot be honoured, in words a client developer can act on; None when it can.
        An absent encoding or rate means the provider's default, which is always supported."""
        if audio is None:
            return None
        for direction, fmt, encodings in (
            ("input", audio.input, self.input_encodings),
            ("output", audio.output, self.output_encodings),
        ):
            if fmt is None:
                continue
            if fmt.encoding is not None and fmt.encoding not in encodings:
                return (
                    f"audio.{direction}.encoding {fmt.encoding[:40]!r} is not supported with the {provider} provider; "
                    f"use one of: {', '.join(sorted(encodings))}."
                )
            if fmt.sample_rate is not None and not self.min_rate <= fmt.sample_rate <= self.max_rate:
                return (
                    f"audio.{direction}.sample_rate {fmt.sample_rate} is not supported with the {provider} provider; "
                    f"use {self.min_rate} to {self.max_rate} Hz."
                )
        return None


DEEPGRAM_AUDIO = AudioSupport(
    input_encodings=frozenset(
        {"linear16", "linear32", "flac", "alaw", "mulaw", "amr-nb", "amr-wb", "opus", "ogg-opus", "speex", "g729"}
    ),
    output_encodings=frozenset({"linear16", "mulaw", "alaw", "mp3", "opus", "flac", "aac"}),
)
"""What Deepgram's Voice Agent documents. Its docs list common rates rather than a range; 8 to 48 kHz covers
telephony to studio audio."""


class ProviderUnavailable(Exception):
    """The adapter could not connect (network, authentication, bad URL). The message is safe to show."""


class ProviderClosed(Exception):
    """The provider ended the connection. ``code``/``reason`` come from its close frame when there was one."""

    def __init__(self, code: int | None = None, reason: str = "") -> None:
        super().__init__(f"provider closed (code={code}, reason={reason!r})")
        self.code = code
        self.reason = reason


class Provider(ABC):
    """One open connection to a provider, for one client session."""

    label: str = "provider"
    """Short name for logs and health output, e.g. ``"deepgram"`` or ``"simulated"``."""
    audio_support: ClassVar[AudioSupport] = DEEPGRAM_AUDIO
    """The formats this adapter honours; the component protocol is Deepgram's, so its formats are the default."""

    def audio_problem(self, audio: Audio | None) -> str | None:
        """Why this provider cannot honour the Settings' ``audio`` (None when it can); checked by the session
        before Settings go to the provider and before any audio frame is relayed."""
        return self.audio_support.problem(audio, self.label)

    def settings_problem(self, settings: Settings) -> str | None:
        """Why this provider cannot honour ``settings`` (None when it can): by default, its ``audio``."""
        return self.audio_problem(settings.audio)

    @abstractmethod
    async def send(self, frame: Frame) -> None:
        """Send one frame to the provider. Raises :class:`ProviderClosed` if the connection is gone."""

    @abstractmethod
    async def recv(self) -> Frame:
        """Wait for the provider's next frame. Raises :class:`ProviderClosed` when the connection ends."""

    @abstractmethod
    async def close(self) -> None:
        """Close the connection; safe to call more than once."""

    async def say_filler(self, text: str) -> None:
        """Have the agent say ``text`` while a backend call runs (``gateway.fillers``). Raises
        :class:`ProviderClosed` like :meth:`send`.

        Default: ``InjectAgentMessage``, the component protocol's way. The provider may refuse it
        (``InjectionRefused``) while someone speaks; the conversation core retries once.
        """
        await self.send(json.dumps({"type": "InjectAgentMessage", "message": text}))

    def use_functions(self, owned: Mapping[str, FunctionSpec]) -> None:  # noqa: B027 - optional hook
        """Learn the backend functions of this session (called once, at Settings, before they are sent).

        Default: nothing. An adapter whose provider may announce a call before it is final (OpenAI sends
        ``.done`` events for cancelled responses) uses ``FunctionSpec.side_effects`` to hold such calls back.
        """
