"""The ``@function`` decorator and the registry of backend functions a worker process can run.

A backend function is an ordinary Python function whose first parameter is a pydantic model of its
arguments. The model is the single source of truth: the worker validates the provider's arguments with it,
and the JSON Schema the provider sees is derived from it, so the two can never disagree.

```python
class WeatherArgs(BaseModel):
    location: str = Field(description="City name")

@function(description="Current weather for a city", timeout=5.0, idempotent=True)
def get_weather(args: WeatherArgs, ctx: CallContext) -> dict: ...
```
"""

from __future__ import annotations

import asyncio
import copy
import importlib
import inspect
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, PydanticUserError

from shared.config import get_config
from shared.envelopes import FunctionSpec
from workers.progress import ProgressReporter
from workers.signature import NoArguments as NoArguments  # the arguments model of a function taking none
from workers.signature import inspect_signature, summary

DEFAULT_FILLER_DELAY: float = FunctionSpec.model_fields["filler_delay"].default

NAME_PATTERN = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
"""What providers (OpenAI, Deepgram) accept as a function name."""


@dataclass
class CallContext:
    """What a function may know about the call it serves, and the worker's own data store."""

    call_id: str
    session_id: str
    deadline: float
    """Unix time (this worker's ``time.time()``) after which nobody waits for the answer: long work can check it
    and stop early. Converted from the job's Redis-time deadline, so it holds even if clocks disagree."""
    worker_id: str
    redis: Any
    """A synchronous ``redis.Redis`` for the function's data (notes, orders...). Never the gateway's view."""
    principal: str = ""
    """Who is calling, as the gateway verified it: a signed token's ``sub`` or a static token's name; ``""``
    when the gateway requires no credentials. Key a caller's data by this, never by an argument the LLM picks."""
    reply_channel: str = ""
    """The gateway's reply channel (where :class:`~shared.envelopes.CallProgress` reports go)."""
    _cancel: threading.Event = field(default_factory=threading.Event, repr=False)
    _progress: ProgressReporter = field(default_factory=ProgressReporter, repr=False)

    def time_left(self) -> float:
        """Seconds until the deadline (0 once past it): e.g. the timeout to give an HTTP request."""
        return max(0.0, self.deadline - time.time())

    @property
    def cancelled(self) -> bool:
        """True once nobody wants the result any more (the provider cancelled the call, its deadline passed, the
        worker is stopping): a blocking function doing long work checks it and returns early."""
        return self._cancel.is_set()

    def progress(self, message: str) -> bool:
        """Tell the user the call is still working ("Still searching…"): a :class:`~shared.envelopes.CallProgress`
        on the gateway's reply channel. Best effort and never raises: False when it was not sent (the call was
        cancelled, another report went out under 0.5 s ago, Redis failed). Redacted, cut to 200 characters.

        It does a Redis round trip: from an ``async def`` function, ``await`` :meth:`aprogress` instead."""
        return self._progress.send(self, message)

    async def aprogress(self, message: str) -> bool:
        """:meth:`progress` for ``async def`` functions: the Redis round trip runs in a thread, off the loop."""
        return await asyncio.to_thread(self.progress, message)

    def cancel(self) -> None:
        """Mark the call cancelled (the worker does this; functions only read :attr:`cancelled`)."""
        self._cancel.set()


class FunctionError(Exception):
    """Raise it from a function to answer the LLM with ``message`` verbatim (e.g. "Unknown city: Xyz").

    Every other exception becomes a generic "failed: internal error": its text may hold secrets or internals.
    """

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass(frozen=True)
class Registered:
    """One registered function: what to call, how to validate its arguments, what to advertise."""

    func: Callable[..., Any]
    args_model: type[BaseModel]
    takes_args: bool
    """False for a function without an arguments parameter (its model is :class:`NoArguments`)."""
    wants_context: bool
    is_async: bool
    spec: FunctionSpec
    context_name: str = ""
    """The parameter that receives the context, for the plain form."""
    keywords: bool = False
    """True for the plain form (typed parameters): the validated model is spread into keyword arguments."""

    @property
    def name(self) -> str:
        return self.spec.name

    def invoke(self, args: BaseModel, ctx: CallContext) -> Any:
        """Call the function with validated ``args`` and ``ctx`` as its signature wants them: its return value,
        or, for an ``async def`` function, the coroutine to await."""
        if self.keywords:
            kwargs = {name: getattr(args, name) for name in type(args).model_fields if self.takes_args}
            if self.wants_context:
                kwargs[self.context_name] = ctx
            return self.func(**kwargs)
        call_args: list[Any] = []
        if self.takes_args:
            call_args.append(args)
        if self.wants_context:
            call_args.append(ctx)
        return self.func(*call_args)


_REGISTRY: dict[str, Registered] = {}


def function(
    *,
    description: str | None = None,
    timeout: float | None = None,
    queue: str = "default",
    idempotent: bool = False,
    side_effects: bool = False,
    name: str | None = None,
    filler: str | None = None,
    filler_delay: float | None = None,
) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Register the decorated function as a backend function; the function itself is returned unchanged.

    ``timeout`` (seconds, default ``FUNCTION_TIMEOUT``) bounds the whole call: the gateway answers with an
    error past it and RQ stops the function. ``name`` defaults to the Python name. ``description`` defaults to
    the docstring up to its ``Args:`` section. ``filler`` (at most 200 characters) is what the agent says when the
    call has not answered after ``filler_delay`` seconds (default 1.5, below ``timeout``).
    """

    def register(func: Callable[..., Any]) -> Callable[..., Any]:
        fname = name or func.__name__
        if not NAME_PATTERN.match(fname):
            raise ValueError(f"function name {fname!r} must match {NAME_PATTERN.pattern}")
        if inspect.isgeneratorfunction(func) or inspect.isasyncgenfunction(func):
            raise TypeError(f"{_qualified(func)}: a generator cannot be a function; return the whole result")
        signature = inspect_signature(func, CallContext)
        function_timeout = timeout if timeout is not None else get_config().function_timeout
        try:
            parameters = json_schema(signature.args_model)
        except PydanticUserError as exc:  # e.g. a Callable parameter: nothing a provider could send
            raise TypeError(f"{_qualified(func)}: its parameters have no JSON Schema ({exc.message})") from exc
        spec = FunctionSpec(
            name=fname,
            description=_description(func, description),
            parameters=parameters,
            queue=queue,
            timeout=function_timeout,
            idempotent=idempotent,
            side_effects=side_effects,
            **_filler(fname, filler, filler_delay, function_timeout),
        )
        existing = _REGISTRY.get(fname)
        if existing is not None and _qualified(existing.func) != _qualified(func):
            raise ValueError(
                f"function {fname!r} is declared twice: in {_qualified(existing.func)} and {_qualified(func)}"
            )
        is_async = inspect.iscoroutinefunction(func)
        _REGISTRY[fname] = Registered(
            func,
            signature.args_model,
            signature.takes_args,
            signature.wants_context,
            is_async,
            spec,
            signature.context_name,
            signature.keywords,
        )
        return func

    return register


def _qualified(func: Callable[..., Any]) -> str:
    """Where a function is defined. Re-registering the same one (a module reload) is not a duplicate."""
    return f"{func.__module__}.{func.__qualname__}"


def _description(func: Callable[..., Any], given: str | None) -> str:
    """``description=`` if given, else the docstring's summary; a function with neither cannot be advertised."""
    text = given if given is not None else summary(func.__doc__)
    if not text.strip():
        raise TypeError(f"{_qualified(func)}: no description: pass description= or give the function a docstring")
    return text


MAX_FILLER = 200
"""Characters of a filler line: a sentence the agent says while waiting, not a speech."""


def _filler(name: str, filler: str | None, delay: float | None, timeout: float) -> dict[str, Any]:
    """The FunctionSpec filler fields, checked: a ValueError naming the function for a filler it cannot say."""
    if filler is None:
        if delay is not None:
            raise ValueError(f"function {name!r}: filler_delay without a filler")
        return {}
    text = filler.strip()
    if not text or len(text) > MAX_FILLER:
        raise ValueError(f"function {name!r}: filler must be 1-{MAX_FILLER} characters, got {len(text)}")
    delay = DEFAULT_FILLER_DELAY if delay is None else delay
    if not 0 < delay < timeout:  # also refuses NaN
        raise ValueError(f"function {name!r}: filler_delay must be above 0 and below its timeout ({timeout:g} s)")
    return {"filler": text, "filler_delay": delay}


def json_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The provider-facing JSON Schema of an arguments model.

    Providers handle ``$ref`` poorly and ``title`` is noise in the prompt, so references are inlined and
    titles dropped; descriptions stay (they tell the LLM what to pass). The top level is always an object.
    """
    schema = model.model_json_schema()
    defs = schema.pop("$defs", {})
    result = _clean(schema, defs, ())
    result["type"] = "object"
    result.setdefault("properties", {})
    return result


_NAMED_SUBSCHEMAS = ("properties", "patternProperties", "dependentSchemas")
"""Keywords whose value maps *names* to schemas: a property called "title" there is data, not a title."""
_DATA_KEYWORDS = ("default", "const", "enum", "examples")
"""Keywords whose value is an instance, copied untouched (a default may well contain a "title" key)."""


def _clean(node: Any, defs: dict[str, Any], resolving: tuple[str, ...]) -> Any:
    if isinstance(node, list):
        return [_clean(item, defs, resolving) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        ref = node["$ref"]
        target = ref.removeprefix("#/$defs/")
        if target in resolving:
            raise TypeError(f"recursive model {target!r} cannot be inlined into a provider schema")
        if target not in defs:
            raise TypeError(f"unsupported schema reference {ref!r}")
        merged = {**copy.deepcopy(defs[target]), **{k: v for k, v in node.items() if k != "$ref"}}
        return _clean(merged, defs, (*resolving, target))
    if len(node.get("allOf", ())) == 1:  # pydantic's way to attach a description to a reference
        node = {**node["allOf"][0], **{k: v for k, v in node.items() if k != "allOf"}}
        return _clean(node, defs, resolving)
    cleaned: dict[str, Any] = {}
    for key, value in node.items():
        if (key == "title" and isinstance(value, str)) or key == "discriminator":
            continue  # discriminator is an OpenAPI keyword whose mapping points into the removed $defs
        if key in _DATA_KEYWORDS:
            cleaned[key] = value
        elif key in _NAMED_SUBSCHEMAS and isinstance(value, dict):
            cleaned[key] = {prop: _clean(sub, defs, resolving) for prop, sub in value.items()}
        else:
            cleaned[key] = _clean(value, defs, resolving)
    return cleaned


def registered() -> dict[str, Registered]:
    """Every registered function by name (a copy)."""
    return dict(_REGISTRY)


def get(name: str) -> Registered | None:
    return _REGISTRY.get(name)


def catalog(queues: list[str]) -> list[FunctionSpec]:
    """Specs of the functions a worker listening on ``queues`` can run, sorted by name."""
    return [r.spec for _, r in sorted(_REGISTRY.items()) if r.spec.queue in queues]


def load_modules(names: list[str]) -> None:
    """Import the modules that define functions (their decorators register them)."""
    for module in names:
        try:
            importlib.import_module(module)
        except Exception as exc:
            raise ImportError(f"cannot load function module {module!r}: {type(exc).__name__}: {exc}") from exc
