"""The documentation's examples run, so they cannot rot.

Every fenced block in README.md and docs/*.md is checked by its language:

- ``python``: run as a script in a fresh interpreter against the test gateway (``127.0.0.1:8080`` in the text
  is replaced by the test gateway's address); it must exit 0.
- ``sh``: each line runs in bash in the repository, with the same replacement. ``make run`` and other
  commands that serve until stopped are started, must become ready on their port, then are stopped.
  Two lines are not executed here, each covered elsewhere: ``make test`` (the command running this very test)
  and ``make bench`` (minutes long; ``tests/integration/test_benchmark_harness.py`` runs its smallest case).
- ``json``: every example message or envelope must parse, and validate against its model.
- ``text``: diagrams and file listings; the Procfile shown must be the repository's.

And the configuration table of BACKEND-PROXY.md must list every setting the code reads.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from shared.config import Config
from shared.envelopes import CallJob, CallResult
from shared.protocol import BackendFunctionCall, FunctionCallRequest, FunctionCallResponse, Message
from shared.redis_server import RedisServer, free_port
from tests.support.processes import ROOT, Gateway, http_status, start_server, wait_until

pytestmark = pytest.mark.integration

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
SERVES = re.compile(r"(^|\s)(make run|python -m gateway$|python -m workers$)")
MODELS: dict[str, type[Message]] = {
    "BackendFunctionCall": BackendFunctionCall,
    "FunctionCallRequest": FunctionCallRequest,
    "FunctionCallResponse": FunctionCallResponse,
}


def blocks(language: str) -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for lang, body in FENCE.findall(doc.read_text()):
            if lang == language:
                found.append((f"{doc.name}#{len(found)}", body))
    return found


def ids(items: list[tuple[str, str]]) -> list[str]:
    return [name for name, _ in items]


PYTHON = blocks("python")
SHELL = blocks("sh")
JSON = blocks("json")


def localize(text: str, gateway: Gateway, redis_url: str = "redis://127.0.0.1:6379/0") -> str:
    """Point the examples at the test gateway and the test Redis."""
    return text.replace("127.0.0.1:8080", f"127.0.0.1:{gateway.port}").replace("redis://127.0.0.1:6379/0", redis_url)


def doc_env(gateway: Gateway, redis_url: str, openai_url: str) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    return {
        **os.environ,
        "PATH": f"{venv_bin}:{os.environ.get('PATH', '')}",
        "REDIS_URL": redis_url,
        "TOKEN_SECRET": "docs-test-secret",
        "OPENAI_URL": openai_url,
        "WORKER_MODULES": "workers.examples,tests.support.functions",
    }


@pytest.fixture(scope="module")
def fake_openai(logs_dir) -> str:
    port = free_port()
    args = ["-m", "tests.support.fake_openai", "--port", str(port)]
    proc = start_server(args, logs_dir / "docs-openai.log", f"http://127.0.0.1:{port}/", "the fake OpenAI server")
    yield f"ws://127.0.0.1:{port}/v1/realtime"
    proc.stop()


@pytest.mark.parametrize(("name", "code"), PYTHON, ids=ids(PYTHON))
def test_python_examples_run(name: str, code: str, gateway: Gateway, redis_server, fake_openai: str):
    result = subprocess.run(
        [sys.executable, "-c", localize(code, gateway)],
        cwd=ROOT,
        env=doc_env(gateway, redis_server.url, fake_openai),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"


@pytest.mark.parametrize(("name", "script"), SHELL, ids=ids(SHELL))
def test_shell_examples_run(name: str, script: str, gateway: Gateway, redis_server, fake_openai: str):
    env = doc_env(gateway, redis_server.url, fake_openai)
    with RedisServer() as scratch:  # a Redis named in a command gets an empty one of its own (no workers on it)
        run_lines(name, localize(script, gateway, scratch.url), env)


def run_lines(name: str, script: str, env: dict[str, str]) -> None:
    for line in script.splitlines():
        command = line.split(" #", 1)[0].strip()
        if not command or command == "make test" or command.startswith("make bench"):
            continue
        if SERVES.search(command):
            run_until_ready(command, env)
            continue
        result = subprocess.run(["bash", "-c", command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=90)
        assert result.returncode == 0, f"{name}: `{command}` failed:\n{result.stdout}\n{result.stderr}"


def run_until_ready(command: str, env: dict[str, str]) -> None:
    """Start a command that serves until stopped; it must become ready on its port, then it is stopped."""
    port = free_port()
    proc = subprocess.Popen(
        ["bash", "-c", command],
        cwd=ROOT,
        env={**env, "PORT": str(port)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        probe = "/readyz" if "gateway" in command or "make run" in command else None
        if probe:
            wait_until(lambda: http_status(f"http://127.0.0.1:{port}{probe}") == 200, 60, f"`{command}` to be ready")
        else:
            wait_until(lambda: proc.poll() is None, 3, f"`{command}` to start")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)


def json_documents(body: str) -> list[object]:
    try:
        return [json.loads(body)]
    except ValueError:
        return [json.loads(line) for line in body.splitlines() if line.strip()]


@pytest.mark.parametrize(("name", "body"), JSON, ids=ids(JSON))
def test_json_examples_match_the_models(name: str, body: str):
    for document in json_documents(body):
        assert isinstance(document, dict), name
        if document.get("type") in MODELS:
            MODELS[document["type"]].model_validate(document)
        elif "reply_channel" in document:
            CallJob.model_validate(document)
        elif "ok" in document and "call_id" in document:
            CallResult.model_validate(document)


def test_procfile_shown_is_the_real_one():
    shown = [body for lang, body in FENCE.findall((ROOT / "docs" / "DEPLOY.md").read_text()) if "web:" in body]
    assert shown == [(ROOT / "Procfile").read_text()]


def test_every_setting_is_documented():
    table = (ROOT / "docs" / "BACKEND-PROXY.md").read_text()
    missing = [name.upper() for name in Config.model_fields if f"`{name.upper()}`" not in table]
    assert missing == []


def test_architecture_names_every_product_module():
    """docs/ARCHITECTURE.md matches the tree: every module of the product is named, by its path or, in a
    folder's row, by its file name."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    modules = [p.relative_to(ROOT) for d in ("gateway", "workers", "shared") for p in (ROOT / d).rglob("*.py")]
    unnamed = [
        str(m)
        for m in modules
        if m.name != "__init__.py" and f"`{m}`" not in text and not (f"`{m.parent}/`" in text and f"`{m.name}`" in text)
    ]
    assert not unnamed, f"modules docs/ARCHITECTURE.md does not name: {unnamed}"
