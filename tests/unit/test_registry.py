"""The @function registry: signatures, the provider-facing JSON Schema, duplicates, catalogs, module loading."""

from __future__ import annotations

from typing import Literal

import pytest
from pydantic import BaseModel, Field

from workers import CallContext, function, registry


@pytest.fixture(autouse=True)
def isolated_registry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test registers into a copy, so test functions never leak into other tests' catalogs."""
    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))


class Address(BaseModel):
    street: str = Field(description="Street and number")
    city: str


class Tag(BaseModel):
    label: str


class Order(BaseModel):
    """An order (the model docstring becomes a description, which is fine)."""

    title: str = Field(description="A field that happens to be called title")
    address: Address = Field(description="Where to deliver")
    tags: list[Tag] = []
    speed: Literal["slow", "fast"] = "slow"
    meta: dict[str, str] = Field(default={"title": "kept: a default is data"})
    backup: Address | None = None


class Empty(BaseModel):
    pass


class Node(BaseModel):
    children: list[Node] = []


def walk(node: object):  # type: ignore[no-untyped-def]
    """Every (keyword, value) pair of a schema tree, not descending into default values (they are data)."""
    if isinstance(node, dict):
        for key, value in node.items():
            yield key, value
            if key != "default":
                yield from walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from walk(item)


def test_schema_inlines_refs_and_drops_titles():
    schema = registry.json_schema(Order)
    found = [key for key, _ in walk(schema)]
    assert "$ref" not in found and "$defs" not in found and "allOf" not in found
    assert not any(key == "title" and isinstance(value, str) for key, value in walk(schema))
    assert schema["type"] == "object"
    props = schema["properties"]
    assert props["title"] == {"type": "string", "description": "A field that happens to be called title"}
    assert props["address"]["description"] == "Where to deliver"
    assert props["address"]["properties"]["street"]["description"] == "Street and number"
    assert props["address"]["required"] == ["street", "city"]
    assert props["tags"]["items"]["properties"]["label"] == {"type": "string"}
    assert props["speed"]["enum"] == ["slow", "fast"]
    assert props["meta"]["default"] == {"title": "kept: a default is data"}
    assert {"type": "null"} in props["backup"]["anyOf"]
    assert set(schema["required"]) == {"title", "address"}


def test_schema_of_empty_model_is_an_object():
    assert registry.json_schema(Empty) == {"type": "object", "properties": {}}


def test_recursive_model_is_refused_at_registration():
    with pytest.raises(TypeError, match="recursive"):

        @function(description="tree")
        def tree(args: Node) -> None: ...


def test_registration_records_spec_and_signature():
    @function(description="Place an order", timeout=4, queue="orders", side_effects=True, name="place-order")
    def place(args: Order, ctx: CallContext) -> dict:
        return {}

    entry = registry.get("place-order")
    assert entry is not None
    assert entry.func is place and entry.args_model is Order
    assert entry.takes_args and entry.wants_context and not entry.is_async
    spec = entry.spec
    assert (spec.name, spec.description, spec.queue, spec.timeout) == ("place-order", "Place an order", "orders", 4)
    assert spec.side_effects and not spec.idempotent
    assert spec.parameters == registry.json_schema(Order)


def test_function_without_arguments_or_with_context_only():
    @function(description="no args")
    def ping() -> str:
        return "pong"

    @function(description="ctx only")
    async def whoami(ctx: CallContext) -> str:
        return ctx.worker_id

    ping_entry, who_entry = registry.get("ping"), registry.get("whoami")
    assert ping_entry and not ping_entry.takes_args and not ping_entry.wants_context
    assert ping_entry.spec.parameters == {"type": "object", "properties": {}}
    assert who_entry and who_entry.wants_context and not who_entry.takes_args and who_entry.is_async


def test_default_timeout_comes_from_config():
    @function(description="x")
    def untimed(args: Empty) -> None: ...

    entry = registry.get("untimed")
    assert entry is not None
    assert entry.spec.timeout == registry.get_config().function_timeout


def test_duplicate_name_raises():
    @function(description="first", name="same")
    def first(args: Empty) -> None: ...

    with pytest.raises(ValueError, match="declared twice"):

        @function(description="second", name="same")
        def second(args: Empty) -> None: ...


def test_registering_the_same_function_again_is_not_a_duplicate():
    """A module reload re-runs the decorator on the same function: that must not break the worker."""

    def again(args: Empty) -> None: ...

    function(description="v1")(again)
    function(description="v2")(again)
    entry = registry.get("again")
    assert entry is not None and entry.spec.description == "v2"


@pytest.mark.parametrize("bad_name", ["has space", "x" * 65, "dot.ted", ""])
def test_invalid_names_are_refused(bad_name: str):
    with pytest.raises(ValueError, match="must match"):
        function(description="x", name=bad_name)(lambda args: None)


def test_bad_signatures_are_refused():
    with pytest.raises(TypeError, match="pydantic model"):

        @function(description="x")
        def untyped(args) -> None: ...  # type: ignore[no-untyped-def]

    with pytest.raises(TypeError, match="pydantic model"):

        @function(description="x")
        def context_first(ctx: CallContext, args: Empty) -> None: ...

    with pytest.raises(TypeError, match="3 parameters"):

        @function(description="x")
        def too_many(args: Empty, ctx: CallContext, extra: int) -> None: ...


def test_catalog_filters_by_queue():
    @function(description="a", queue="fast")
    def on_fast(args: Empty) -> None: ...

    @function(description="b", queue="slow")
    def on_slow(args: Empty) -> None: ...

    fast = {spec.name for spec in registry.catalog(["fast"])}
    assert "on_fast" in fast and "on_slow" not in fast
    both = {spec.name for spec in registry.catalog(["fast", "slow"])}
    assert {"on_fast", "on_slow"} <= both
    assert registry.catalog(["nobody-listens-here"]) == []
    names = [spec.name for spec in registry.catalog(["fast", "slow", "default"])]
    assert names == sorted(names)


def test_registered_returns_a_copy():
    snapshot = registry.registered()
    snapshot["intruder"] = None  # type: ignore[assignment]
    assert registry.get("intruder") is None


def test_load_modules_imports_and_registers():
    registry.load_modules(["workers.examples"])
    assert {"get_current_time", "get_weather", "add_note", "list_notes"} <= set(registry.registered())


def test_load_modules_names_the_failing_module():
    with pytest.raises(ImportError, match="no_such_module_xyz"):
        registry.load_modules(["workers.examples", "no_such_module_xyz"])


def test_the_workers_stop_grace_covers_the_longest_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """The supervisor waits for a stopping worker as long as its slowest function may run, plus a margin: a warm
    shutdown lets running calls finish, and killing a worker mid-call would lose its answer."""
    from shared.config import Config
    from workers.__main__ import STOP_MARGIN, stop_grace

    monkeypatch.setattr(registry, "_REGISTRY", {})
    config = Config(worker_queues="default")
    assert stop_grace(config) == 10.0  # nothing registered: the supervisor's usual grace

    @function(description="Slow", timeout=42.0)
    def slow() -> str:
        return "ok"

    assert stop_grace(config) == 42.0 + STOP_MARGIN
