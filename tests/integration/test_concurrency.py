"""``--concurrency K``: one worker computes K tasks at once on threads. The first
tasks of a new agent arrive together and must load it once (a race here once
answered ``wasm.agent_missing``); results stay right and in order."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from wasm_engine import Client
from wasm_engine.config import Settings

BUILD = Path(__file__).resolve().parents[2] / "agents" / "build"


def test_k_threads_load_a_new_agent_once_and_answer_every_task(
    make_stack: Callable[..., Settings],
) -> None:
    stack = make_stack(credits=8, concurrency=4)
    texts = [f"alpha beta {i}\n" * (50 + i) for i in range(32)]
    with Client(stack.front, timeout=60) as client:
        for round_ in range(3):  # a fresh agent each round: its first tasks race to load it
            name = f"textstats-{round_}"
            agent = client.put_agent(BUILD / "textstats.wasm", manifest={"name": name})
            results = client.run_many(agent, texts, window=16)
            assert [r.output["words"] for r in results] == [len(t.split()) for t in texts]
        status = client.status()
        assert status["counters"]["completed"] == 3 * len(texts)


def test_a_worker_waiting_for_a_free_permit_sleeps(make_stack: Callable[..., Settings]) -> None:
    """Tasks pending behind K busy threads: the loop polls for a free permit; it must
    also read the socket then, or a readable socket makes it spin (it once did)."""
    import time

    import wasmtime

    stack = make_stack(credits=64, concurrency=2)
    (loop,) = make_stack.loops  # type: ignore[attr-defined]
    spin = Path(__file__).resolve().parents[2] / "agents" / "wat" / "spin.wat"
    with Client(stack.front, timeout=60) as client:
        agent = client.put_agent(bytes(wasmtime.wat2wasm(spin.read_text())), name="spin")
        futures = [client.submit(agent, 100_000_000, fuel=10**11) for _ in range(6)]
        time.sleep(0.3)  # two run, four wait for a permit
        before = loop.polls
        for _ in range(10):  # and more messages keep arriving
            futures.append(client.submit(agent, 1000, fuel=10**11))
            time.sleep(0.05)
        slept = loop.polls - before
        client.wait(futures, 60)
        assert [f.result(0).output for f in futures] == [100_000_000] * 6 + [1000] * 10
    assert slept < 200, f"the loop polled {slept} times in 0.5 s: it spins"
