"""Make sure the Chromium the end-to-end tests drive is installed, before ``make test`` runs pytest.

Playwright cannot download a browser of its own here, so the tests use Debian's ``/usr/bin/chromium``. When it
is missing this installs it with apt-get if it can (root, apt-get present), and otherwise stops at once with the
exact command to run, rather than letting eight e2e tests fail minutes later.

Every input can be overridden, so a test can walk each branch without touching the machine:
``CHROMIUM`` (the browser's path, as the e2e tests read it), ``ENSURE_BROWSER_ROOT`` (``1``/``0``: act as root or
not) and ``ENSURE_BROWSER_APT`` (the apt-get to run; empty: apt is not available).
Stdlib only: it runs with the system's Python.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

DEFAULT_BROWSER = "/usr/bin/chromium"
EXIT_MISSING = 2


@dataclass(frozen=True)
class Inputs:
    browser: str
    is_root: bool
    apt_get: str | None


def inputs_from(env: dict[str, str]) -> Inputs:
    """What decides the action: the environment's overrides, else this machine."""
    root = env.get("ENSURE_BROWSER_ROOT")
    apt = env["ENSURE_BROWSER_APT"] if "ENSURE_BROWSER_APT" in env else shutil.which("apt-get")
    return Inputs(
        browser=env.get("CHROMIUM") or DEFAULT_BROWSER,
        is_root=os.geteuid() == 0 if root is None else root == "1",
        apt_get=apt or None,
    )


def install_commands(apt_get: str) -> list[list[str]]:
    return [[apt_get, "update"], [apt_get, "install", "-y", "chromium"]]


def ensure(inputs: Inputs, run: Callable[..., subprocess.CompletedProcess[bytes]] = subprocess.run) -> int:
    """0 when the browser is there (installing it if this can); else prints the command to run and returns 2."""
    if os.access(inputs.browser, os.X_OK):
        return 0
    if inputs.apt_get is None:
        print(
            f"No Chromium at {inputs.browser}, and no apt-get to install it: install Chromium with your package "
            f"manager and set CHROMIUM=/path/to/chromium if it lives elsewhere, then run `make test` again.",
            file=sys.stderr,
        )
        return EXIT_MISSING
    if not inputs.is_root:
        print(
            f"No Chromium at {inputs.browser}. The end-to-end tests need it; install it with:\n"
            "    sudo apt-get update && sudo apt-get install -y chromium\n"
            "then run `make test` again.",
            file=sys.stderr,
        )
        return EXIT_MISSING
    print(f"No Chromium at {inputs.browser}: installing it with apt-get.", flush=True)
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in install_commands(inputs.apt_get):
        if run(command, env=env).returncode != 0:
            print(f"`{' '.join(command)}` failed: install Chromium, then run `make test` again.", file=sys.stderr)
            return EXIT_MISSING
    if not os.access(inputs.browser, os.X_OK):
        print(f"apt-get installed chromium, but {inputs.browser} is still missing.", file=sys.stderr)
        return EXIT_MISSING
    return 0


if __name__ == "__main__":
    sys.exit(ensure(inputs_from(dict(os.environ))))
