"""tiny-tasks: per-task overhead of the whole stack against its baselines, one run.

(a) raw pyzmq DEALER -> ROUTER echo of msgpack envelopes between two processes,
    64 in flight: the transport limit;
(b) our stack (client -> orchestrator -> wasm-worker -> back) running a no-op
    WASM agent, 64 in flight, one client: once with a fresh instance per task
    (the isolation default) and once with instance reuse;
(c) Ray's no-op ``@ray.remote`` task, 64 in flight (skipped when Ray is absent);
plus p50/p99 latency with one task in flight for (a) and (b). (a) and (b) run in
``--repeat`` (5) alternating rounds inside this one run: throughputs are medians,
``stack_vs_raw_zmq`` is the median of the rounds' ratios (each pairs two
measurements taken seconds apart, so a drift in the machine's load hits both).
Ratios: ``stack_vs_ray`` (fresh instances, as Ray gives no reuse either) and
``stack_vs_raw_zmq`` (reuse, the transport-bound case), both throughput ratios.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack
import zmq

from wasm_engine import Client
from wasm_engine.benchmark import percentile, report
from wasm_engine.local import LocalStack

NOOP_WAT = Path(__file__).resolve().parent.parent / "agents" / "wat" / "noop.wat"
CUSTOM_SECTION = b"\x00\x06\x05reuse"  # section id 0 (custom), 6 bytes: name "reuse"


def _echo_server(endpoint: str) -> None:
    ctx = zmq.Context()
    sock = ctx.socket(zmq.ROUTER)
    sock.bind(endpoint)
    while True:
        frames = sock.recv_multipart()
        if frames[-1] == b"stop":
            break
        msgpack.unpackb(frames[2])  # a router reads the header
        sock.send_multipart(frames)
    sock.close(0)
    ctx.term()


def median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


class RawEcho:
    """The baseline: a DEALER client against a ROUTER echo server in another process."""

    def __init__(self, folder: str) -> None:
        endpoint = f"ipc://{folder}/echo.sock"
        ctx = mp.get_context("spawn")
        self.server = ctx.Process(target=_echo_server, args=(endpoint,), daemon=True)
        self.server.start()
        self.ctx = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.connect(endpoint)
        self.send(-1)
        self.recv()  # connected and warm

    def send(self, i: int) -> None:
        header = msgpack.packb(
            {"v": [1, 0], "id": str(i), "type": "task.submit", "ts": time.time_ns()}
        )
        body = msgpack.packb({"task_id": str(i), "input": b"\xc0"})
        self.sock.send_multipart([b"WE/1", header, body])

    def recv(self) -> None:
        frames = self.sock.recv_multipart()
        msgpack.unpackb(frames[1])

    def rate(self, count: int, window: int) -> float:
        sent = done = 0
        t0 = time.perf_counter()
        while done < count:
            while sent < count and sent - done < window:
                self.send(sent)
                sent += 1
            self.recv()
            done += 1
        return count / (time.perf_counter() - t0)

    def latency(self, n: int) -> list[float]:
        lat = []
        for i in range(n):
            t = time.perf_counter()
            self.send(i)
            self.recv()
            lat.append((time.perf_counter() - t) * 1e6)
        return lat

    def close(self) -> None:
        self.sock.send_multipart([b"WE/1", b"", b"stop"])
        self.server.join(5)
        self.sock.close(0)
        self.ctx.term()


def stack_run(client: Client, agent: Any, count: int, window: int) -> float:
    t0 = time.perf_counter()
    client.run_many(agent, range(count), window=window)
    return count / (time.perf_counter() - t0)


def stack_latency(client: Client, agent: Any, n: int) -> list[float]:
    lat = []
    for i in range(n):
        t = time.perf_counter()
        client.run(agent, i)
        lat.append((time.perf_counter() - t) * 1e6)
    return lat


def ray_run(count: int, window: int, repeat: int) -> float | None:
    try:
        import ray
    except ImportError:
        return None
    ray.init(
        num_cpus=os.cpu_count(), include_dashboard=False, logging_level="ERROR", log_to_driver=False
    )
    try:

        @ray.remote
        def noop(x: Any) -> Any:
            return x

        ray.get([noop.remote(i) for i in range(200)])  # workers started
        rates = []
        for _ in range(repeat):
            t0 = time.perf_counter()
            pending: list[Any] = []
            sent = 0
            while sent < count or pending:
                while sent < count and len(pending) < window:
                    pending.append(noop.remote(sent))
                    sent += 1
                done, pending = ray.wait(pending, num_returns=1)
                ray.get(done)
            rates.append(count / (time.perf_counter() - t0))
        return median(rates)
    finally:
        ray.shutdown()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--count", type=int, default=20_000)
    ap.add_argument("--window", type=int, default=64)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--latency-samples", type=int, default=2000)
    ap.add_argument("--repeat", type=int, default=5, help="alternating rounds; medians count")
    ap.add_argument("--no-ray", action="store_true")
    a = ap.parse_args()
    import wasmtime

    noop = bytes(wasmtime.wat2wasm(NOOP_WAT.read_text()))
    figures: dict[str, Any] = {
        "count": a.count, "window": a.window, "wasm_workers": a.workers, "repeat": a.repeat,
    }  # fmt: skip
    raw_rates: list[float] = []
    fresh_rates: list[float] = []
    reuse_rates: list[float] = []
    round_ratios: list[float] = []
    with (
        tempfile.TemporaryDirectory(prefix="we-bench-") as folder,
        LocalStack(a.workers) as stack,
        Client(stack.front) as client,
    ):
        raw = RawEcho(folder)
        fresh = client.put_agent(noop, name="noop")
        # the same code as another agent: instance reuse is declared per agent (module
        # bytes), so the reuse variant carries a custom section to get its own digest
        reuse = client.put_agent(noop + CUSTOM_SECTION, name="noop-reuse", reuse=True)
        for agent in (fresh, reuse):  # warm: modules compiled and cached on the worker
            client.run_many(agent, range(500), window=a.window)
        # rounds alternate baseline and stack, so a drift in the machine's load hits both;
        # each round's ratio pairs measurements taken seconds apart
        for _ in range(a.repeat):
            raw_rates.append(raw.rate(a.count, a.window))
            reuse_rates.append(stack_run(client, reuse, a.count, a.window))
            fresh_rates.append(stack_run(client, fresh, a.count, a.window))
            round_ratios.append(reuse_rates[-1] / raw_rates[-1])
        raw_lat = raw.latency(min(a.count, 2000))
        raw.close()
        lat = stack_latency(client, reuse, a.latency_samples)
        lat_fresh = stack_latency(client, fresh, a.latency_samples)
    raw_rate = median(raw_rates)
    figures["raw_zmq_tasks_per_s"] = round(raw_rate)
    figures["raw_zmq_p50_us"] = round(percentile(raw_lat, 50), 1)
    figures["raw_zmq_p99_us"] = round(percentile(raw_lat, 99), 1)
    figures["stack_fresh_tasks_per_s"] = round(median(fresh_rates))
    figures["stack_reuse_tasks_per_s"] = round(median(reuse_rates))
    figures["stack_p50_us"] = round(percentile(lat, 50), 1)
    figures["stack_p99_us"] = round(percentile(lat, 99), 1)
    figures["stack_fresh_p50_us"] = round(percentile(lat_fresh, 50), 1)
    figures["stack_vs_raw_zmq_per_round"] = [round(r, 3) for r in round_ratios]
    ray_rate = None if a.no_ray else ray_run(a.count, a.window, min(a.repeat, 3))
    figures["ray_tasks_per_s"] = round(ray_rate) if ray_rate else None
    ratios = {
        "stack_vs_raw_zmq": round(median(round_ratios), 3),
        "stack_fresh_vs_raw_zmq": round(figures["stack_fresh_tasks_per_s"] / raw_rate, 3),
        "stack_vs_ray": round(figures["stack_fresh_tasks_per_s"] / ray_rate, 2)
        if ray_rate
        else None,
        "stack_reuse_vs_ray": round(figures["stack_reuse_tasks_per_s"] / ray_rate, 2)
        if ray_rate
        else None,
    }
    notes = [] if ray_rate else ["ray not installed: `make bench` installs the bench group"]
    report("tiny-tasks", figures, ratios, notes=notes)


if __name__ == "__main__":
    main()
