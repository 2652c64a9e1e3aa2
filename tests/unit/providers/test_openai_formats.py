"""Audio formats and voices with OpenAI Realtime: each direction chosen on its own; voices OpenAI has."""

from __future__ import annotations

import pytest

from gateway.providers.openai import formats


def test_the_client_rates_are_kept_for_resampling():
    audio = {"input": {"encoding": "linear16", "sample_rate": 16000}, "output": {"sample_rate": 48000}}
    plan = formats.audio_plan({"audio": audio})
    assert (plan.input.client_rate, plan.output.client_rate) == (16000, 48000)
    assert plan.input.resample and plan.output.resample
    assert plan.input.format == plan.output.format == {"type": "audio/pcm", "rate": 24000}
    default = formats.audio_plan({"type": "Settings"})
    assert (default.input.client_rate, default.output.client_rate) == (16000, 24000)


@pytest.mark.parametrize(
    ("source", "sink", "formats_"),
    [
        ("mulaw", "mulaw", ("audio/pcmu", "audio/pcmu")),
        ("mulaw", "linear16", ("audio/pcmu", "audio/pcm")),
        ("linear16", "alaw", ("audio/pcm", "audio/pcma")),
        ("alaw", "mulaw", ("audio/pcma", "audio/pcmu")),
    ],
)
def test_input_and_output_formats_are_chosen_independently(source, sink, formats_):
    audio = {
        "input": {"encoding": source},
        "output": {"encoding": sink, "sample_rate": 16000 if sink == "linear16" else 8000},
    }
    plan = formats.audio_plan({"audio": audio})
    assert (plan.input.format["type"], plan.output.format["type"]) == formats_
    assert plan.input.resample == (source == "linear16") and plan.output.resample == (sink == "linear16")


def test_g711_is_8_khz_only():
    assert formats.audio_problem("mulaw", 8000, "input") is None
    assert formats.audio_problem("alaw", None, "output") is None
    assert "8000 Hz" in formats.audio_problem("alaw", 16000, "output")
    assert formats.audio_problem("linear16", 44100, "input") is None


def test_realtime_voices_pass_and_tts_only_names_are_never_sent():
    assert formats.voice({"provider": {"type": "open_ai", "voice": "Cedar"}}, "marin") == ("cedar", None)
    voice, warning = formats.voice({"provider": {"type": "open_ai", "model": "tts-1", "voice": "nova"}}, "marin")
    assert voice == "marin" and "'nova' is not an OpenAI Realtime voice" in warning
    assert formats.voice({"provider": {"type": "deepgram", "model": "aura-2-thalia-en"}}, "marin") == ("marin", None)
    fallbacks = [{"provider": {"type": "open_ai", "voice": "onyx"}}, {"provider": {"type": "deepgram"}}]
    assert formats.voice(fallbacks, "ash")[0] == "ash"
