"""Bad input on a real stack: hostile bytes on the sockets and duplicate task ids.

Every test runs a :class:`LocalStack` (a real orchestrator and real wasm-worker processes on
``ipc://`` endpoints in a private folder) and talks to it through the real SDK or a raw ZeroMQ
socket. Tasks that must stay in flight while a fault lands run ``agents/wat/spin.wat``: its input
is a msgpack uint N, it loops N times (about 1 ns each on a 2-core dev box) and returns N, so
each task's output names it and its run time is set by its input.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import zmq
from fault_helpers import (
    SPIN_FUEL,
    until,
    wasm,
)

from wasm_engine import errors as E
from wasm_engine import messages as M
from wasm_engine.client import Client
from wasm_engine.codec import packb
from wasm_engine.envelope import decode
from wasm_engine.errors import WasmEngineError
from wasm_engine.local import LocalStack
from wasm_engine.protocol import MAGIC, make_header

# ---------------------------------------------------------------------------- 6. hostile bytes


def exchange(sock: zmq.Socket[bytes], frames: list[bytes]) -> tuple[str, str | None]:
    """Send one raw message, read the one reply: (error code, reply parent)."""
    sock.send_multipart(frames)
    assert sock.poll(30_000, zmq.POLLIN), f"no reply to {[f[:20] for f in frames]}"
    env = decode(sock.recv_multipart())
    assert env.header.type == "error"
    msg = M.parse("error", env.body)
    assert isinstance(msg, M.Error)
    return msg.code, env.header.parent


@pytest.mark.e2e
def test_hostile_frames_get_typed_errors_and_orchestrator_keeps_running(
    make_stack: Callable[..., LocalStack],
) -> None:
    stack = make_stack(1)
    ctx: zmq.Context[zmq.Socket[bytes]] = zmq.Context()
    front = ctx.socket(zmq.DEALER)
    back = ctx.socket(zmq.DEALER)
    try:
        for sock, endpoint in ((front, stack.front), (back, stack.settings.back)):
            sock.setsockopt(zmq.LINGER, 0)
            sock.connect(endpoint)
        status_body = M.StatusGet().pack()

        def header(type_: str = "status.get") -> tuple[str, bytes]:
            h = make_header(type_, sender="hostile")
            return h.id, h.pack()

        assert exchange(front, [b"garbage"]) == (E.PROTO_BAD_FRAME, None)
        assert exchange(front, [b"\x00" * 64, b"more", b"still more"]) == (E.PROTO_BAD_FRAME, None)
        hid, raw = header()
        assert exchange(front, [b"WE/2", raw, status_body]) == (E.PROTO_VERSION, hid)
        future = make_header("status.get", sender="hostile")
        future.v = (2, 0)  # the right magic, a header of another major
        assert exchange(front, [MAGIC, future.pack(), status_body]) == (E.PROTO_VERSION, None)
        hid, raw = header("no.such.type")
        assert exchange(front, [MAGIC, raw, status_body]) == (E.PROTO_UNKNOWN_TYPE, hid)
        assert exchange(front, [MAGIC, b"\xc1 not msgpack", status_body]) == (
            E.PROTO_BAD_MSGPACK,
            None,
        )
        assert exchange(front, [MAGIC, packb([1, 2]), status_body]) == (E.PROTO_BAD_MSGPACK, None)
        hid, raw = header("task.submit")
        oversize = b"\x00" * ((8 << 20) + 1)
        assert exchange(front, [MAGIC, raw, oversize]) == (E.PROTO_TOO_LARGE, hid)
        hid, raw = header("task.submit")
        assert exchange(front, [MAGIC, raw, packb({"task_id": 7})])[0] == E.PROTO_BAD_FIELD
        hid, raw = header("worker.hello")
        assert exchange(front, [MAGIC, raw, status_body]) == (E.PROTO_UNEXPECTED, hid)
        # the worker-facing socket answers in kind
        assert exchange(back, [b"garbage"]) == (E.PROTO_BAD_FRAME, None)
        hid, raw = header("worker.bye")
        assert exchange(back, [MAGIC, raw, M.WorkerBye().pack()]) == (E.WORKER_UNKNOWN, hid)
        hid, raw = header("task.submit")  # a child request, from a worker never said hello
        assert exchange(back, [MAGIC, raw, status_body]) == (E.WORKER_UNKNOWN, hid)
        hid, raw = header("agent.put")
        assert exchange(back, [MAGIC, raw, status_body]) == (E.PROTO_UNEXPECTED, hid)

        # the same raw socket still gets a real answer, and so does a real client
        hid, raw = header()
        front.send_multipart([MAGIC, raw, status_body])
        assert front.poll(30_000, zmq.POLLIN)
        env = decode(front.recv_multipart())
        assert (env.header.type, env.header.parent) == ("status", hid)
    finally:
        front.close(0)
        back.close(0)
        ctx.term()

    with Client(stack.front, timeout=30) as client:
        echo = client.put_agent(wasm("echo"))
        assert client.run(echo, {"ok": True}).output == {"ok": True}
        status = client.status()
    assert stack.orchestrator is not None and stack.orchestrator.poll() is None
    counters = status["counters"]
    assert counters["bad_messages"] == 14
    assert "handler_errors" not in counters
    assert counters["completed"] == 1
    assert [w["state"] for w in status["workers"]] == ["ready"]


# ---------------------------------------------------------------------------- 7. duplicates


@pytest.mark.e2e
def test_duplicate_task_id_runs_once_and_conflicting_body_is_refused(
    make_stack: Callable[..., LocalStack],
) -> None:
    stack = make_stack(2)
    with Client(stack.front, timeout=30) as first, Client(stack.front, timeout=30) as second:
        spin_a = first.put_agent(wasm("spin"), name="spin")
        spin_b = second.put_agent(wasm("spin"), name="spin")
        assert spin_a == spin_b
        a = first.submit(spin_a, 400_000_000, task_id="dup-1", fuel=SPIN_FUEL)  # ~0.4 s
        until(
            "the first submit to run",
            lambda: sum(w["inflight"] for w in first.status()["workers"]) == 1,
        )
        b = second.submit(spin_b, 400_000_000, task_id="dup-1", fuel=SPIN_FUEL)  # while it runs
        ra, rb = a.result(30), b.result(30)
        assert ra.output == rb.output == 400_000_000
        assert ra.stats == rb.stats  # one run, one stored reply
        assert ra.stats["attempts"] == 1

        # after it finished: the stored reply again, nothing runs
        rc = second.run(spin_b, 400_000_000, task_id="dup-1", fuel=SPIN_FUEL)
        assert rc.stats == ra.stats
        with pytest.raises(WasmEngineError) as conflict:
            second.run(spin_b, 1, task_id="dup-1", fuel=SPIN_FUEL)
        assert conflict.value.code == E.TASK_CONFLICT
        with pytest.raises(WasmEngineError) as conflict:
            first.run(spin_a, 400_000_000, task_id="dup-1", fuel=1)  # same input, other limits
        assert conflict.value.code == E.TASK_CONFLICT

        status = first.status()
        counters = status["counters"]
        assert counters["submitted"] == 5
        assert counters["duplicates"] == 4
        assert counters["completed"] == 1
        assert counters["error:" + E.TASK_CONFLICT] == 2
        assert sum(w["completed"] for w in status["workers"]) == 1
