"""The orchestrator's output side: what the scheduler sends, tells and counts.

Owns the socket ids (``FRONT``, ``BACK``), :class:`Send` (frames for one peer of
one socket) and :class:`Outbox`, the base of the scheduler: ``outbox`` (the
sends ``service`` flushes), ``events`` (telemetry, capped; a drop is counted;
none made while ``telemetry`` is off, i.e. nobody subscribes to them),
``counters``, and the typed ``error`` answer. Pure: no socket is touched here.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from wasm_engine.envelope import encode
from wasm_engine.errors import WasmEngineError
from wasm_engine.messages import Error
from wasm_engine.protocol import Header, make_header

FRONT, BACK = 0, 1


@dataclass(slots=True)
class Send:
    sock: int  # FRONT | BACK
    peer: bytes
    frames: list[bytes]


class Outbox:
    def __init__(self, name: str) -> None:
        self.name = name
        self.outbox: list[Send] = []
        self.events: deque[dict[str, Any]] = deque()
        self.events_cap = 20_000
        self.telemetry = True  # False while nobody subscribes to events: none are made
        self.counters: Counter[str] = Counter()

    def send(
        self, sock: int, peer: bytes, header: Header, body: bytes, blobs: Sequence[bytes] = ()
    ) -> None:
        self.outbox.append(Send(sock, peer, encode(header, body, blobs)))

    def event(self, ev: str, now: int, **fields: Any) -> None:
        if not self.telemetry:
            return
        if len(self.events) >= self.events_cap:
            self.counters["telemetry_dropped"] += 1
            return
        fields["ev"] = ev
        fields["t"] = now
        self.events.append(fields)

    def error(
        self,
        sock: int,
        peer: bytes,
        parent: str | None,
        err: WasmEngineError,
        trace: str | None = None,
    ) -> None:
        """Answer ``peer`` with a typed error (parent nil when the header was unreadable)."""
        self.counters["errors_sent"] += 1
        self.counters["error:" + err.code] += 1
        header = make_header("error", parent=parent, trace=trace, sender=self.name)
        self.send(sock, peer, header, Error(**err.to_body()).pack())
