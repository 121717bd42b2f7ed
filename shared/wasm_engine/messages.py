"""The message registry: one typed class per message type, validated on parse.

Each class is a dataclass; a field without a default is required. ``parse``
unpacks a body (already size-checked by ``envelope``) and checks every field's
type; unknown fields are ignored so that newer minors can add fields. Add a
message here and document it in ``docs/protocol.md`` (a test keeps the two in
step). There is no second registry. The machinery (base class, decorator,
generated validators, ``parse``) is in ``schema``; its names are re-exported here.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

from .errors import PROTO_BAD_FIELD, ProtocolError
from .schema import REGISTRY, M, Message, message, parse

# re-exported from schema (the message classes defined below are public as well)
__all__ = ["REGISTRY", "M", "Message", "message", "parse"]


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
    session: str | None = None  # a stateful agent's session: its calls stay on one worker

    def validate(self) -> None:
        if (  # the common case in one test; anything else goes through the checks naming it
            self.kind == "wasm"
            and 0 < len(self.task_id) <= 256
            and self.agent
            and (self.input is None or type(self.input) is bytes)
            and -1000 <= self.priority <= 1000
            and self.session is None
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
        else:
            _require(bool(self.model), self.TYPE, "model", f"is required for kind {self.kind}")
        _require(
            self.session is None or 0 < len(self.session) <= 256,
            self.TYPE,
            "session",
            "must be 1..256 chars",
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
    segments: list[dict[str, Any]] = field(default_factory=list)  # its arena: [{name, size}]

    def validate(self) -> None:
        _require(self.kind in ("wasm", "inference"), self.TYPE, "kind", "must be wasm|inference")
        _require(1 <= self.credits <= 4096, self.TYPE, "credits", "must be in 1..4096")
        _require(len(self.segments) <= 1024, self.TYPE, "segments", "must be <= 1024 entries")
        for seg in self.segments:
            _require(
                type(seg.get("name")) is str and type(seg.get("size")) is int and seg["size"] > 0,
                self.TYPE,
                "segments",
                "entries must be {name: str, size: int > 0}",
            )


@message("worker.welcome")
class WorkerWelcome(Message):
    worker: str
    heartbeat_interval: float
    heartbeat_liveness: int


@message("worker.heartbeat")
class WorkerHeartbeat(Message):
    worker: str  # routing id of the worker's task channel
    inflight: int = 0
    # the handler's cumulative counters (``TaskHandler``'s optional ``report()``); empty: none.
    # Inference workers: {"models": {name: {runs, rows, requests, failed, fallbacks, batches}}}
    stats: dict[str, Any] = field(default_factory=dict)


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
    session: str | None = None  # the call runs in this session's instance
    fresh: bool = False  # the session's first call here: make its instance


@message("session.end")
class SessionEnd(Message):
    """orchestrator -> worker: a session idled out; drop its instance."""

    agent: str
    session: str


# ---------------------------------------------------------------- tensor leases


@message("shm.lease")
class ShmLease(Message):
    """Owner -> orchestrator: ``holders`` hold the slot of ``ref`` (a TensorRef map)."""

    ref: dict[str, Any]
    holders: list[str]
    ttl: float = 0.0  # seconds; 0: the orchestrator's lease_ttl


@message("shm.release")
class ShmRelease(Message):
    """Holder -> orchestrator: ``holder`` is done with the slot of ``ref``."""

    ref: dict[str, Any]
    holder: str


@message("shm.free")
class ShmFree(Message):
    """Orchestrator -> owner: the last holder is done; the slot may be reused."""

    segment: str
    offset: int
    generation: int


# ---------------------------------------------------------------- telemetry (PUB)


@message("telemetry.events")
class TelemetryEvents(Message):
    events: list[dict[str, Any]]
    dropped: int = 0
    seq: int = 0  # 1, 2, 3 … per orchestrator: a subscriber counts the batches PUB dropped


@message("telemetry.snapshot")
class TelemetrySnapshot(Message):
    status: dict[str, Any]
