"""What a user installs: the wheel's contents and the ``vfg`` command's help, which starts nothing."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
import zipfile

import pytest

from shared.cli import COMMANDS
from shared.redis_server import free_port
from tests.support.processes import ROOT, Gateway

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> zipfile.ZipFile:
    source = tmp_path_factory.mktemp("source")  # a copy: building writes build/ and *.egg-info beside the sources
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source)
    for package in ("gateway", "shared", "workers"):
        shutil.copytree(ROOT / package, source / package, ignore=shutil.ignore_patterns("__pycache__"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation", "-w", str(out), "."],
        cwd=source, check=True, capture_output=True, timeout=300,
    )  # fmt: skip
    [built] = out.glob("*.whl")
    return zipfile.ZipFile(built)


def test_the_wheel_carries_the_test_page_and_type_markers(wheel: zipfile.ZipFile):
    names = set(wheel.namelist())
    page = {p.relative_to(ROOT).as_posix() for p in (ROOT / "gateway" / "static").iterdir()}
    assert "gateway/static/index.html" in page and page <= names
    assert {"gateway/py.typed", "shared/py.typed", "workers/py.typed"} <= names


def test_the_wheel_carries_the_licence_and_the_command(wheel: zipfile.ZipFile):
    dist_info = next(n.split("/")[0] for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    assert wheel.read(f"{dist_info}/LICENSE") == (ROOT / "LICENSE").read_bytes()
    assert "MIT License" in wheel.read(f"{dist_info}/METADATA").decode()
    entry_points = wheel.read(f"{dist_info}/entry_points.txt").decode()
    assert "vfg = shared.cli:main" in entry_points


@pytest.mark.parametrize("args", [["--help"], *[[name, "--help"] for name in COMMANDS]], ids=" ".join)
def test_help_starts_nothing(args: list[str]):
    # No REDIS_URL answers at port 1: a command that started anything would wait for it, or fail.
    env = {"PATH": "/usr/bin:/bin", "REDIS_URL": "redis://127.0.0.1:1/0", "PORT": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "shared.cli", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=20
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("usage:")


@pytest.mark.parametrize(
    "command",
    [["shared.cli", "gateway"], ["shared.cli", "workers"], ["gateway"], ["workers"],
     ["shared.cli", "token", "--sub", "a"], ["gateway.auth", "mint", "--sub", "a"]],
)  # fmt: skip  # the Procfile's forms (python -m gateway / workers) too
def test_bad_settings_are_one_clear_line(command: list[str]):
    env = {"PATH": "/usr/bin:/bin", "REDIS_TLS_VERIFY": "sometimes", "WORKER_CONCURRENCY": "0"}
    result = subprocess.run(
        [sys.executable, "-m", *command], cwd=ROOT, env=env, capture_output=True, text=True, timeout=20
    )
    assert result.returncode == 2
    assert "invalid settings" in result.stderr and "redis_tls_verify" in result.stderr
    assert "worker_concurrency" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_function_module_is_reported_without_redis():
    """The workers load their modules before waiting for Redis: a typo shows at once, not as "waiting"."""
    env = {"PATH": "/usr/bin:/bin", "REDIS_URL": "redis://127.0.0.1:1/0", "WORKER_MODULES": "no_such_module_x"}
    result = subprocess.run(
        [sys.executable, "-m", "workers"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=20
    )
    assert result.returncode == 2
    assert "no_such_module_x" in result.stderr and "Traceback" not in result.stderr


def test_old_module_forms_still_answer_help():
    for module in ("workers", "gateway.client"):
        result = subprocess.run([sys.executable, "-m", module, "--help"], cwd=ROOT, capture_output=True, timeout=20)
        assert result.returncode == 0, module


def test_the_image_health_check_asks_healthz(gateway: Gateway):
    """The Dockerfile's HEALTHCHECK command, run as Docker would: 0 while a gateway answers, not 0 without one."""
    match = re.search(r"^HEALTHCHECK .*\\\n\s+CMD (.+)$", (ROOT / "Dockerfile").read_text(), re.M)
    assert match
    command = json.loads(match.group(1))
    command[0] = sys.executable  # the image's python

    def check(port: int) -> int:
        return subprocess.run(command, env={"PORT": str(port)}, capture_output=True, timeout=10).returncode

    assert check(gateway.port) == 0
    assert check(free_port()) != 0
