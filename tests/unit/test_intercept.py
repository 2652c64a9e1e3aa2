"""The pure interception rules: Settings merge, request split, cancellation filter, response frame."""

import json

import pytest

from gateway.intercept import filter_cancelled, merge_functions, response_frame, split_request
from shared.envelopes import FunctionSpec
from shared.protocol import (
    ErrorCode,
    FunctionCall,
    FunctionCallCancelled,
    FunctionCallRequest,
    ProtocolError,
    Settings,
    dump,
    parse_json_object,
)

BACKEND = {
    "get_weather": FunctionSpec(
        name="get_weather",
        description="backend weather",
        parameters={"type": "object", "properties": {"location": {"type": "string"}}, "required": ["location"]},
    ),
    "get_current_time": FunctionSpec(name="get_current_time", description="time", parameters={"type": "object"}),
}


def settings(functions: list[dict] | None = None, **extra: object) -> Settings:
    think: dict = {"provider": {"type": "open_ai", "model": "gpt-4o-mini"}, "prompt": "Be brief."}
    if functions is not None:
        think["functions"] = functions
    return Settings.model_validate(
        {
            "type": "Settings",
            "audio": {"input": {"encoding": "linear16", "sample_rate": 16000}},
            "agent": {"think": think},
            **extra,
        }
    )


def names(s: Settings) -> list[str]:
    return [f.name for f in s.functions]


def test_merge_adds_backend_functions_and_keeps_everything_else():
    original = settings(
        [{"name": "open_door", "description": "client", "parameters": {"type": "object"}}], tag={"x": 1}
    )
    merged = json.loads(dump(merge_functions(original, BACKEND)))
    assert [f["name"] for f in merged["agent"]["think"]["functions"]] == [
        "open_door",
        "get_weather",
        "get_current_time",
    ]
    assert merged["tag"] == {"x": 1}
    assert merged["agent"]["think"]["prompt"] == "Be brief."
    assert merged["audio"]["input"]["sample_rate"] == 16000
    assert "functions" not in json.loads(dump(original))["agent"]["think"] or names(original) == ["open_door"]


def test_backend_definition_wins_a_name_clash():
    client = [{"name": "get_weather", "description": "client lies", "parameters": {"type": "object", "properties": {}}}]
    merged = merge_functions(settings(client), BACKEND)
    weather = [f for f in merged.functions if f.name == "get_weather"]
    assert len(weather) == 1
    assert weather[0].description == "backend weather"
    assert weather[0].parameters["required"] == ["location"]


def test_merge_creates_think_functions_when_absent():
    merged = merge_functions(settings(None), BACKEND)
    assert names(merged) == ["get_weather", "get_current_time"]


def test_merge_with_empty_catalog_is_identity():
    original = settings([{"name": "a"}])
    assert merge_functions(original, {}) is original


def request(*calls: dict) -> tuple[FunctionCallRequest, str]:
    raw = json.dumps({"type": "FunctionCallRequest", "functions": list(calls), "extra": "kept"})
    return FunctionCallRequest.model_validate_json(raw), raw


def test_split_all_backend_forwards_nothing():
    req, raw = request({"id": "1", "name": "get_weather", "arguments": "{}", "client_side": True})
    split = split_request(req, raw, BACKEND)
    assert [c.id for c in split.backend] == ["1"]
    assert split.client_frame is None


def test_split_none_backend_forwards_raw_frame_untouched():
    req, raw = request(
        {"id": "1", "name": "open_door", "arguments": "{}", "client_side": True, "thought_signature": "s"}
    )
    split = split_request(req, raw, BACKEND)
    assert split.backend == []
    assert split.client_frame is raw


def test_split_mixed_keeps_client_calls_and_unknown_fields():
    req, raw = request(
        {"id": "1", "name": "get_weather", "arguments": "{}", "client_side": True},
        {"id": "2", "name": "open_door", "arguments": "{}", "client_side": True, "thought_signature": "s"},
        {"id": "3", "name": "get_current_time", "arguments": "{}", "client_side": False},
    )
    split = split_request(req, raw, BACKEND)
    assert [c.id for c in split.backend] == ["1"]
    forwarded = json.loads(split.client_frame)
    assert [f["id"] for f in forwarded["functions"]] == ["2", "3"]
    assert forwarded["functions"][0]["thought_signature"] == "s"
    assert forwarded["extra"] == "kept"


def test_server_side_call_of_a_backend_name_is_not_intercepted():
    req, raw = request({"id": "1", "name": "get_weather", "arguments": "{}", "client_side": False})
    assert split_request(req, raw, BACKEND).backend == []


def test_missing_client_side_means_client_must_answer():
    assert FunctionCall(id="1", name="x").client_side is True


def test_filter_cancelled():
    raw = json.dumps(
        {"type": "FunctionCallCancelled", "functions": [{"id": "1", "name": "a"}, {"id": "2", "name": "b"}]}
    )
    msg = FunctionCallCancelled.model_validate_json(raw)
    assert filter_cancelled(msg, raw, set()) == ([], raw)
    ours, rest = filter_cancelled(msg, raw, {"1"})
    assert ours == ["1"]
    assert [f["id"] for f in json.loads(rest)["functions"]] == ["2"]
    assert filter_cancelled(msg, raw, {"1", "2"}) == (["1", "2"], None)


def test_response_frame():
    frame = json.loads(response_frame(FunctionCall(id="c1", name="get_weather"), '{"t":1}'))
    assert frame == {"type": "FunctionCallResponse", "id": "c1", "name": "get_weather", "content": '{"t":1}'}


@pytest.mark.parametrize(
    "frame",
    [
        '{"type": "FunctionCallResponse", "id": "a", "id": "b", "content": "x"}',
        '{"type": "Settings", "agent": {"think": {"functions": [{"name": "f", "name": "g"}]}}}',
        '{"type": "X", "type": "Y"}',
    ],
)
def test_frames_with_duplicate_keys_are_refused(frame: str) -> None:
    with pytest.raises(ProtocolError, match="duplicate key") as caught:
        parse_json_object(frame)
    assert caught.value.code == ErrorCode.INVALID_MESSAGE


def test_a_long_duplicate_key_is_not_echoed_whole() -> None:
    key = "k" * 10_000
    with pytest.raises(ProtocolError) as caught:
        parse_json_object(f'{{"type": "X", "{key}": 1, "{key}": 2}}')
    assert len(caught.value.description) < 100


def test_a_providers_frame_is_read_as_python_reads_it() -> None:
    """The provider is the authority on its own calls: its frames are not refused for a repeated key."""
    assert parse_json_object('{"type": "X", "a": 1, "a": 2}', duplicate_keys=True) == {"type": "X", "a": 2}
