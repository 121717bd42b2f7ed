"""The worker side of the heartbeats' ``stats``: :class:`ModelStats` (one model's counters,
copied under its lock) and what the heartbeat thread puts in each beat from the handler's
optional ``report()``. No sockets, no threads started, no sleeps."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import msgpack
import numpy as np
import pytest

from inference_worker.stats import ModelStats
from wasm_engine import messages as M
from wasm_engine.config import Settings
from wasm_engine.heartbeat import HeartbeatThread


def test_model_stats_count_runs_by_batch_size_and_report_copies() -> None:
    stats = ModelStats()
    stats.record(batch=64, requests=64, device="cpu")  # warm-up
    stats.reset()
    stats.record(fallbacks=1)
    stats.record(batch=3, requests=4, failed=1, device="cpu")
    stats.record(batch=3, requests=2)
    stats.record(batch=1, requests=1, device="cuda")
    first = stats.report()
    assert first == {
        "runs": 3, "rows": 7, "requests": 7, "failed": 1, "fallbacks": 1,
        "batches": {"1": 1, "3": 2}, "device": "cuda",
    }  # fmt: skip
    first["batches"]["1"] = 99  # a copy: the caller may keep or change it
    stats.record(batch=1)
    assert stats.report()["batches"] == {"1": 2, "3": 2} and stats["runs"] == 4


@dataclass
class FakeLoop:
    """The :class:`~wasm_engine.heartbeat.LoopView` of a worker, without its sockets."""

    handler: Any
    settings: Settings = field(default_factory=Settings)
    ctx: Any = None
    ctrl_endpoint: str = "inproc://unused"
    identity: bytes = b"task-channel-1"
    name: str = "inference-1"
    ctrl_waiting: bool = False
    registered: bool = True

    def inflight(self) -> int:
        return 2


class Reports:
    def __init__(self, report: Any) -> None:
        self.answer = report
        self.calls = 0

    def report(self) -> Any:
        self.calls += 1
        if isinstance(self.answer, BaseException):
            raise self.answer
        return self.answer


def beat(handler: Any) -> M.WorkerHeartbeat:
    body = HeartbeatThread(FakeLoop(handler))._body()
    msg = M.parse("worker.heartbeat", body)
    assert isinstance(msg, M.WorkerHeartbeat)
    return msg


def test_a_beat_carries_the_handlers_report() -> None:
    report = {"models": {"mlp": {"runs": 2, "batches": {"1": 2}}}}
    msg = beat(Reports(report))
    assert (msg.worker, msg.inflight, msg.stats) == ("task-channel-1", 2, report)


def test_a_handler_without_report_beats_without_stats() -> None:
    assert beat(object()).stats == {}


@pytest.mark.parametrize(
    "answer",
    [RuntimeError("a bug"), ["not", "a", "map"], {"models": {"mlp": {"runs": np.int64(3)}}}],
    ids=["raises", "not-a-map", "not-msgpack"],
)
def test_a_failing_report_is_logged_once_and_the_beats_go_on(
    answer: Any, caplog: pytest.LogCaptureFixture
) -> None:
    handler = Reports(answer)
    thread = HeartbeatThread(FakeLoop(handler))
    with caplog.at_level(logging.ERROR, "wasm_engine.worker"):
        bodies = [thread._body() for _ in range(3)]
    assert handler.calls == 3  # asked every beat: a passing failure heals
    assert all(M.WorkerHeartbeat(**msgpack.unpackb(b)).stats == {} for b in bodies)
    assert len([r for r in caplog.records if "report failed" in r.getMessage()]) == 1
