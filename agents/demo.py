"""`make demo`: start the local stack, run a real multi-agent workflow, stop it.

The workflow is one task of the ``planner`` agent (C, agents/src/planner.c): it
splits nothing itself, it fans out. Given the repository's docs cut into chunks,
it spawns one ``textstats`` agent per chunk (all at once: they run in parallel
on the wasm-worker pool), waits for them, spawns ``reduce_stats`` on their
outputs, then hands the merged statistics to ``summarize``, which asks the LLM
(SmolLM2 on an inference worker, through ``we.generate``) what the documents are
about. Every step is an agent task the orchestrator schedules, and every task
carries the planner's trace id: the demo listens to the orchestrator's
telemetry and prints each step's timings from it. The word count is checked
against Python's. Then bulk data goes through shared memory: the docs as a
4 MiB float32 tensor, summed by the ``tensor_ops`` agent from its handle, and a
tensor the agent publishes, read here in place. A burst of no-op tasks then
shows the per-task overhead.

``make demo`` builds the LLM once (``wasm-engine models build smollm2``, cached)
and starts one inference worker; with ``--no-llm`` the LLM step is skipped, and
the demo says so.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import zmq

from wasm_engine import Client
from wasm_engine import messages as M
from wasm_engine.benchmark import percentile
from wasm_engine.config import Settings, from_env
from wasm_engine.envelope import decode
from wasm_engine.stack_conf import monitor_url

ROOT = Path(__file__).resolve().parent.parent
WAT = ROOT / "agents" / "wat"
BUILD = ROOT / "agents" / "build"
log = logging.getLogger("demo")


def wasm_engine(*args: str) -> None:
    cmd = [str(Path(sys.executable).parent / "wasm-engine"), *args]
    subprocess.run(cmd, check=True)


def split_lines(text: str, size: int) -> list[str]:
    chunks, current, length = [], [], 0
    for line in text.splitlines(keepends=True):
        if current and length + len(line) > size:
            chunks.append("".join(current))
            current, length = [], 0
        current.append(line)
        length += len(line)
    return [*chunks, "".join(current)] if current else chunks


class Trace:
    """Collects the telemetry events of one trace id (a SUB socket on its own thread)."""

    def __init__(self, endpoint: str) -> None:
        self.ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
        self.sock = self.ctx.socket(zmq.SUB)
        self.sock.setsockopt(zmq.SUBSCRIBE, b"telemetry.events")
        self.sock.connect(endpoint)
        self.events: list[dict[str, Any]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            if not self.sock.poll(50):
                continue
            frames = self.sock.recv_multipart()
            msg = M.parse("telemetry.events", decode(frames[1:]).body)
            if isinstance(msg, M.TelemetryEvents):
                self.events.extend(msg.events)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.sock.close(0)
        self.ctx.term()

    def steps(self, trace: str, names: dict[str, str]) -> list[tuple[str, int, float]]:
        """(agent, tasks, ms from its first task queued to its last done) per agent."""
        agent_of: dict[str, str] = {}
        first: dict[str, int] = {}
        last: dict[str, int] = {}
        count: Counter[str] = Counter()
        for e in self.events:
            if e.get("trace") != trace:
                continue
            tid = e.get("task_id", "")
            if e["ev"] == "task.queued":
                name = names.get(e.get("agent") or "", e.get("model") or "?")
                agent_of[tid] = name
                first[name] = min(first.get(name, e["t"]), e["t"])
            elif e["ev"] == "task.done" and tid in agent_of:
                name = agent_of[tid]
                last[name] = max(last.get(name, e["t"]), e["t"])
                count[name] += 1
        order = sorted(first, key=first.__getitem__)
        return [(n, count[n], (last.get(n, first[n]) - first[n]) / 1e6) for n in order]


def put_agents(client: Client) -> tuple[Any, dict[str, str]]:
    """Store the workflow's agents; the planner's ref and every digest's name."""
    names = {}
    for name in ("textstats", "reduce_stats"):
        names[client.put_agent(BUILD / f"{name}.wasm", name=name).digest] = name
    summarize = client.put_agent(
        BUILD / "summarize.wasm",
        manifest={"name": "summarize", "grants": {"models": ["smollm2"]}},
    )
    planner = client.put_agent(
        BUILD / "planner.wasm",
        manifest={
            "name": "planner",
            "grants": {"agents": ["textstats", "reduce_stats", "summarize"]},
            "limits": {"children": 256},
        },
    )
    names[summarize.digest], names[planner.digest] = "summarize", "planner"
    return planner, names


def llm_ready(client: Client) -> bool:
    return any("smollm2" in w["capabilities"] for w in client.status()["workers"])


def tensor_step(client: Client, settings: Settings, text: str) -> None:
    """Bulk data through shared memory: the docs as a float32 signal in a slot of our
    own arena, summed by the ``tensor_ops`` agent through ``we.tensor_read`` (only the
    handle crosses the sockets), then a tensor the agent publishes, read here in place."""
    import numpy as np

    from wasm_engine.tensors import TensorRef, process

    signal = np.frombuffer(text.encode() * 12, np.uint8).astype(np.float32) / 255.0
    plane = process.plane_for(settings.replace(shm_arena=64 << 20), f"demo-{os.getpid()}")
    try:
        ops = client.put_agent(BUILD / "tensor_ops.wasm", name="tensor_ops")
        t0 = time.perf_counter()
        ref = plane.publish(signal, [], in_shm=True)
        summed = client.run(ops, {"op": "sum", "ref": ref.to_wire()})
        t_sum = time.perf_counter() - t0
        want = float(signal.sum(dtype=np.float64))
        plane.release(ref)
        t0 = time.perf_counter()
        made = client.run(ops, {"op": "publish", "n": 262_144, "scale": 0.5})
        view = plane.open(TensorRef.from_wire(made.output["refs"][0]))
        ok = bool(view[-1] == 262_143 * 0.5)
        del view
        client.release_tensors(made)
        t_pub = time.perf_counter() - t0
        print(f"\ntensors through shared memory: {signal.nbytes / 2**20:.1f} MiB summed by a wasm "
              f"agent in {t_sum * 1000:.1f} ms ({summed.output['sum']:.1f}, numpy "
              f"{want:.1f}); a 1 MiB tensor it published read here in place in "
              f"{t_pub * 1000:.1f} ms ({'ok' if ok else 'WRONG'})")  # fmt: skip
        if abs(summed.output["sum"] - want) > 1e-6 * abs(want) or not ok:
            raise SystemExit("the shared-memory tensor step gave a wrong answer")
    finally:
        plane.close()


def noop_burst(client: Client) -> None:
    """The per-task overhead: a burst of no-op tasks, then latency one at a time."""
    noop = client.put_agent(WAT / "noop.wat", reuse=True)
    n = 5000
    t0 = time.perf_counter()
    client.run_many(noop, range(n), window=64)
    rate = n / (time.perf_counter() - t0)
    lat = []
    for i in range(300):
        t = time.perf_counter()
        client.run(noop, i)
        lat.append((time.perf_counter() - t) * 1e6)
    print(f"\nno-op burst: {n} tasks at {rate:,.0f} tasks/s; one in flight: p50 "
          f"{percentile(lat, 50):.0f} us, p99 {percentile(lat, 99):.0f} us")  # fmt: skip
    workers = Counter(w["kind"] for w in client.status()["workers"])
    print(f"stack: {dict(workers)} workers; counters {client.status()['counters']}")


def workflow(settings: Settings) -> None:
    front = settings.front
    trace = Trace(settings.telemetry)
    try:
        with Client(front, timeout=300) as client:
            planner, names = put_agents(client)

            docs = sorted(ROOT.glob("*.md")) + sorted((ROOT / "docs").glob("*.md"))
            docs += sorted((ROOT / "agents").glob("*.md"))
            text = "\n".join(p.read_text(errors="replace") for p in docs)
            chunks = split_lines(text, 8192)  # whole lines: no word is cut in two
            job: dict[str, Any] = {"agent": "textstats", "inputs": chunks, "reduce": "reduce_stats"}
            with_llm = llm_ready(client)
            if with_llm:
                job["then"] = "summarize"
            log.info(
                "planner: %d chunks of %d docs (%d chars) -> textstats x%d -> reduce_stats%s",
                len(chunks), len(docs), len(text), len(chunks),
                " -> summarize (LLM)" if with_llm else "",
            )  # fmt: skip
            t0 = time.perf_counter()
            res = client.run(planner, job, task_id=f"demo-{os.getpid()}-{time.time_ns()}", seed=1)
            wall = time.perf_counter() - t0
            if "error" in res.output:
                raise SystemExit(f"the planner failed: {res.output['error']}")
            stats = res.output["result"]
            words = len(re.findall(rb"[A-Za-z0-9]+", text.encode()))
            print(f"\ntext statistics of the docs: {stats['words']} words (Python counts {words}), "
                  f"{stats['lines']} lines, {stats['bytes']} bytes")  # fmt: skip
            print("top words: " + ", ".join(f"{w} {n}" for w, n in stats["top"][:8]))
            if with_llm:
                llm = res.output["then"]
                print(f"LLM ({llm['device']}, {llm['tokens']} tokens): {llm['answer'].strip()}")
            else:
                print("LLM step skipped: no inference worker serves smollm2 "
                      "(build it: wasm-engine models build smollm2)")  # fmt: skip
            time.sleep(0.3)  # the last telemetry batch
            print(f"\nworkflow: {res.output['children']} child tasks, {wall * 1000:.0f} ms, "
                  f"{res.stats['fuel_used']:,} fuel in the planner itself")  # fmt: skip
            print(f"{'step (from the trace)':<22} {'tasks':>5} {'queued->done ms':>16}")
            for name, n, wall_ms in trace.steps(res.task_id, names):
                print(f"{name:<22} {n:>5} {wall_ms:>16.1f}")
            if stats["words"] != words:
                raise SystemExit("word count differs from Python's")

            tensor_step(client, settings, text)
            noop_burst(client)
    finally:
        trace.close()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--keep", action="store_true", help="leave the stack running afterwards")
    ap.add_argument("--wasm-workers", type=int, default=2)
    ap.add_argument("--no-llm", action="store_true", help="skip the LLM step (no model build)")
    a = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s demo: %(message)s")
    os.environ.setdefault("WASM_ENGINE_WASM_WORKERS", str(a.wasm_workers))
    if not a.no_llm:
        wasm_engine("models", "build", "smollm2")  # once: cached after the first build
        os.environ.setdefault("WASM_ENGINE_INFERENCE_WORKERS", "1")
    settings = from_env()
    wasm_engine("up")
    try:
        workflow(settings)
    finally:
        if a.keep:
            url = monitor_url(settings) or "off"
            print(f"stack left running: front {settings.front}, monitor {url}; `make down` stops")
        else:
            wasm_engine("down")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
