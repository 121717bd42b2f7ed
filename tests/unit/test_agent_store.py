"""The orchestrator's agent store is bounded: a put that does not fit evicts the least
recently used agents no live task needs; a submit naming an evicted one gets
``wasm.agent_missing`` (the SDK then puts it again). Driven through the scheduler."""

from __future__ import annotations

from scheduler_harness import W1, Harness, dispatches, only

from wasm_engine import errors as E

A, B, C = (b"\x00asm\x01\x00\x00\x00" + bytes([n]) * 1000 for n in (1, 2, 3))


def store_for_two() -> Harness:
    h = Harness()
    h.sched.agents.max_bytes = 2 * len(A) + 100
    return h


def test_a_full_store_evicts_the_least_recently_used_agent() -> None:
    h = store_for_two()
    a, b = h.put_agent(A).msg.digest, h.put_agent(B).msg.digest
    h.hello(W1)
    h.take()
    h.submit("uses-a", agent=a)  # a is now more recent than b
    (d,) = dispatches(h.take())
    h.result(d)
    h.take()

    c = h.put_agent(C).msg.digest
    assert h.sched.agents.get(b) is None  # evicted
    assert h.sched.agents.get(a) is not None and h.sched.agents.get(c) is not None
    assert h.sched.counters["agents_evicted"] == 1
    assert h.sched.agents.used <= h.sched.agents.max_bytes

    h.submit("uses-b", agent=b)
    assert only(h.take(), "error").msg.code == E.WASM_AGENT_MISSING
    assert h.put_agent(B).msg.digest == b  # put again (as the SDK does): a is evicted now
    h.submit("uses-b-again", agent=b)
    assert len(dispatches(h.take())) == 1


def test_agents_that_live_tasks_need_are_never_evicted() -> None:
    h = store_for_two()
    a, b = h.put_agent(A).msg.digest, h.put_agent(B).msg.digest
    h.submit("queued-a", agent=a)  # no worker yet: both stay queued
    h.submit("queued-b", agent=b)
    h.take()

    refused = h.put_agent_raw(C)
    assert refused.type == "error"
    assert (refused.msg.code, refused.msg.retryable) == (E.TASK_OVERLOADED, False)
    assert h.sched.agents.get(a) is not None and h.sched.agents.get(b) is not None

    h.hello(W1)  # the queued tasks run and finish: their agents are free to go
    for d in dispatches(h.take()):
        h.result(d)
    h.take()
    assert h.put_agent(C).type == "agent.stored"
    assert h.sched.counters["agents_evicted"] == 1
