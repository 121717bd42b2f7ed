"""An inference worker's counters on their way out, with real processes (``LocalStack``: an
orchestrator and an inference worker serving the MLP, heartbeats every 0.2 s): after concurrent
``infer`` calls the status snapshot shows the worker's per-model ``stats`` (runs, a histogram of
batch sizes), and the telemetry PUB carries ``infer.stats`` events whose batch counts add up to
the runs, and whose deltas add up to the snapshot's totals."""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import zmq
from test_inference_stack import _infer_frames

from inference_worker.build import build_model
from wasm_engine import Client, transport
from wasm_engine import messages as M
from wasm_engine.envelope import decode
from wasm_engine.local import LocalStack

pytestmark = pytest.mark.e2e
REQUESTS = 24
COUNTS = ("runs", "rows", "requests", "failed", "fallbacks")


@pytest.fixture
def stack(tmp_path: Path) -> Iterator[LocalStack]:
    models = tmp_path / "models"
    build_model("mlp", models)  # the same MLP as test_inference_stack's, without the LLM
    stack = LocalStack(
        0, inference_workers=1, models=str(models), heartbeat_interval=0.2, credits=16,
        device="cpu_ok",
    )  # fmt: skip
    try:
        yield stack.start(timeout=60)
    finally:
        print(
            f"----- inference-worker-1.log (tail)\n{stack.log_text('inference-worker-1')[-3000:]}"
        )
        stack.stop()


def until(what: str, found: Callable[[], Any], timeout: float = 20.0) -> Any:
    end = time.monotonic() + timeout
    while not (value := found()):
        assert time.monotonic() < end, f"no {what} in {timeout}s"
        time.sleep(0.05)
    return value


def mlp_stats(client: Client) -> dict[str, Any] | None:
    (worker,) = client.status()["workers"]
    stats: dict[str, Any] | None = worker["stats"].get("models", {}).get("mlp")
    return stats


def infer_stats(sub: zmq.Socket[bytes]) -> list[dict[str, Any]]:
    """The ``infer.stats`` events the SUB holds now."""
    found = []
    while sub.poll(0):
        env = decode(transport.recv(sub), hops=1)
        msg = M.parse(env.header.type, env.body)
        if isinstance(msg, M.TelemetryEvents):
            found += [e for e in msg.events if e["ev"] == "infer.stats"]
    return found


def test_infer_calls_reach_the_snapshot_stats_and_infer_stats_events(stack: LocalStack) -> None:
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    topics = (b"telemetry.events", b"telemetry.snapshot")
    sub = transport.subscriber(ctx, stack.settings.telemetry, topics)
    try:
        with Client(stack.front, timeout=60) as client:
            until("telemetry on the SUB (subscribed)", lambda: sub.poll(100))
            baseline = until("the worker's first stats", lambda: mlp_stats(client))
            assert baseline["runs"] == 0  # warm-up is not counted
            x = np.random.default_rng(2).standard_normal((REQUESTS, 512)).astype(np.float32)
            futures = [  # sent in one burst: the dynamic batcher stacks what arrives together
                client._request(*_infer_frames(client, x[i : i + 1])) for i in range(REQUESTS)
            ]
            client.wait(futures, 60)
            assert all("probs" in f.result(0).output["outputs"] for f in futures)
            served = until(
                "all requests in the snapshot",
                lambda: (s := mlp_stats(client)) and s["requests"] == REQUESTS and s,
            )
        assert served["runs"] > 0 and served["batches"] and served["failed"] == 0
        assert sum(served["batches"].values()) == served["runs"]
        assert sum(int(size) * n for size, n in served["batches"].items()) == REQUESTS
        assert served["rows"] == REQUESTS and served["device"] in ("cpu", "cuda")

        events: list[dict[str, Any]] = []
        until(
            "infer.stats events adding up to the snapshot",
            lambda: (
                events.extend(infer_stats(sub))
                or sum(m["requests"] for e in events for m in e["models"]) == REQUESTS
            ),
        )
    finally:
        sub.close(0)
        ctx.term()
    assert {e["worker"] for e in events} == {"inference-worker-1"}
    entries = [m for e in events for m in e["models"] if m["model"] == "mlp"]
    for entry in entries:
        assert sum(entry["batches"].values()) == entry["runs"]
        assert entry["device"] == served["device"]
    totals = {k: sum(m[k] for m in entries) for k in COUNTS}
    assert totals == {k: served[k] for k in COUNTS}
    batches: Counter[str] = Counter()
    for entry in entries:
        batches.update(entry["batches"])
    assert dict(batches) == served["batches"]
