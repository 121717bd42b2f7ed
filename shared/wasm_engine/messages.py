"""The message registry: one typed class per message type, validated on parse.

Each class is a dataclass; a field without a default is required. ``parse``
unpacks a body (already size-checked by ``envelope``) and checks every field's
type; unknown fields are ignored so that newer minors can add fields. Add a
message here and document it in ``docs/protocol.md`` (a test keeps the two in
step). There is no second registry.
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


def _require(cond: bool, type_: str, name: str, why: str) -> None:
    if not cond:
        raise ProtocolError(PROTO_BAD_FIELD, f"{type_}.{name} {why}", detail={"field": name})


TASK_KINDS = ("wasm", "infer", "generate")

# ---------------------------------------------------------------- client <-> orchestrator


@message("task.submit")
class TaskSubmit(Message):
    task_id: str
    kind: str
    agent: str | None = None
    model: str | None = None
    input: Any = None
    limits: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    seed: int = 0
    ack: bool = False

    def validate(self) -> None:
        if (  # the common case in one test; anything else goes through the checks naming it
            self.kind == "wasm"
            and 0 < len(self.task_id) <= 256
            and self.agent
            and (self.input is None or type(self.input) is bytes)
            and -1000 <= self.priority <= 1000
            and (
                not self.limits
                or all(type(v) in (int, float) and v >= 0 for v in self.limits.values())
            )
        ):
            return
        _require(0 < len(self.task_id) <= 256, self.TYPE, "task_id", "must be 1..256 chars")
        _require(self.kind in TASK_KINDS, self.TYPE, "kind", f"must be one of {TASK_KINDS}")
        if self.kind == "wasm":
            _require(bool(self.agent), self.TYPE, "agent", "is required for kind wasm")
            _require(
                self.input is None or isinstance(self.input, bytes),
                self.TYPE,
                "input",
                "must be msgpack bytes for kind wasm",
            )
        _require(-1000 <= self.priority <= 1000, self.TYPE, "priority", "must be in -1000..1000")
        for key, value in self.limits.items():
            _require(
                type(value) in (int, float) and value >= 0,
                self.TYPE,
                f"limits.{key}",
                "must be a non-negative number",
            )


@message("task.ack")
class TaskAck(Message):
    task_id: str
    state: str  # queued | duplicate


@message("task.result")
class TaskResult(Message):
    task_id: str
    output: Any = None
    stats: dict[str, Any] = field(default_factory=dict)


@message("task.event")
class TaskEvent(Message):
    task_id: str
    seq: int
    data: Any = None


@message("task.cancel")
class TaskCancel(Message):
    task_id: str


@message("error")
class Error(Message):
    code: str
    message: str
    retryable: bool = False
    detail: dict[str, Any] = field(default_factory=dict)


@message("status.get")
class StatusGet(Message):
    pass


@message("status")
class Status(Message):
    orchestrator: dict[str, Any]
    workers: list[dict[str, Any]]
    queues: dict[str, Any]
    counters: dict[str, Any]
    agents: list[dict[str, Any]] = field(default_factory=list)


@message("agent.put")
class AgentPut(Message):
    """Module bytes in blob 0; ``digest`` is the agent digest of them and the
    canonical ``manifest`` (``wasm_engine.manifest``); without a manifest, the
    one made of ``name`` and ``reuse``."""

    digest: str
    name: str = ""
    reuse: bool = False
    manifest: dict[str, Any] | None = None


@message("agent.stored")
class AgentStored(Message):
    digest: str
    size: int


# ---------------------------------------------------------------- worker <-> orchestrator


@message("worker.hello")
class WorkerHello(Message):
    name: str
    kind: str  # wasm | inference
    credits: int
    capabilities: list[str] = field(default_factory=list)
    host: str = ""
    shm_ns: str = ""
    device: str = "cpu"
    pid: int = 0

    def validate(self) -> None:
        _require(self.kind in ("wasm", "inference"), self.TYPE, "kind", "must be wasm|inference")
        _require(1 <= self.credits <= 4096, self.TYPE, "credits", "must be in 1..4096")


@message("worker.welcome")
class WorkerWelcome(Message):
    worker: str
    heartbeat_interval: float
    heartbeat_liveness: int


@message("worker.heartbeat")
class WorkerHeartbeat(Message):
    worker: str  # routing id of the worker's task channel
    inflight: int = 0


@message("worker.credit")
class WorkerCredit(Message):
    credits: int

    def validate(self) -> None:
        _require(1 <= self.credits <= 4096, self.TYPE, "credits", "must be in 1..4096")


@message("worker.bye")
class WorkerBye(Message):
    returned: list[str] = field(default_factory=list)


@message("task.dispatch")
class TaskDispatch(Message):
    """Blob 0: the submit body, the client's bytes; blob 1 (optional): the module."""

    task_id: str
    attempt: int
    queued_us: int
    agent: str | None = None
    reuse: bool = False


# ---------------------------------------------------------------- telemetry (PUB)


@message("telemetry.events")
class TelemetryEvents(Message):
    events: list[dict[str, Any]]
    dropped: int = 0


@message("telemetry.snapshot")
class TelemetrySnapshot(Message):
    status: dict[str, Any]
