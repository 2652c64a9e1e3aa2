"""Streaming PCM16 resampling between the client's sample rates and OpenAI Realtime's 24 kHz.

The component protocol lets a client choose its rates (browsers often send 16 kHz and play 24 or 48 kHz);
OpenAI's ``audio/pcm`` is 24 kHz only. Audio arrives in small chunks, so the resampler keeps its filter state
across chunks: resampling each chunk on its own would click at every chunk boundary and round the length of
every chunk. ``soxr`` (libsoxr) does the signal processing; this class only handles bytes.
"""

from __future__ import annotations

import numpy as np
import soxr

OPENAI_RATE = 24000
"""The only sample rate of OpenAI Realtime's ``audio/pcm`` format."""

_PCM16 = np.dtype("<i2")


class Resampler:
    """PCM16 little-endian mono from ``in_rate`` to ``out_rate``, chunk by chunk, with state between chunks.

    A chunk may end in the middle of a sample (an odd number of bytes): the odd byte waits for the next chunk.
    The filter delays its output by about 20 ms (``HQ`` quality); :meth:`flush` returns what is still inside,
    at the end of a stream (the end of an agent's response). Equal rates pass bytes through untouched.
    """

    def __init__(self, in_rate: int, out_rate: int) -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16") if in_rate != out_rate else None
        self._odd = b""

    def process(self, pcm: bytes) -> bytes:
        """Resample one chunk; the result may be a little shorter or longer than the ratio says (filter delay)."""
        data = self._odd + pcm
        usable = len(data) - len(data) % 2
        self._odd = data[usable:]
        if self._stream is None:
            return data[:usable]
        if not usable:
            return b""
        samples = np.frombuffer(data[:usable], dtype=_PCM16)
        return self._stream.resample_chunk(samples).astype(_PCM16, copy=False).tobytes()

    def flush(self) -> bytes:
        """The samples still inside the filter; the stream then starts afresh (for the next response)."""
        self._odd = b""
        if self._stream is None:
            return b""
        tail = self._stream.resample_chunk(np.zeros(0, dtype=_PCM16), last=True)
        self._stream.clear()
        return tail.astype(_PCM16, copy=False).tobytes()
