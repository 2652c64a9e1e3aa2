"""Test audio: a pure PCM16 tone and the frequency of the loudest component of one."""

from __future__ import annotations

import numpy as np


def sine(hz: float, rate: int, seconds: float) -> bytes:
    """Mono PCM16 little-endian at ``rate``, 30 % of full scale."""
    t = np.arange(int(rate * seconds)) / rate
    return (0.3 * 32767 * np.sin(2 * np.pi * hz * t)).astype("<i2").tobytes()


def peak_hz(pcm: bytes, rate: int) -> float:
    """The frequency with the most energy (Hann-windowed FFT)."""
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / rate)[int(np.argmax(spectrum))])
