"""How ``@function`` reads a function: its arguments model from the signature, its descriptions from the docstring.

Three forms are accepted:

- no arguments: ``def f()`` or ``def f(ctx: CallContext)``;
- the model form: ``def f(args: SomeModel)`` or ``def f(args: SomeModel, ctx: CallContext)``, recognised by a
  bare pydantic model as the first parameter that is not the context;
- the plain form: typed parameters with defaults, ``def f(city: Annotated[str, "City name"], units: str = "c")``,
  turned into a model with :func:`pydantic.create_model` so that validation and the JSON Schema follow the same
  code path as the model form. A parameter annotated ``CallContext``, in any position, receives the context.

Parameter descriptions come from ``Annotated[T, "text"]``, ``Annotated[T, Field(description=...)]`` or the
docstring: Google ``Args:``, NumPy ``Parameters`` and reST ``:param x:``. Annotated wins over the docstring.
"""

from __future__ import annotations

import inspect
import re
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, create_model
from pydantic.fields import FieldInfo


class NoArguments(BaseModel):
    pass  # the arguments model of a function that takes none (no docstring: it would land in the schema)


@dataclass(frozen=True)
class Signature:
    """What a function's signature says about calling it."""

    args_model: type[BaseModel]
    takes_args: bool
    """False for a function without arguments (its model is :class:`NoArguments`)."""
    wants_context: bool
    context_name: str = ""
    """The parameter that receives the context, for the plain form (the model form passes it positionally)."""
    keywords: bool = False
    """True for the plain form: the validated model is spread into keyword arguments."""


_SECTION = re.compile(
    r"^\s*(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments|Returns?|Yields?|Raises|Examples?|"
    r"Notes?|See Also|Attributes|Warnings?)\s*:?\s*$"
)
_NUMPY_RULE = re.compile(r"^\s*-{3,}\s*$")
_REST_FIELD = re.compile(r"^\s*:(param|parameter|arg|argument|key|keyword|type|raises?|returns?|rtype)\b")
_GOOGLE_ARGS = re.compile(r"^\s*(Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments)\s*:\s*$")
_GOOGLE_ITEM = re.compile(r"^(\*{0,2}\w+)\s*(\([^)]*\))?\s*:\s*(.*)$")
_NUMPY_ITEM = re.compile(r"^(\w+)\s*(:.*)?$")
_REST_PARAM = re.compile(r"^\s*:(?:param|parameter|arg|argument|key|keyword)\s+(?:[^:]*\s)?(\w+)\s*:\s*(.*)$")


def summary(doc: str | None) -> str:
    """The docstring's text before its first section (``Args:``, NumPy ``Parameters``, a reST ``:param``),
    paragraphs kept, lines within a paragraph joined."""
    lines = inspect.cleandoc(doc or "").splitlines()
    kept: list[str] = []
    for index, line in enumerate(lines):
        if _SECTION.match(line) or _REST_FIELD.match(line) or (line.strip() and _is_rule(lines, index + 1)):
            break
        kept.append(line.strip())
    paragraphs = "\n".join(kept).split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs if p.strip())


def parameter_docs(doc: str | None) -> dict[str, str]:
    """Parameter descriptions from a Google, NumPy or reST docstring, by parameter name (continuation lines
    joined)."""
    lines = inspect.cleandoc(doc or "").splitlines()
    found: dict[str, str] = {}
    for start, line in enumerate(lines):
        if _GOOGLE_ARGS.match(line):
            found.update(_items(lines[start + 1 :], _indent(line), _GOOGLE_ITEM, numpy=False))
        elif line.strip() in ("Parameters", "Other Parameters") and _is_rule(lines, start + 1):
            found.update(_items(lines[start + 2 :], _indent(line), _NUMPY_ITEM, numpy=True))
        elif match := _REST_PARAM.match(line):
            text = [match.group(2).strip()]
            for more in lines[start + 1 :]:
                if more.strip() and _indent(more) <= _indent(line):
                    break
                text.append(more.strip())
            found[match.group(1)] = " ".join(t for t in text if t)
    return found


def _items(lines: list[str], header: int, item: re.Pattern[str], *, numpy: bool) -> dict[str, str]:
    """The ``name: text`` items of one section, which ends at a line indented like its header (Google) or at the
    next NumPy section header."""
    found: dict[str, str] = {}
    current: str | None = None
    level: int | None = None
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        indent = _indent(line)
        if numpy and _is_rule(lines, index + 1):
            break
        if not numpy and indent <= header:
            break
        level = indent if level is None else level
        match = item.match(line.strip()) if indent == level else None
        if match:
            current = match.group(1).lstrip("*")
            found[current] = (match.group(3) if not numpy else "").strip()
        elif current is not None and indent > level:
            found[current] = f"{found[current]} {line.strip()}".strip()
    return found


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _is_rule(lines: list[str], index: int) -> bool:
    return index < len(lines) and bool(_NUMPY_RULE.match(lines[index]))


def inspect_signature(func: Callable[..., Any], context_type: type) -> Signature:
    """The :class:`Signature` of ``func``; a :class:`TypeError` naming the function for one ``@function`` cannot
    call (unannotated or variadic parameters, names a model cannot hold)."""
    where = f"{func.__module__}.{func.__qualname__}"
    try:
        hints = typing.get_type_hints(func, include_extras=True)
    except NameError as exc:
        raise TypeError(f"{where}: cannot resolve annotations ({exc}); define models at module level") from exc
    params = list(inspect.signature(func).parameters.values())
    others = [p for p in params if hints.get(p.name) is not context_type]
    first = others[0] if others else None
    if first is not None and _is_model(hints.get(first.name)) and first.default is inspect.Parameter.empty:
        return _model_form(where, params, hints, context_type)
    contexts = [p.name for p in params if p not in others]
    if len(contexts) > 1:
        raise TypeError(f"{where}: more than one CallContext parameter: {', '.join(contexts)}")
    if not others:
        return Signature(NoArguments, False, bool(contexts), contexts[0] if contexts else "", keywords=bool(contexts))
    docs = parameter_docs(func.__doc__)
    fields = {p.name: _field(where, p, hints, docs) for p in others}
    model = create_model(  # type: ignore[call-overload]
        f"{func.__name__}_arguments", __config__=ConfigDict(protected_namespaces=()), **fields
    )
    return Signature(model, True, bool(contexts), contexts[0] if contexts else "", keywords=True)


def _is_model(hint: Any) -> bool:
    return isinstance(hint, type) and issubclass(hint, BaseModel)


def _model_form(where: str, params: list[inspect.Parameter], hints: dict[str, Any], context: type) -> Signature:
    """``(args: SomeModel)`` or ``(args: SomeModel, ctx: CallContext)``, as before the plain form existed."""
    if len(params) > 2:
        raise TypeError(f"{where}: expected (args: SomeModel, ctx: CallContext), got {len(params)} parameters")
    if len(params) == 2 and (hints.get(params[1].name) is not context or not _is_model(hints.get(params[0].name))):
        raise TypeError(f"{where}: in the model form the pydantic model comes first and CallContext last")
    return Signature(hints[params[0].name], True, len(params) == 2)


def _field(where: str, param: inspect.Parameter, hints: dict[str, Any], docs: dict[str, str]) -> tuple[Any, Any]:
    """One plain parameter as a ``create_model`` field: (annotation, FieldInfo)."""
    name = param.name
    if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD, param.POSITIONAL_ONLY):
        raise TypeError(
            f"{where}: parameter {name!r}: *args, **kwargs and positional-only parameters cannot be "
            "filled from the model's named arguments"
        )
    if name not in hints:
        raise TypeError(
            f"{where}: parameter {name!r} has no annotation: give it a type (or, for the model form, a pydantic model)"
        )
    if name.startswith("_") or hasattr(BaseModel, name):
        raise TypeError(f"{where}: parameter {name!r} collides with a pydantic model attribute; rename it")
    annotation, description = _split_annotated(hints[name])
    default = param.default
    if isinstance(default, FieldInfo):  # ``x: int = Field(3, ge=0)``
        info = default
    else:
        info = Field(default=... if default is inspect.Parameter.empty else default)
    if description is None and info.description is None and not _annotated_description(annotation):
        description = docs.get(name) or None
    if description is not None:
        info = FieldInfo.merge_field_infos(info, description=description)
    return annotation, info


def _split_annotated(hint: Any) -> tuple[Any, str | None]:
    """``Annotated[T, "text", *more]`` -> (``Annotated[T, *more]`` or ``T``, "text"); other hints unchanged."""
    if typing.get_origin(hint) is not Annotated:
        return hint, None
    base, *metadata = typing.get_args(hint)
    texts = [m for m in metadata if isinstance(m, str)]
    others = [m for m in metadata if not isinstance(m, str)]
    annotation = Annotated[(base, *others)] if others else base  # type: ignore[valid-type]
    return annotation, (texts[0] if texts else None)


def _annotated_description(annotation: Any) -> bool:
    """Whether ``Annotated[T, Field(description=...)]`` already describes the parameter (it wins)."""
    if typing.get_origin(annotation) is not Annotated:
        return False
    return any(isinstance(m, FieldInfo) and m.description for m in typing.get_args(annotation)[1:])
