"""Typer options generated from a job model, so a flag is declared once (the model's field:
type, default, bounds, help) and validated once (pydantic), for every command that takes it."""

from __future__ import annotations

import functools
import inspect
import sys
import typing
from typing import Any, Callable, List, Optional

import typer
from pydantic import BaseModel, ValidationError

from toolkit.errors import ToolkitError


def flag(name: str) -> str:
    return "--" + name.replace("_", "-")


def _annotation(tp: Any) -> Any:
    """The Typer-friendly type of a field: Literal -> str, list[x] -> List[str]; Optional kept."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is typing.Union and type(None) in args:
        inner = [a for a in args if a is not type(None)][0]
        return Optional[_annotation(inner)]
    if origin is typing.Literal:
        return str
    if origin in (list, List):
        return List[str]
    return tp


def _option(name: str, field) -> tuple[Any, Any]:
    tp = field.annotation
    ann = _annotation(tp)
    help_text = field.description or ""
    literal = [a for a in (typing.get_args(tp) or ()) if typing.get_origin(a) is typing.Literal] or (
        [tp] if typing.get_origin(tp) is typing.Literal else [])
    if literal:
        help_text += f" [one of: {', '.join(map(str, typing.get_args(literal[0])))}]"
    default = field.get_default(call_default_factory=True)
    if ann in (bool, Optional[bool]):
        return ann, typer.Option(default, f"{flag(name)}/--no-{name.replace('_', '-')}", help=help_text)
    return ann, typer.Option(default, flag(name), help=help_text)


def build(model: type[BaseModel], values: dict, prefix: Callable[[str], str] = flag) -> BaseModel:
    """The model from option values; a validation error names the option and what it must be."""
    try:
        return model.model_validate(values)
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"] if isinstance(p, str)]
        msg = err["msg"].removeprefix("Value error, ")
        if loc:
            raise ToolkitError(f"{prefix(loc[0])} {values.get(loc[0])!r}: {msg[:1].lower() + msg[1:]}",
                               hint=f"see `{_command()} --help` for {prefix(loc[0])}") from None
        raise ToolkitError(msg, hint=f"see `{_command()} --help`") from None


def _command() -> str:
    words = [a for a in sys.argv[1:3] if not a.startswith("-")][:1]
    return " ".join(["toolkit", *words])


def model_options(model: type[BaseModel], dest: str, exclude: tuple[str, ...] = ()) -> Callable:
    """Decorator: the command gets the model's fields as options and receives one validated model
    instance as its parameter `dest`."""
    fields = {n: f for n, f in model.model_fields.items() if n not in exclude}

    def deco(fn: Callable) -> Callable:
        sig = inspect.signature(fn, eval_str=True)
        own = [p for p in sig.parameters.values() if p.name != dest]
        added = []
        for name, field in fields.items():
            ann, opt = _option(name, field)
            added.append(inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, default=opt, annotation=ann))

        @functools.wraps(fn)
        def wrapper(**kwargs):
            values = {n: kwargs.pop(n) for n in fields}
            kwargs[dest] = build(model, {k: v for k, v in values.items() if v is not None or model.model_fields[k].default is None})
            return fn(**kwargs)

        params = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own] + added
        wrapper.__signature__ = sig.replace(parameters=params)
        wrapper.__annotations__ = {p.name: p.annotation for p in params}
        del wrapper.__wrapped__
        return wrapper

    return deco
