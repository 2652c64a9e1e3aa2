"""The plain function form (typed parameters), descriptions from docstrings and Annotated, and filler declarations."""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Callable
from typing import Annotated, Any, Literal

import fakeredis
import pytest
from pydantic import BaseModel, Field

from shared.envelopes import CallJob

# The autouse fixture that registers each test's functions into a copy of the registry, and a nested model.
from tests.unit.test_registry import Address, isolated_registry  # noqa: F401
from workers import CallContext, function, registry
from workers.execute import execute
from workers.signature import parameter_docs, summary


class SearchArgs(BaseModel):
    query: str = Field(min_length=1)
    limit: int = Field(default=3, ge=1)


def schema(name: str) -> dict[str, Any]:
    entry = registry.get(name)
    assert entry is not None
    return entry.spec.parameters


def run(name: str, arguments: object, principal: str = "") -> tuple[bool, Any]:
    job = CallJob(
        call_id="c1",
        name=name,
        arguments=arguments if isinstance(arguments, str) else json.dumps(arguments),
        reply_channel="reply",
        deadline=2e9,
        principal=principal,
    )
    result = execute(job, fakeredis.FakeRedis(server=fakeredis.FakeServer()), "w1")
    return result.ok, (json.loads(result.content) if result.ok else result.error)


# --- schemas ----------------------------------------------------------------------------------------------


def test_plain_form_schema_required_optional_descriptions_and_enum():
    @function()
    async def weather(
        city: Annotated[str, "City name"],
        units: Literal["c", "f"] = "c",
        *,
        ctx: CallContext,
        days: Annotated[int, Field(ge=1, description="Days ahead")] = 1,
        where: Address | None = None,
    ) -> dict:
        """Current weather for a city.

        Spoken briefly.

        Args:
            city: loses: Annotated wins.
            units: c for Celsius,
                f for Fahrenheit.
            days: loses too.
            where: Where exactly.

        Returns:
            The report.
        """
        return {}

    entry = registry.get("weather")
    assert entry is not None and entry.is_async and entry.wants_context and entry.keywords
    assert entry.spec.description == "Current weather for a city.\n\nSpoken briefly."
    props = schema("weather")["properties"]
    assert schema("weather")["required"] == ["city"]
    assert set(props) == {"city", "units", "days", "where"}  # ctx is not an argument
    assert props["city"] == {"type": "string", "description": "City name"}
    units = {"type": "string", "enum": ["c", "f"], "default": "c", "description": "c for Celsius, f for Fahrenheit."}
    assert props["units"] == units
    assert props["days"] == {"type": "integer", "minimum": 1, "default": 1, "description": "Days ahead"}
    assert props["where"]["description"] == "Where exactly."
    nested = next(option for option in props["where"]["anyOf"] if option.get("type") == "object")
    assert nested["properties"]["street"]["description"] == "Street and number"
    assert nested["required"] == ["street", "city"]


def test_description_argument_wins_over_the_docstring():
    @function(description="Given")
    def described(x: int) -> int:
        """From the docstring."""
        return x

    entry = registry.get("described")
    assert entry is not None and entry.spec.description == "Given"


NUMPY_DOC = """Search things.

    Parameters
    ----------
    q : str
        The query
        text.
    n : int
        How many.

    Returns
    -------
    list
    """

REST_DOC = """Search things.

    :param q: The query
        text.
    :param int n: How many.
    :returns: list
    """


@pytest.mark.parametrize("doc", [NUMPY_DOC, REST_DOC], ids=["numpy", "rest"])
def test_numpy_and_rest_docstrings(doc: str):
    assert summary(doc) == "Search things."
    assert parameter_docs(doc) == {"q": "The query text.", "n": "How many."}


def test_nested_model_parameter_after_a_plain_one():
    @function(description="Deliver a parcel")
    def deliver(parcel_id: str, to: Address) -> dict:
        return {"sent": f"{parcel_id} to {to.city}", "model": type(to).__name__}

    assert schema("deliver")["required"] == ["parcel_id", "to"]
    assert schema("deliver")["properties"]["to"]["properties"]["city"] == {"type": "string"}
    arguments = {"parcel_id": "p1", "to": {"street": "1 Main St", "city": "Oslo"}}
    assert run("deliver", arguments) == (True, {"sent": "p1 to Oslo", "model": "Address"})


# --- validation and invocation ----------------------------------------------------------------------------


def test_validation_errors_have_the_shape_of_the_model_form():
    @function(description="model form")
    def search_model(args: SearchArgs) -> int:
        return args.limit

    @function(description="plain form")
    def search_plain(query: Annotated[str, Field(min_length=1)], limit: Annotated[int, Field(ge=1)] = 3) -> int:
        return limit

    for arguments in ({}, {"query": "", "limit": 0}, {"query": "x", "limit": "many"}, "[1]", "not json"):
        ok_model, error_model = run("search_model", arguments)
        ok_plain, error_plain = run("search_plain", arguments)
        assert not ok_model and not ok_plain
        assert error_plain == error_model.replace("search_model", "search_plain")
    # Extra keys are ignored in both forms.
    assert run("search_model", {"query": "q", "extra": 1}) == run("search_plain", {"query": "q", "extra": 1})


def test_invoke_spreads_keyword_arguments_and_passes_the_context_anywhere():
    seen: dict[str, Any] = {}

    @function(description="ctx first")
    def ctx_first(ctx: CallContext, a: int, b: str = "x") -> dict:
        seen.update(ctx=ctx, a=a, b=b)
        return {"a": a, "b": b, "who": ctx.principal}

    @function(description="async, keyword-only ctx")
    async def async_ctx(a: int, *, ctx: CallContext) -> dict:
        await asyncio.sleep(0)
        return {"a": a, "call": ctx.call_id}

    assert run("ctx_first", {"a": 2}, principal="alice") == (True, {"a": 2, "b": "x", "who": "alice"})
    assert isinstance(seen["ctx"], CallContext)
    assert run("async_ctx", {"a": "5"}) == (True, {"a": 5, "call": "c1"})


def test_model_form_and_no_argument_forms_are_unchanged():
    @function(description="model")
    def by_model(args: SearchArgs, ctx: CallContext) -> dict:
        return {"query": args.query, "ctx": isinstance(ctx, CallContext)}

    entry = registry.get("by_model")
    assert entry is not None and not entry.keywords and entry.args_model is SearchArgs
    assert run("by_model", {"query": "q"}) == (True, {"query": "q", "ctx": True})

    @function(description="ctx only, any name")
    def only_ctx(context: CallContext) -> dict:
        return {"worker": context.worker_id}

    assert run("only_ctx", {}) == (True, {"worker": "w1"})


# --- decoration errors ------------------------------------------------------------------------------------


def no_doc(x: int) -> None: ...


def unannotated(x, y: int = 1) -> None:  # type: ignore[no-untyped-def]
    """Doc."""


def variadic(x: int, *rest: int) -> None:
    """Doc."""


def keywords(x: int, **more: int) -> None:
    """Doc."""


def shadowing(json: str) -> None:
    """A parameter named like a BaseModel attribute."""


def private(_secret: str) -> None:
    """Doc."""


def two_contexts(a: CallContext, b: CallContext) -> None:
    """Doc."""


@pytest.mark.parametrize(
    ("func", "message"),
    [
        (no_doc, "no_doc: no description"),
        (unannotated, "'x' has no annotation"),
        (variadic, "'rest'"),
        (keywords, "'more'"),
        (shadowing, "'json' collides"),
        (private, "'_secret' collides"),
        (two_contexts, "more than one CallContext"),
    ],
)
def test_decoration_errors_name_the_function_and_parameter(func: Any, message: str):
    with pytest.raises(TypeError, match=message):
        function()(func)
    assert registry.get(func.__name__) is None


# --- fillers ----------------------------------------------------------------------------------------------


def test_filler_is_declared_in_the_spec():
    @function(description="slow", timeout=5, filler="  One moment while I look that up. ", filler_delay=2)
    def slow(x: int) -> int:
        return x

    entry = registry.get("slow")
    assert entry is not None
    assert (entry.spec.filler, entry.spec.filler_delay) == ("One moment while I look that up.", 2)
    fast = function(description="fast", name="fast")(slow)
    assert fast is slow and registry.get("fast").spec.filler is None  # type: ignore[union-attr]


@pytest.mark.parametrize(
    ("filler", "delay", "message"),
    [
        ("   ", None, "1-200 characters"),
        ("x" * 201, None, "1-200 characters"),
        ("Wait.", 0, "below its timeout"),
        ("Wait.", -1, "below its timeout"),
        ("Wait.", 4, "below its timeout"),
        ("Wait.", 9, "below its timeout"),
        ("Wait.", math.nan, "below its timeout"),
        (None, 1.0, "without a filler"),
    ],
)
def test_bad_fillers_are_refused(filler: str | None, delay: float | None, message: str):
    with pytest.raises(ValueError, match=message):

        @function(description="x", timeout=4, filler=filler, filler_delay=delay)
        def refused(x: int) -> None: ...

    assert registry.get("refused") is None


def test_generators_and_unschematic_parameters_are_refused_at_decoration() -> None:
    with pytest.raises(TypeError, match="generator"):

        @function(description="Streams")
        async def streams(city: str):  # type: ignore[no-untyped-def]
            yield city

    with pytest.raises(TypeError, match="callback: its parameters have no JSON Schema"):

        @function(description="Takes a callback")
        def callback(fn: Callable[[int], int]) -> int:
            return fn(1)
