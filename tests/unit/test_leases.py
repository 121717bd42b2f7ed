"""Tensor leases in the orchestrator: the pure :class:`Leases` machine, and its hooks in the
scheduler (hello announces segments, shm.lease/shm.release, shm.free to the owner, reclaim of
a lost owner's segments). A fake clock, no sockets, no shared memory."""

from __future__ import annotations

from typing import Any

import pytest
from scheduler_harness import W1, W2, Harness, Out, S, dispatches, of_type, only

from orchestrator.leases import Free, Leases
from orchestrator.scheduler import BACK, FRONT
from wasm_engine import errors as E
from wasm_engine import messages as M
from wasm_engine.errors import WasmEngineError
from wasm_engine.protocol import make_header
from wasm_engine.tensors.ref import TensorRef

NS = "host-1/ipc:[1]"  # the harness's workers say this namespace
SEG = "wasm-engine-t-1-aa-1"
SEG2 = "wasm-engine-t-1-aa-2"


def ref(offset: int = 64, generation: int = 1, *, segment: str = SEG, ns: str = NS) -> TensorRef:
    return TensorRef("float32", (256,), "shm", segment, offset, 1024, generation, "w1", ns)


def code(fn: Any, *args: Any) -> str:
    with pytest.raises(WasmEngineError) as info:
        fn(*args)
    return info.value.code


# ---------------------------------------------------------------------- the machine


def test_last_release_frees_and_only_the_last() -> None:
    leases = Leases(ttl_ns=60 * S)
    leases.attach("w1", NS, [(SEG, 1 << 20)])
    leases.lease("w1", ref(), ["task-a", "task-b"], now=0)
    assert leases.release("task-a", SEG, 64, 1) is None
    assert leases.release("task-b", SEG, 64, 1) == Free("w1", SEG, 64, 1)
    assert code(leases.release, "task-b", SEG, 64, 1) == E.SHM_STALE_HANDLE  # already free
    assert leases.describe()["leases"] == 0


def test_handles_are_checked_against_the_segment() -> None:
    leases = Leases(ttl_ns=60 * S)
    leases.attach("w1", NS, [(SEG, 4096)])
    assert code(leases.lease, "w1", ref(segment=SEG2), ["t"], 0) == E.SHM_BAD_HANDLE  # unknown
    assert code(leases.lease, "w2", ref(), ["t"], 0) == E.SHM_BAD_HANDLE  # not w2's segment
    assert code(leases.lease, "w1", ref(offset=3584), ["t"], 0) == E.SHM_BAD_HANDLE  # past end
    assert code(leases.lease, "w1", ref(ns="other/ipc:[9]"), ["t"], 0) == E.SHM_FOREIGN_NAMESPACE
    assert code(leases.lease, "w1", ref(), [], 0) == E.SHM_BAD_HANDLE  # nobody holds it
    assert leases.describe()["leases"] == 0
    leases.lease("w1", ref(offset=3008), ["t"], 0)  # 3008 + 1024 = 4032 fits


def test_a_reused_slot_refuses_the_old_generation() -> None:
    leases = Leases(ttl_ns=60 * S)
    leases.attach("w1", NS, [(SEG, 1 << 20)])
    leases.lease("w1", ref(generation=1), ["a"], 0)
    leases.release("a", SEG, 64, 1)
    leases.lease("w1", ref(generation=2), ["b"], 0)  # the owner reused the slot
    assert code(leases.release, "a", SEG, 64, 1) == E.SHM_STALE_HANDLE
    assert code(leases.lease, "w1", ref(generation=1), ["c"], 0) == E.SHM_STALE_HANDLE


def test_a_segment_name_owned_by_another_is_refused_whole() -> None:
    leases = Leases(ttl_ns=60 * S)
    leases.attach("w1", NS, [(SEG, 1 << 20)])
    assert code(leases.attach, "w2", NS, [(SEG2, 1 << 20), (SEG, 1 << 20)]) == E.SHM_BAD_HANDLE
    assert SEG2 not in leases.segments  # all or none
    assert code(leases.attach, "w2", NS, [("../etc", 1 << 20)]) == E.SHM_BAD_HANDLE


def test_unreleased_leases_expire_at_their_deadline() -> None:
    leases = Leases(ttl_ns=10 * S)
    leases.attach("w1", NS, [(SEG, 1 << 20)])
    leases.lease("w1", ref(), ["dead-client"], now=0)
    leases.lease("w1", ref(offset=2048), ["x"], now=0, ttl_ns=30 * S)
    assert leases.expire(10 * S - 1) == []
    assert leases.expire(10 * S) == [Free("w1", SEG, 64, 1)]
    leases.lease("w1", ref(offset=2048), ["y"], now=25 * S)  # more holders: the deadline moves
    assert leases.expire(34 * S) == []  # from 30 s to 25 + 10 s
    assert leases.expire(35 * S) == [Free("w1", SEG, 2048, 1)]


def test_a_lost_holder_releases_and_a_lost_owner_loses_everything() -> None:
    leases = Leases(ttl_ns=60 * S)
    leases.attach("w1", NS, [(SEG, 1 << 20), (SEG2, 1 << 20)])
    leases.lease("w1", ref(), ["w2", "task-a"], 0)
    leases.lease("w1", ref(offset=4096), ["w2"], 0)
    assert leases.drop_holder("w2") == [Free("w1", SEG, 4096, 1)]
    assert leases.lose_owner("w1") == [SEG, SEG2]
    assert leases.describe() == {"segments": 0, "owners": 0, "leases": 0, "holds": 0}
    assert code(leases.release, "task-a", SEG, 64, 1) == E.SHM_STALE_HANDLE


# ---------------------------------------------------------------------- in the scheduler


def hello_with_segments(h: Harness, peer: bytes, segments: list[tuple[str, int]]) -> None:
    body = M.WorkerHello(
        name=peer.decode(), kind="wasm", credits=4, capabilities=["wasm"], host="host-1",
        shm_ns=NS, pid=1, segments=[{"name": n, "size": s} for n, s in segments],
    ).pack()  # fmt: skip
    msg = M.parse("worker.hello", body)
    assert isinstance(msg, M.WorkerHello)
    h.sched.hello(peer, make_header("worker.hello"), msg, h.now)


def lease(h: Harness, peer: bytes, r: TensorRef, holders: list[str], ttl: float = 0.0) -> None:
    msg = M.parse("shm.lease", M.ShmLease(r.to_wire(), holders, ttl).pack())
    assert isinstance(msg, M.ShmLease)
    h.sched.tensors.lease(peer, make_header("shm.lease"), msg, h.now)


def release(h: Harness, sock: int, peer: bytes, r: TensorRef, holder: str) -> None:
    msg = M.parse("shm.release", M.ShmRelease(r.to_wire(), holder).pack())
    assert isinstance(msg, M.ShmRelease)
    h.sched.tensors.release(sock, peer, make_header("shm.release"), msg)


def test_release_by_the_last_holder_sends_shm_free_to_the_owner() -> None:
    h = Harness()
    hello_with_segments(h, W1, [(SEG, 1 << 20)])
    h.take()
    lease(h, W1, ref(), ["client-x", "w2"])
    release(h, FRONT, b"client-x", ref(), "client-x")
    assert of_type(h.take(), "shm.free") == []
    release(h, BACK, W2, ref(), "w2")
    free = only(h.take(), "shm.free")
    assert (free.sock, free.peer) == (BACK, W1)
    assert (free.msg.segment, free.msg.offset, free.msg.generation) == (SEG, 64, 1)


def test_bad_lease_and_release_answer_typed_errors_and_change_nothing() -> None:
    h = Harness()
    hello_with_segments(h, W1, [(SEG, 4096)])
    h.take()
    lease(h, W2, ref(), ["x"])  # not registered
    assert only(h.take(), "error").msg.code == E.WORKER_UNKNOWN
    lease(h, W1, ref(offset=4032), ["x"])  # past the end
    assert only(h.take(), "error").msg.code == E.SHM_BAD_HANDLE
    release(h, FRONT, b"client-x", ref(), "x")  # nothing leased
    err = only(h.take(), "error")
    assert (err.sock, err.peer, err.msg.code) == (FRONT, b"client-x", E.SHM_STALE_HANDLE)
    assert h.sched.tensors.leases.describe()["leases"] == 0


def test_a_lost_owner_segments_are_reclaimed_in_our_namespace_only() -> None:
    h = Harness()
    h.sched.tensors.ns = NS  # the orchestrator shares W1's /dev/shm
    hello_with_segments(h, W1, [(SEG, 1 << 20)])
    hello_with_segments(h, W2, [(SEG2, 1 << 20)])
    h.worker(W2).shm_ns = "elsewhere/ipc:[7]"
    lease(h, W1, ref(), ["client-x"])
    h.advance(3.5)  # both silent for interval × liveness: lost
    h.tick()
    assert h.sched.tensors.reclaim == [SEG]
    assert h.sched.counters["shm_segments_reclaimed"] == 1
    assert h.sched.counters["shm_segments_elsewhere"] == 1
    release(h, FRONT, b"client-x", ref(), "client-x")  # its handles died with it
    assert only(h.take(), "error").msg.code == E.SHM_STALE_HANDLE


def test_re_hello_keeps_segments_and_a_lost_holder_worker_releases() -> None:
    h = Harness()
    h.sched.tensors.ns = NS
    hello_with_segments(h, W1, [(SEG, 1 << 20)])
    h.hello(W2)
    lease(h, W1, ref(), [W2.decode()])
    hello_with_segments(h, W1, [(SEG, 1 << 20)])  # the same process says hello again
    assert h.sched.tensors.reclaim == []
    assert SEG in h.sched.tensors.leases.segments
    h.take()
    lease(h, W1, ref(generation=2), [W2.decode()])
    h.bye(W2, [])  # the holder leaves: its hold is released, the owner told
    free = only(h.take(), "shm.free")
    assert (free.peer, free.msg.generation) == (W1, 2)


def test_lease_deadlines_run_on_the_scheduler_tick() -> None:
    h = Harness(lease_ttl=5.0)
    hello_with_segments(h, W1, [(SEG, 1 << 20)])
    lease(h, W1, ref(), ["quiet-client"])
    h.take()
    for _ in range(4):
        h.advance(1)
        h.heartbeat(W1)
        h.tick()
    assert of_type(h.take(), "shm.free") == []
    h.advance(1)
    h.heartbeat(W1)
    h.tick()
    assert only(h.take(), "shm.free").peer == W1


def test_holds_transfer_renewed_and_drop_by_holder() -> None:
    leases = Leases(ttl_ns=60 * S)
    leases.attach("w1", NS, [(SEG, 1 << 20)])
    leases.lease("w1", ref(64), ["child-1"], now=0)
    leases.lease("w1", ref(2048), ["child-1", "client"], now=0)
    assert leases.transfer("child-1", "parent", now=50 * S) == 2
    assert leases.holding == {"parent": {(SEG, 64), (SEG, 2048)}, "client": {(SEG, 2048)}}
    assert code(leases.release, "child-1", SEG, 64, 1) == E.SHM_STALE_HANDLE  # not its any more
    assert leases.expire(100 * S) == []  # renewed: 50 s + 60 s
    assert leases.drop_holder("parent") == [Free("w1", SEG, 64, 1)]  # 2048: the client holds it
    assert leases.release("client", SEG, 2048, 1) == Free("w1", SEG, 2048, 1)
    assert leases.holding == {} and leases.transfer("nobody", "x", 0) == 0


def test_the_holder_index_forgets_replaced_expired_and_lost_leases() -> None:
    leases = Leases(ttl_ns=60 * S)
    leases.attach("w1", NS, [(SEG, 1 << 20)])
    leases.lease("w1", ref(64, generation=1), ["old"], now=0)
    leases.lease("w1", ref(64, generation=2), ["new"], now=0)  # the slot reused
    assert "old" not in leases.holding
    assert leases.drop_holder("old") == []  # cannot free the new generation's lease
    leases.lease("w1", ref(2048), ["late"], now=0)
    leases.expire(61 * S)
    assert leases.holding == {}
    leases.lease("w1", ref(64, generation=3), ["h"], now=61 * S)
    leases.lose_owner("w1")
    assert leases.holding == {}


def plan_with_a_child() -> tuple[Harness, Out, Out]:
    """W1 owns a segment and runs task "plan", which asked for child "plan/0": both
    dispatched, neither answered."""
    h = Harness(lease_ttl=60.0)
    h.put_agent()
    hello_with_segments(h, W1, [(SEG, 1 << 20)])
    h.take()
    h.submit("plan")
    (parent,) = dispatches(h.take())
    h.child(parent, "plan/0")
    (child,) = dispatches(h.take())
    return h, parent, child


def test_a_parent_holds_its_children_tensors_until_it_finishes() -> None:
    """A child's published tensor (leased to the child's task id before its result)
    passes to the parent task at the child's end, and is freed when the parent ends,
    not at the lease's deadline."""
    h, parent, child = plan_with_a_child()
    lease(h, W1, ref(), ["plan/0"])  # the worker leases the child's output, then answers
    h.result(child, "a tensor handle")
    h.take()
    (held,) = h.sched.tensors.leases.leases.values()
    assert held.holders == {"plan\x00children"}
    h.advance(30)
    h.result(parent, "done")
    free = only(h.take(), "shm.free")
    assert (free.peer, free.msg.segment, free.msg.offset) == (W1, SEG, 64)
    assert h.sched.tensors.leases.describe()["leases"] == 0


def test_a_child_finishing_after_its_parent_frees_its_tensors_at_once() -> None:
    h, _, child = plan_with_a_child()
    h.cancel("plan")  # the parent ends first
    h.take()
    lease(h, W1, ref(), ["plan/0"])
    h.result(child, "a tensor handle")
    free = only(h.take(), "shm.free")  # nobody is left to read it
    assert (free.peer, free.msg.segment) == (W1, SEG)
