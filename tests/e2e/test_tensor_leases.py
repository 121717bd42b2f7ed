"""The tensor plane against a real orchestrator process: a worker killed -9 has its shm
segments unlinked by the orchestrator; a lease's holder killed -9 while reading is freed at
the lease's deadline and the owner told (``shm.free``); a release by the last holder frees at
once; bad releases get typed errors and the orchestrator keeps serving."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any

import msgpack
import numpy as np
import pytest
import zmq
from fault_helpers import FAST_HEARTBEATS, until

from wasm_engine import errors as E
from wasm_engine import messages as M
from wasm_engine.client import Client
from wasm_engine.envelope import decode, encode
from wasm_engine.local import LocalStack
from wasm_engine.protocol import make_header
from wasm_engine.tensors import Arena, TensorPlane, TensorRef, segments_of

pytestmark = pytest.mark.e2e
MiB = 1 << 20


def test_a_worker_killed_9_has_its_segments_unlinked_by_the_orchestrator(
    make_stack: Callable[..., LocalStack],
) -> None:
    stack = make_stack(1, shm_arena=4 * MiB, shm_segment=2 * MiB, **FAST_HEARTBEATS)
    names = until("the worker's arena", lambda: segments_of(stack.stack_id))
    assert len(names) == 2
    with Client(stack.front, timeout=30) as client:
        counters = client.status()["counters"]
        stack.kill(stack.workers[0], signal.SIGKILL)
        until("the orchestrator to unlink them", lambda: segments_of(stack.stack_id) == [])
        counters = client.status()["counters"]  # and it still serves
    assert counters["shm_segments_reclaimed"] == 2


def test_a_worker_stopping_unlinks_its_own(make_stack: Callable[..., LocalStack]) -> None:
    stack = make_stack(1, shm_arena=2 * MiB)
    until("the worker's arena", lambda: segments_of(stack.stack_id))
    proc = stack.workers[0]
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 0
    assert segments_of(stack.stack_id) == []


class Owner:
    """A segment owner speaking the worker protocol on a real DEALER, with a real arena."""

    def __init__(self, stack: LocalStack) -> None:
        self.plane = TensorPlane(Arena(stack.stack_id, 2 * MiB), owner="owner")
        assert self.plane.arena is not None
        self.ctx: zmq.Context[Any] = zmq.Context()
        self.sock = self.ctx.socket(zmq.DEALER)
        self.sock.setsockopt(zmq.ROUTING_ID, b"owner-1")
        self.sock.connect(stack.settings.back)
        hello = M.WorkerHello(
            "owner-1", "wasm", 1, ["none"], shm_ns=self.plane.ns,
            segments=self.plane.arena.describe(),  # type: ignore[arg-type]
        )  # fmt: skip
        self.send("worker.hello", hello.pack())
        assert self.wait_for("worker.welcome")

    def send(self, type_: str, body: bytes) -> None:
        self.sock.send_multipart(encode(make_header(type_, sender="owner-1"), body))

    def wait_for(self, type_: str, timeout: float = 20.0) -> M.Message | None:
        """Receive until ``type_``, beating all along (any frame counts as a heartbeat)."""
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.send("worker.heartbeat", M.WorkerHeartbeat("owner-1").pack())
            if self.sock.poll(100):
                env = decode(self.sock.recv_multipart())
                if env.header.type == type_:
                    return M.parse(type_, env.body)
        return None

    def close(self) -> None:
        self.send("worker.bye", M.WorkerBye().pack())
        self.sock.close(1000)
        self.ctx.term()
        self.plane.close()


@pytest.fixture
def owner(make_stack: Callable[..., LocalStack]) -> Iterator[tuple[LocalStack, Owner]]:
    stack = make_stack(0)
    one = Owner(stack)
    yield stack, one
    one.close()


def release(front: str, ref: TensorRef, holder: str, wait_s: float = 10.0) -> M.Message:
    ctx: zmq.Context[Any] = zmq.Context()
    sock = ctx.socket(zmq.DEALER)
    try:
        sock.connect(front)
        sock.send_multipart(
            encode(make_header("shm.release"), M.ShmRelease(ref.to_wire(), holder).pack())
        )
        if sock.poll(int(wait_s * 1000)):
            env = decode(sock.recv_multipart())
            return M.parse(env.header.type, env.body)
        return M.Status({}, [], {}, {})  # no answer: a release that worked says nothing
    finally:
        sock.close(0)
        ctx.term()


SPIN = """
import sys, msgpack
from wasm_engine.tensors import TensorPlane, TensorRef
ref = TensorRef.from_wire(msgpack.unpackb(bytes.fromhex(sys.argv[1])))
view = TensorPlane(owner="reader").open(ref)
print("reading", flush=True)
while True:
    view.sum()
"""


def test_a_holder_killed_9_while_reading_is_freed_at_the_lease_deadline(
    owner: tuple[LocalStack, Owner],
) -> None:
    _, own = owner
    data = np.arange(1 << 17, dtype=np.float32)
    ref = own.plane.publish(data, [])
    own.send("shm.lease", M.ShmLease(ref.to_wire(), ["reader-1"], ttl=1.0).pack())
    reader = subprocess.Popen(
        [sys.executable, "-c", SPIN, bytes(msgpack.packb(ref.to_wire())).hex()],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert reader.stdout is not None and reader.stdout.readline().strip() == "reading"
    os.kill(reader.pid, signal.SIGKILL)
    reader.wait(timeout=10)
    reader.stdout.close()
    free = own.wait_for("shm.free")
    assert isinstance(free, M.ShmFree)
    assert (free.segment, free.offset, free.generation) == (ref.segment, ref.offset, ref.generation)
    assert own.plane.release(ref)  # the owner reuses the slot; the old handle is refused
    again = own.plane.publish(np.zeros(1 << 17, np.float32), [])
    assert (again.segment, again.offset) == (ref.segment, ref.offset)
    with pytest.raises(Exception) as info:
        TensorPlane(owner="late").open(ref)
    assert getattr(info.value, "code", None) == E.SHM_STALE_HANDLE


def test_the_last_release_frees_at_once_and_bad_releases_are_typed(
    owner: tuple[LocalStack, Owner],
) -> None:
    stack, own = owner
    ref = own.plane.publish(np.ones(1 << 17, np.float32), [])
    own.send("shm.lease", M.ShmLease(ref.to_wire(), ["client-a", "client-b"]).pack())
    assert own.wait_for("shm.lease-never", timeout=0.3) is None  # let the lease land
    assert isinstance(release(stack.front, ref, "client-a", 0.3), M.Status)  # accepted, silent
    stale = release(stack.front, ref, "client-a")  # twice: it holds nothing any more
    assert isinstance(stale, M.Error) and stale.code == E.SHM_STALE_HANDLE
    bad = release(stack.front, TensorRef("float32", (4,), "shm", "x", 64, 16, 1, "", ""), "b")
    assert isinstance(bad, M.Error) and bad.code == E.SHM_BAD_HANDLE
    assert isinstance(release(stack.front, ref, "client-b", 0.3), M.Status)
    free = own.wait_for("shm.free")
    assert isinstance(free, M.ShmFree) and free.generation == ref.generation
    with Client(stack.front, timeout=10) as client:
        assert client.status()["counters"]["error:shm.stale_handle"] == 1
