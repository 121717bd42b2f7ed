"""The SDK's request bookkeeping, shared by both clients and free of I/O.

Owns what a request is and how its reply is matched: :class:`AgentRef` and
:class:`Result` (what callers get back), :class:`Pending` (one request awaiting
its reply), :class:`Book` (builds ``agent.put`` / ``task.submit`` frames and
resolves each reply by its ``parent``, putting a lost module again once, and
hands each ``task.event`` to the request's ``on_event``) and
:func:`module_bytes` (module bytes from bytes or a path) and :func:`agent_spec`
(the module and its manifest, read beside a path unless given). The clients own the
sockets: :mod:`wasm_engine.client` (blocking) and :mod:`wasm_engine.aclient`
(asyncio).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import errors as E
from . import messages as M
from .codec import packb
from .envelope import EnvelopeError, decode, encode
from .errors import WasmEngineError
from .manifest import Manifest, agent_digest, beside, load_manifest, parse_manifest
from .protocol import make_header, new_id

log = logging.getLogger("wasm_engine.client")
#: Called with the decoded value of each event of a task, in order.
OnEvent = Callable[[Any], None]


@dataclass(frozen=True)
class AgentRef:
    """A module stored in the orchestrator, named by its content digest."""

    digest: str
    name: str = ""
    reuse: bool = False
    version: str = ""


@dataclass(slots=True)
class Result:
    task_id: str
    output: Any
    stats: dict[str, Any]
    trace: str | None = None


@dataclass(slots=True)
class Pending:
    task_id: str
    frames: list[bytes]
    agent: str | None
    resolve: Callable[[Result | None, WasmEngineError | None], None]
    retried: bool = False
    on_event: OnEvent | None = None
    next_seq: int = 0  # events below it were delivered (a retried attempt replays them)


@dataclass
class Book:
    """Builds requests and matches replies; shared by both clients, no I/O."""

    name: str
    pending: dict[str, Pending] = field(default_factory=dict)
    # digest -> (module, manifest), to put a module again when the orchestrator lost it
    modules: dict[str, tuple[bytes, Manifest]] = field(default_factory=dict)
    reput_at: dict[str, float] = field(default_factory=dict)  # digest -> last re-put

    def agent_frames(self, module: bytes, manifest: Manifest) -> tuple[str, str, list[bytes]]:
        digest = agent_digest(module, manifest)
        self.modules[digest] = (module, manifest)
        header = make_header("agent.put", sender=self.name)
        body = M.AgentPut(digest, manifest.name, manifest.reuse, manifest.canonical()).pack()
        return digest, header.id, encode(header, body, [module])

    def generate_frames(
        self,
        prompt: str | list[dict[str, str]],
        model: str,
        task_id: str | None,
        timeout: float | None,
        on_text: Callable[[str], None] | None,
        params: dict[str, Any],
    ) -> tuple[str, str, list[bytes], OnEvent | None]:
        """A ``generate`` submit (task id, request id, frames) and the ``on_event`` that
        hands each streamed piece of text to ``on_text``."""
        from .inference import generate_input

        task_id, rid, frames = self.model_frames(
            "generate", model, generate_input(prompt, **params), task_id=task_id, timeout=timeout
        )
        if on_text is None:
            return task_id, rid, frames, None
        sink = on_text

        def on_event(value: Any) -> None:
            sink(value.get("text", "") if isinstance(value, dict) else "")

        return task_id, rid, frames, on_event

    def model_frames(
        self,
        kind: str,
        model: str,
        data: dict[str, Any],
        *,
        task_id: str | None,
        timeout: float | None,
        priority: int = 0,
        deadline: float | None = None,
        trace: str | None = None,
    ) -> tuple[str, str, list[bytes]]:
        """A ``generate`` or ``infer`` submit: task id, request id, frames."""
        task_id = task_id or new_id()
        body = M.TaskSubmit(
            task_id=task_id,
            kind=kind,
            model=model,
            input=data,
            priority=priority,
            limits={"timeout": timeout} if timeout is not None else {},
        ).pack()
        deadline_ns = int(deadline * 1e9) if deadline is not None else None
        header = make_header(
            "task.submit", sender=self.name, trace=trace or task_id, deadline=deadline_ns
        )
        return task_id, header.id, encode(header, body)

    def submit_frames(
        self,
        agent: AgentRef | str,
        data: Any,
        *,
        task_id: str | None,
        limits: dict[str, Any],
        priority: int,
        seed: int,
        deadline: float | None,
        trace: str | None,
        session: str | None = None,
    ) -> tuple[str, str, list[bytes], str]:
        digest = agent.digest if isinstance(agent, AgentRef) else agent
        task_id = task_id or new_id()
        body = M.TaskSubmit(
            task_id=task_id,
            kind="wasm",
            agent=digest,
            input=packb(data),
            priority=priority,
            seed=seed,
            limits={k: v for k, v in limits.items() if v is not None},
            session=session,
        ).pack()
        deadline_ns = int(deadline * 1e9) if deadline is not None else None
        header = make_header(
            "task.submit", sender=self.name, trace=trace or task_id, deadline=deadline_ns
        )
        return task_id, header.id, encode(header, body), digest

    def on_reply(self, frames: list[bytes]) -> list[list[bytes]] | None:
        """Resolve the future a reply belongs to; returns frames to send again when
        the orchestrator lost our module (it restarted): put it, then resubmit."""
        try:
            env = decode(frames)
        except EnvelopeError:
            return None  # nothing to attribute it to; the future times out
        pending = self.pending.get(env.header.parent or "")
        if pending is None:
            return None
        type_ = env.header.type
        if type_ == "task.event":
            self._event(pending, env.body)
            return None
        if type_ == "task.ack":
            return None
        del self.pending[env.header.parent or ""]
        try:
            msg = M.parse(type_, env.body)
        except WasmEngineError as err:
            pending.resolve(None, err)
            return None
        if isinstance(msg, M.TaskResult):
            pending.resolve(Result(msg.task_id, msg.output, msg.stats, env.header.trace), None)
        elif isinstance(msg, M.Error):
            failure = WasmEngineError.from_body(msg.to_body())
            module = self.modules.get(pending.agent or "")
            if failure.code == E.WASM_AGENT_MISSING and module is not None and not pending.retried:
                pending.retried = True
                self.pending[env.header.parent or ""] = pending
                if time.monotonic() - self.reput_at.get(pending.agent or "", -1e9) < 1.0:
                    return [pending.frames]  # re-put already on its way, ahead of this
                self.reput_at[pending.agent or ""] = time.monotonic()
                _, _, put = self.agent_frames(*module)
                return [put, pending.frames]  # messages to send, in order
            pending.resolve(None, failure)
        else:  # status, agent.stored: the value is the parsed message
            pending.resolve(Result(pending.task_id, msg, {}, env.header.trace), None)
        return None

    @staticmethod
    def _event(pending: Pending, body: bytes) -> None:
        """Deliver one event, once per ``seq``: an attempt run again after its worker
        was lost emits from seq 0 again, and those already delivered are skipped."""
        if pending.on_event is None:
            return
        try:
            event = M.parse("task.event", body)
        except WasmEngineError as err:
            log.warning("task %s: dropped a malformed task.event: %s", pending.task_id, err)
            return
        if not isinstance(event, M.TaskEvent) or event.seq < pending.next_seq:
            return
        pending.next_seq = event.seq + 1
        try:
            pending.on_event(event.data)
        except Exception:  # the caller's bug: the task and the other requests go on
            log.exception("task %s: on_event raised on event %d", pending.task_id, event.seq)


def module_bytes(module: bytes | bytearray | str | Path, name: str) -> tuple[bytes, str]:
    """Module bytes from bytes or a path; a ``.wat`` text file is compiled here
    (with wasmtime, when installed), since workers take binary modules only."""
    if isinstance(module, bytes | bytearray):
        return bytes(module), name
    path = Path(module)
    if path.suffix == ".wat":
        try:
            from wasmtime import wat2wasm
        except ImportError:
            raise WasmEngineError(
                E.WASM_BAD_MODULE, "compiling .wat needs the wasmtime package"
            ) from None
        return bytes(wat2wasm(path.read_text())), name or path.stem
    return path.read_bytes(), name or path.stem


ManifestLike = Manifest | dict[str, Any] | str | Path | None


def agent_spec(
    module: bytes | bytearray | str | Path,
    name: str = "",
    reuse: bool | None = None,
    manifest: ManifestLike = None,
) -> tuple[bytes, Manifest]:
    """The module bytes and the manifest of a ``put_agent``: ``manifest`` as given
    (a :class:`Manifest`, a mapping or a ``.toml``/``.json`` path), else the one
    beside a module path (``x.wasm`` + ``x.toml``), else an empty one; ``name``
    (when not empty) and ``reuse`` (when not None) override its fields."""
    if manifest is None and isinstance(module, str | Path):
        manifest = beside(module)
    if isinstance(manifest, str | Path):
        found = load_manifest(manifest)
    elif isinstance(manifest, dict):
        found = parse_manifest(manifest)
    else:
        found = manifest or Manifest()
    data, name = module_bytes(module, name or found.name)
    changes: dict[str, Any] = {"name": name}
    if reuse is not None:
        changes["reuse"] = reuse
    return data, dataclasses.replace(found, **changes)
