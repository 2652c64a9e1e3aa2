"""The deploy kit agrees with itself and with the code: compose.yaml, the Dockerfile, the buildpack files and the
examples of docs/DEPLOY.md. ``docker compose config`` validates compose.yaml where a working Docker exists."""

from __future__ import annotations

import re
import shutil
import subprocess
import tomllib

import pytest
import redis
import yaml
from rq import Queue

from shared import keys
from shared.config import Config
from tests.support.processes import ROOT

DEPLOY = (ROOT / "docs" / "DEPLOY.md").read_text()
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)
DRAIN_DEFAULT = 20.0
"""The gateway's drain of calls in flight (DRAIN_TIMEOUT) by default: every grace period must exceed it."""


def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def seconds(value: str) -> float:
    return float(value.removesuffix("s"))


def drain_default() -> float:
    field = Config.model_fields.get("drain_timeout")
    return float(field.default) if field is not None else DRAIN_DEFAULT


def test_compose_runs_redis_gateway_and_scalable_workers():
    services = compose()["services"]
    redis_service, gateway, worker = services["redis"], services["gateway"], services["worker"]
    assert redis_service["image"].split(":")[0] in {"valkey/valkey", "redis"}
    assert redis_service["healthcheck"]["test"]
    for service in (gateway, worker):
        assert service["depends_on"]["redis"]["condition"] == "service_healthy"
        assert service["environment"]["REDIS_URL"] == "redis://redis:6379/0"
        assert seconds(service["stop_grace_period"]) > drain_default()
    assert gateway["command"] == ["vfg", "gateway"] and worker["command"] == ["vfg", "workers"]
    assert gateway["ports"] == ["127.0.0.1:8080:8080"]
    assert "ports" not in worker and "container_name" not in worker  # --scale worker=N needs neither
    assert worker["healthcheck"] == {"disable": True}
    assert not {"WEATHER_API_KEY", "WORKER_MODULES"} & set(gateway["environment"])  # worker secrets stay apart


def test_compose_config_is_valid_for_docker():
    docker = shutil.which("docker")
    if not docker or subprocess.run([docker, "compose", "version"], capture_output=True).returncode != 0:
        pytest.skip("no working `docker compose` here (the parse test above still ran)")
    result = subprocess.run([docker, "compose", "config", "--quiet"], cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_dockerfile_is_small_non_root_and_checked():
    text = (ROOT / "Dockerfile").read_text()
    stages = re.findall(r"^FROM (\S+)", text, re.M)
    assert stages and all(image == f"python:{python_version()}-slim" for image in stages)
    assert re.search(r"^USER (?!root|0\b)\S+", text, re.M)
    assert re.search(r"^EXPOSE 8080$", text, re.M)
    check = re.search(r"^HEALTHCHECK .*\\\n\s+CMD (.+)$", text, re.M)
    assert check and "urllib" in check.group(1) and "/healthz" in check.group(1)  # no curl in a slim image
    assert re.search(r'^CMD \["vfg", "gateway"\]$', text, re.M)
    for source in re.findall(r"^COPY (?!--from)(.+) \S+$", text, re.M):
        for path in source.split():
            assert (ROOT / path).exists(), f"Dockerfile copies {path}, which does not exist"
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "tests"} <= set(ignored)


def python_version() -> str:
    return (ROOT / ".python-version").read_text().strip()


def test_buildpack_files_follow_pyproject():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert project["requires-python"] == f">={python_version()}"
    requirements = [line for line in (ROOT / "requirements.txt").read_text().splitlines() if not line.startswith("#")]
    assert requirements == ["."]  # the project itself: its dependencies are pyproject's, never a second list
    procfile = dict(line.split(": ", 1) for line in (ROOT / "Procfile").read_text().splitlines() if line)
    assert set(procfile) == {"web", "worker"}


def test_deploy_examples_parse_and_name_real_things():
    for lang, body in FENCE.findall(DEPLOY):
        if lang == "yaml":
            assert all(isinstance(doc, dict) for doc in yaml.safe_load_all(body))
        elif lang == "toml":
            fly = tomllib.loads(body)
            assert set(fly["processes"].values()) == {"vfg gateway", "vfg workers"}
            assert fly["kill_timeout"] > drain_default()
    kubernetes = [doc for lang, body in FENCE.findall(DEPLOY) if lang == "yaml" for doc in yaml.safe_load_all(body)]
    deployments = [doc for doc in kubernetes if doc.get("kind") == "Deployment"]
    assert len(deployments) == 2
    for deployment in deployments:
        assert deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"] > drain_default()
    [gateway] = [
        d["spec"]["template"]["spec"]["containers"][0] for d in deployments if "gateway" in d["metadata"]["name"]
    ]
    assert gateway["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert gateway["readinessProbe"]["httpGet"]["path"] == "/readyz"
    [scaler] = [doc for doc in kubernetes if doc.get("kind") == "ScaledObject"]
    real_key = Queue(keys.queue_name("default"), connection=redis.Redis()).key
    assert scaler["spec"]["triggers"][0]["metadata"]["listName"] == real_key


def test_files_deploy_md_names_exist():
    named = set(
        re.findall(
            r"`((?:\.?[\w-]+/)*\.?[\w-]+\.(?:yaml|toml|txt|md|py)|Dockerfile|Procfile|\.python-version)`", DEPLOY
        )
    )
    named -= {"render.yaml"}  # the Blueprint a user writes in their own repository, shown in full
    missing = sorted(name for name in named if not (ROOT / name).exists() and not (ROOT / "docs" / name).exists())
    assert named and missing == []
