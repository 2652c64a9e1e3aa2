"""The interface every upstream (provider) adapter implements.

A session talks to its provider only through these three calls, in the component protocol
(Deepgram Voice Agent messages): text frames are JSON strings, binary frames are audio. An adapter for a
provider with another protocol translates inside ``send`` and ``recv``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from shared.envelopes import FunctionSpec

Frame = str | bytes


class UpstreamUnavailable(Exception):
    """The adapter could not connect (network, authentication, bad URL). The message is safe to show."""


class UpstreamClosed(Exception):
    """The provider ended the connection. ``code``/``reason`` come from its close frame when there was one."""

    def __init__(self, code: int | None = None, reason: str = "") -> None:
        super().__init__(f"upstream closed (code={code}, reason={reason!r})")
        self.code = code
        self.reason = reason


class Upstream(ABC):
    """One open connection to a provider, for one client session."""

    label: str = "upstream"
    """Short name for logs and health output, e.g. ``"deepgram"`` or ``"simulated"``."""

    @abstractmethod
    async def send(self, frame: Frame) -> None:
        """Send one frame to the provider. Raises :class:`UpstreamClosed` if the connection is gone."""

    @abstractmethod
    async def recv(self) -> Frame:
        """Wait for the provider's next frame. Raises :class:`UpstreamClosed` when the connection ends."""

    @abstractmethod
    async def close(self) -> None:
        """Close the connection; safe to call more than once."""

    def use_functions(self, owned: Mapping[str, FunctionSpec]) -> None:  # noqa: B027 - optional hook
        """Learn the backend functions of this session (called once, at Settings, before they are sent).

        Default: nothing. An adapter whose provider may announce a call before it is final (OpenAI sends
        ``.done`` events for cancelled responses) uses ``FunctionSpec.side_effects`` to hold such calls back.
        """
