"""The shape of gateway/providers/: one folder per provider behind one interface, chosen by ``PROVIDER``.

A provider folder may import the interface (``base``, and ``connect`` for WebSocket providers), its own folder
and ``shared/``; an import of the session, the dispatcher or another provider would tie the folder to the rest of
the gateway, and adding a provider would no longer be adding a folder.
"""

from __future__ import annotations

import ast
import typing
from pathlib import Path

import pytest

from gateway.providers import ProviderUnavailable, open_provider
from gateway.providers.simulated import SimulatedProvider
from shared.config import Config

PROVIDERS = Path(__file__).resolve().parents[3] / "gateway" / "providers"
INTERFACE = {"gateway.providers.base", "gateway.providers.connect"}
FOLDERS = sorted(p for p in PROVIDERS.iterdir() if (p / "__init__.py").exists())


def imported_modules(path: Path, package: str) -> list[str]:
    """Every module ``path`` imports, anywhere in it; relative imports are resolved against ``package`` (the
    file's ``__package__``)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module) if part)
            # `from gateway import session` imports gateway.session: name each imported name as a module too.
            found += (
                [f"{module}.{alias.name}" for alias in node.names]
                if module in ("gateway", "gateway.providers")
                else [module]
            )
    return found


def forbidden(module: str, own: str) -> bool:
    inside_gateway = module == "gateway" or module.startswith("gateway.")
    allowed = module in INTERFACE or module == own or module.startswith(own + ".")
    return inside_gateway and not allowed


def test_there_is_a_folder_per_provider_choice():
    choices = set(typing.get_args(Config.model_fields["provider"].annotation)) - {"auto"}
    assert {folder.name for folder in FOLDERS} == choices


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_a_provider_imports_only_the_interface_its_folder_and_shared(folder: Path):
    own = f"gateway.providers.{folder.name}"
    bad = []
    for path in sorted(folder.rglob("*.py")):
        package = ".".join([own, *path.parent.relative_to(folder).parts])
        bad += [f"{path.name}: {m}" for m in imported_modules(path, package) if forbidden(m, own)]
    assert bad == []


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_each_provider_package_opens_from_the_config(folder: Path):
    tree = ast.parse((folder / "__init__.py").read_text())
    assert "open_from_config" in {n.name for n in tree.body if isinstance(n, ast.AsyncFunctionDef)}


def test_the_interface_imports_nothing_else_of_the_gateway():
    for name in ("base", "connect"):
        modules = imported_modules(PROVIDERS / f"{name}.py", "gateway.providers")
        assert [m for m in modules if forbidden(m, "gateway.providers.base")] == []


def test_the_rule_catches_imports_back_into_the_gateway(tmp_path: Path):
    sample = tmp_path / "adapter.py"
    sample.write_text(
        "from gateway.session import Session\nfrom gateway import dispatcher\nfrom .. import open_provider\n"
        "from ..simulated import agent\nfrom ..base import Frame\nfrom . import bridge\nimport shared.config\n"
    )
    modules = imported_modules(sample, "gateway.providers.openai")
    assert [m for m in modules if forbidden(m, "gateway.providers.openai")] == [
        "gateway.session",
        "gateway.dispatcher",
        "gateway.providers.open_provider",
        "gateway.providers.simulated",
    ]


async def test_the_factory_opens_the_chosen_provider():
    provider = await open_provider(Config(provider="simulated"))
    assert isinstance(provider, SimulatedProvider)
    await provider.close()
    with pytest.raises(ProviderUnavailable, match="PROVIDER=deepgram needs DEEPGRAM_API_KEY"):
        await open_provider(Config(provider="deepgram", deepgram_api_key=None))


def test_auto_prefers_deepgram_then_openai_then_simulated():
    assert Config(provider="auto", deepgram_api_key="d", openai_api_key="o").resolved_provider() == "deepgram"
    assert Config(provider="auto", deepgram_api_key=None, openai_api_key="o").resolved_provider() == "openai"
    assert Config(provider="auto", deepgram_api_key=None, openai_api_key=None).resolved_provider() == "simulated"


def test_upstream_the_old_name_of_the_setting_is_still_read(monkeypatch: pytest.MonkeyPatch):
    monkeypatch.setenv("UPSTREAM", "openai")
    assert Config(_env_file=None).provider == "openai"
    monkeypatch.setenv("PROVIDER", "deepgram")
    assert Config(_env_file=None).provider == "deepgram"  # the new name wins when both are set
