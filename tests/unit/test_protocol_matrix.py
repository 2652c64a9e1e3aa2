"""docs/PROTOCOL-MATRIX.md has a row for every message type the models know, and names tests that exist."""

from __future__ import annotations

import ast
import re
from functools import cache
from pathlib import Path

from gateway import conversation
from gateway.providers.openai import bridge
from shared import protocol

ROOT = Path(__file__).resolve().parents[2]
MATRIX = ROOT / "docs" / "PROTOCOL-MATRIX.md"
ABBREVIATIONS = {
    "conversation": "tests/unit/test_conversation.py",
    "fidelity": "tests/unit/test_protocol_fidelity.py",
    "bridge": "tests/unit/providers/test_openai_bridge.py",
    "translate": "tests/unit/providers/test_openai_translate.py",
}

# The message lists of the protocol reference (PROTOCOL.md §1 and §2), which no model of ours holds whole.
DEEPGRAM_CLIENT = "Settings KeepAlive UpdatePrompt UpdateSpeak UpdateThink InjectUserMessage InjectAgentMessage"
DEEPGRAM_SERVER = (
    "Welcome SettingsApplied ConversationText UserStartedSpeaking AgentThinking FunctionCallRequest "
    "FunctionCallCancelled AgentStartedSpeaking AgentAudioDone PromptUpdated SpeakUpdated InjectionRefused "
    "History Error Warning FunctionCallResponse"
)
OPENAI_REFERENCE = (
    "session.update session.updated input_audio_buffer.append response.output_audio.delta "
    "response.output_audio_transcript.delta response.output_audio_transcript.done conversation.item.create "
    "response.create response.created response.output_item.added response.function_call_arguments.delta "
    "response.function_call_arguments.done response.output_item.done response.done "
    "input_audio_buffer.speech_started conversation.item.truncate error"
)
EVENT = re.compile(r'"([a-z_]+(?:\.[a-z_]+)+)"')


def component_types() -> set[str]:
    """Every component message type: the models, the core's and the OpenAI bridge's handler tables, the reference."""
    models = {
        cls.model_fields["type"].default
        for cls in vars(protocol).values()
        if isinstance(cls, type) and issubclass(cls, protocol.Message) and cls is not protocol.Message
    }
    handled = {*conversation._CLIENT_HANDLERS, *conversation._PROVIDER_HANDLERS, *bridge._COMPONENT_HANDLERS}
    return models | handled | set(DEEPGRAM_CLIENT.split()) | set(DEEPGRAM_SERVER.split())


def openai_events() -> set[str]:
    """Every OpenAI event the adapter's code names (handled, ignored or sent), and the reference's."""
    named = {e for path in (ROOT / "gateway/providers/openai").glob("*.py") for e in EVENT.findall(path.read_text())}
    return named | set(bridge._PROVIDER_HANDLERS) | set(OPENAI_REFERENCE.split())


def rows(section: str) -> list[tuple[set[str], list[str]]]:
    """(names of the first cell, tests of the last cell) of each row of a section's table."""
    text = MATRIX.read_text().split(f"## {section}\n", 1)[1].split("\n## ", 1)[0]
    found = []
    for line in text.splitlines():
        if line.startswith("| `"):
            cells = line.strip("|").split(" | ")
            found.append((set(re.findall(r"`([^`]+)`", cells[0])), re.findall(r"`([^`]+::\w+)`", cells[-1])))
    return found


@cache
def functions_in(path: str) -> frozenset[str]:
    tree = ast.parse((ROOT / path).read_text())
    return frozenset(n.name for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef))


def test_every_component_message_has_a_row() -> None:
    listed = set().union(*(names for names, _ in rows("Component protocol")))
    assert component_types() - listed == set()


def test_every_openai_event_has_a_row() -> None:
    listed = set().union(*(names for names, _ in rows("OpenAI Realtime events")))
    assert openai_events() - listed == set()


def test_every_row_names_tests_that_exist() -> None:
    missing = []
    for section in ("Component protocol", "OpenAI Realtime events"):
        for names, tests in rows(section):
            assert tests, f"row {sorted(names)} names no test"
            for test in tests:
                path, name = test.split("::")
                if name not in functions_in(ABBREVIATIONS.get(path, path)):
                    missing.append(test)
    assert missing == []
