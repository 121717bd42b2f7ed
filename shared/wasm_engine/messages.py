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

Check = Callable[[Any], bool]
_ABSENT = object()
REGISTRY: dict[str, type[Message]] = {}
M = TypeVar("M", bound="Message")


class Message:
    """Base of every body class. ``TYPE`` is the header ``type`` string."""

    TYPE: ClassVar[str]
    _checks: ClassVar[dict[str, tuple[Check, bool, str]]]
    _names: ClassVar[tuple[str, ...]]

    def to_body(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in self._names}

    def pack(self) -> bytes:
        return packb(self.to_body())


def _checker(hint: Any) -> tuple[Check, str]:
    origin = typing.get_origin(hint)
    if hint is Any:
        return (lambda v: True), "any"
    if origin in (Union, types.UnionType):
        parts = [_checker(a) for a in typing.get_args(hint) if a is not type(None)]
        nullable = type(None) in typing.get_args(hint)
        name = " | ".join(p[1] for p in parts) + (" | nil" if nullable else "")
        return (lambda v: (nullable and v is None) or any(c(v) for c, _ in parts)), name
    if hint is int:
        return (lambda v: type(v) is int), "int"
    if hint is float:
        return (lambda v: type(v) in (int, float)), "float"
    if hint in (str, bool, bytes):
        return (lambda v: type(v) is hint), hint.__name__
    if origin is dict or hint is dict:
        return (lambda v: isinstance(v, dict)), "map"
    if origin is list:
        (item,) = typing.get_args(hint)
        check, name = _checker(item)
        return (lambda v: isinstance(v, list) and all(check(x) for x in v)), f"list[{name}]"
    raise TypeError(f"unsupported field type {hint!r}")


@dataclass_transform(field_specifiers=(field,))
def message(type_: str) -> Callable[[type[M]], type[M]]:
    """Class decorator: make it a dataclass and register it under ``type_``."""

    def register(cls: type[M]) -> type[M]:
        if type_ in REGISTRY:
            raise ValueError(f"message type {type_!r} registered twice")
        dc: Any = dataclass(slots=True)(cls)
        hints = typing.get_type_hints(dc)
        dc.TYPE = type_
        dc._checks = {}
        dc._names = tuple(f.name for f in dataclasses.fields(dc))
        for f in dataclasses.fields(dc):
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            check, name = _checker(hints[f.name])
            dc._checks[f.name] = (check, required, name)
        REGISTRY[type_] = dc
        return dc  # type: ignore[no-any-return]

    return register


def parse(type_: str, body: bytes, limits: SizeLimits = DEFAULT_LIMITS) -> Message:
    """Validate ``body`` as the message ``type_``: ``proto.unknown_type``,
    ``proto.bad_msgpack`` or ``proto.bad_field`` on any defect."""
    cls = REGISTRY.get(type_)
    if cls is None:
        raise ProtocolError(PROTO_UNKNOWN_TYPE, f"unknown message type {type_!r}")
    raw = unpack_map(body, what=f"{type_} body", limit=limits.body)
    values: dict[str, Any] = {}
    for name, (check, required, kind) in cls._checks.items():
        value = raw.get(name, _ABSENT)
        if value is not _ABSENT:
            if not check(value):
                raise ProtocolError(
                    PROTO_BAD_FIELD,
                    f"{type_}.{name} must be {kind}, got {type(value).__name__}",
                    detail={"field": name},
                )
            values[name] = value
        elif required:
            raise ProtocolError(
                PROTO_BAD_FIELD, f"{type_}.{name} is required", detail={"field": name}
            )
    msg = cls(**values)
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


@message("agent.put")
class AgentPut(Message):
    """Module bytes in blob 0; ``digest`` is ``sha256:<hex>`` of them."""

    digest: str
    name: str = ""
    reuse: bool = False


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
