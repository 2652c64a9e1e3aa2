"""Streaming resampling: frequency and length survive chunking, odd byte counts included."""

from __future__ import annotations

from gateway.providers.openai.audio import Resampler
from tests.support.audio import peak_hz, sine


def test_16k_to_24k_in_small_odd_chunks_keeps_frequency_and_length():
    source = sine(440, 16000, 1.0)
    resampler = Resampler(16000, 24000)
    out = b"".join(resampler.process(source[i : i + 317]) for i in range(0, len(source), 317))
    streamed = len(out) // 2
    out += resampler.flush()
    assert len(out) % 2 == 0
    assert len(out) // 2 == 24000  # exactly 1.5x once the filter is flushed
    assert 24000 - streamed < 24000 * 0.03  # before the flush only the filter delay (~20 ms) is missing
    assert abs(peak_hz(out, 24000) - 440) < 2


def test_24k_to_16k_and_back_to_a_fresh_stream_after_flush():
    resampler = Resampler(24000, 16000)
    first = resampler.process(sine(440, 24000, 0.24)) + resampler.flush()
    second = resampler.process(sine(440, 24000, 0.24)) + resampler.flush()
    assert len(first) // 2 == len(second) // 2 == 3840
    assert abs(peak_hz(second, 16000) - 440) < 5


def test_equal_rates_pass_bytes_through_and_keep_an_odd_byte_for_later():
    resampler = Resampler(24000, 24000)
    assert resampler.process(b"\x01\x02\x03") == b"\x01\x02"
    assert resampler.process(b"\x04") == b"\x03\x04"
    assert resampler.flush() == b""
