"""The machinery of the message registry: typed bodies, generated code, parse.

Owns :class:`Message` (the base of every body class), the ``@message(type)``
decorator that makes a class a slotted dataclass, registers it and generates its
validator (``from_raw``) and its ``to_body``, and :func:`parse`. The message
classes themselves, the one registry's contents, live in ``messages``.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar, Union, dataclass_transform

from .codec import packb, unpack_map
from .errors import PROTO_BAD_FIELD, PROTO_UNKNOWN_TYPE, ProtocolError
from .protocol import DEFAULT_LIMITS, SizeLimits

_ABSENT = object()
REGISTRY: dict[str, type[Message]] = {}
M = TypeVar("M", bound="Message")


class Message:
    """Base of every body class. ``TYPE`` is the header ``type`` string."""

    TYPE: ClassVar[str]
    _names: ClassVar[tuple[str, ...]]
    _from_raw: ClassVar[Callable[[dict[str, Any]], Any]]

    def to_body(self) -> dict[str, Any]:  # replaced per class by a generated one
        return {name: getattr(self, name) for name in self._names}

    def pack(self) -> bytes:
        return packb(self.to_body())


def _check_expr(hint: Any, var: str) -> tuple[str, str]:
    """A Python expression that is true when ``var`` fits ``hint``, and the
    type's name for error messages."""
    origin = typing.get_origin(hint)
    if hint is Any:
        return "True", "any"
    if origin in (Union, types.UnionType):
        args = typing.get_args(hint)
        parts = [_check_expr(a, var) for a in args if a is not type(None)]
        expr = " or ".join(f"({e})" for e, _ in parts)
        name = " | ".join(n for _, n in parts)
        if type(None) in args:
            return f"{var} is None or {expr}", name + " | nil"
        return expr, name
    if hint is float:
        return f"type({var}) in (int, float)", "float"
    if hint in (int, str, bool, bytes):
        return f"type({var}) is {hint.__name__}", hint.__name__
    if origin is dict or hint is dict:
        return f"type({var}) is dict", "map"
    if origin is list:
        item, name = _check_expr(typing.get_args(hint)[0], "x")
        return f"type({var}) is list and all({item} for x in {var})", f"list[{name}]"
    raise TypeError(f"unsupported field type {hint!r}")


def _bad(type_: str, name: str, kind: str, value: Any) -> None:
    if value is _ABSENT:
        raise ProtocolError(PROTO_BAD_FIELD, f"{type_}.{name} is required", detail={"field": name})
    raise ProtocolError(
        PROTO_BAD_FIELD,
        f"{type_}.{name} must be {kind}, got {type(value).__name__}",
        detail={"field": name},
    )


def _compile_from_raw(cls: Any, type_: str) -> Callable[[dict[str, Any]], Any]:
    """Generate the validator of one class (straight-line code, as attrs and
    dataclasses generate ``__init__``): every message a process receives goes
    through one of these, so it must cost little."""
    hints = typing.get_type_hints(cls)
    ns: dict[str, Any] = {"_ABSENT": _ABSENT, "_bad": _bad, "cls": cls}
    lines = ["def from_raw(raw):"]
    for f in dataclasses.fields(cls):
        var = f"v_{f.name}"
        expr, kind = _check_expr(hints[f.name], var)
        lines.append(f"    {var} = raw.get({f.name!r}, _ABSENT)")
        if f.default is not dataclasses.MISSING:
            ns[f"d_{f.name}"] = f.default
            lines.append(f"    if {var} is _ABSENT: {var} = d_{f.name}")
            lines.append(f"    elif not ({expr}): _bad({type_!r}, {f.name!r}, {kind!r}, {var})")
        elif f.default_factory is not dataclasses.MISSING:
            ns[f"d_{f.name}"] = f.default_factory
            lines.append(f"    if {var} is _ABSENT: {var} = d_{f.name}()")
            lines.append(f"    elif not ({expr}): _bad({type_!r}, {f.name!r}, {kind!r}, {var})")
        else:
            lines.append(f"    if {var} is _ABSENT or not ({expr}):")
            lines.append(f"        _bad({type_!r}, {f.name!r}, {kind!r}, {var})")
    args = ", ".join(f"v_{f.name}" for f in dataclasses.fields(cls))
    lines.append(f"    return cls({args})")
    exec("\n".join(lines), ns)
    fn: Callable[[dict[str, Any]], Any] = ns["from_raw"]
    return fn


def _compile_to_body(cls: Any) -> Callable[[Any], dict[str, Any]]:
    """Generate ``to_body`` as one dict display: packing runs for every message
    a process sends, and a comprehension over ``getattr`` costs twice as much."""
    items = ", ".join(f"{f.name!r}: self.{f.name}" for f in dataclasses.fields(cls))
    ns: dict[str, Any] = {}
    exec(f"def to_body(self):\n    return {{{items}}}", ns)
    fn: Callable[[Any], dict[str, Any]] = ns["to_body"]
    return fn


@dataclass_transform(field_specifiers=(field,))
def message(type_: str) -> Callable[[type[M]], type[M]]:
    """Class decorator: make it a dataclass and register it under ``type_``."""

    def register(cls: type[M]) -> type[M]:
        if type_ in REGISTRY:
            raise ValueError(f"message type {type_!r} registered twice")
        dc: Any = dataclass(slots=True)(cls)
        dc.TYPE = type_
        dc._names = tuple(f.name for f in dataclasses.fields(dc))
        dc._from_raw = staticmethod(_compile_from_raw(dc, type_))
        dc.to_body = _compile_to_body(dc)
        REGISTRY[type_] = dc
        return dc  # type: ignore[no-any-return]

    return register


def parse(type_: str, body: bytes, limits: SizeLimits = DEFAULT_LIMITS) -> Message:
    """Validate ``body`` as the message ``type_``: ``proto.unknown_type``,
    ``proto.bad_msgpack`` or ``proto.bad_field`` on any defect."""
    cls = REGISTRY.get(type_)
    if cls is None:
        raise ProtocolError(PROTO_UNKNOWN_TYPE, f"unknown message type {type_!r}")
    msg: Message = cls._from_raw(unpack_map(body, what=f"{type_} body", limit=limits.body))
    validate = getattr(msg, "validate", None)
    if validate is not None:
        validate()
    return msg
