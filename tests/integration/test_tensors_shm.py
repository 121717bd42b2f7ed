"""The tensor plane on real shared memory, with real reader processes: every bad handle of
issue 5 answered with its typed error, the arena's backpressure, the inline fallback, the
preflight, and a reader killed -9 while reading (the owner's data must survive it)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from wasm_engine import errors as E
from wasm_engine.errors import WasmEngineError
from wasm_engine.tensors import (
    Arena,
    TensorPlane,
    TensorRef,
    check_shm_space,
    reap,
    segments_of,
)

MiB = 1 << 20


@pytest.fixture
def owner() -> Iterator[TensorPlane]:
    stack = f"t{os.getpid()}x{os.urandom(2).hex()}"
    plane = TensorPlane(Arena(stack, 4 * MiB, segment_size=2 * MiB), owner="owner")
    yield plane
    plane.close()
    assert segments_of(stack) == []


@pytest.fixture
def reader() -> Iterator[TensorPlane]:
    plane = TensorPlane(owner="reader")
    yield plane
    plane.close()


def code(fn: object, *args: object) -> str:
    with pytest.raises(WasmEngineError) as info:
        fn(*args)  # type: ignore[operator]
    return info.value.code


def run_child(script: str, *args: str, **popen: object) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", script, *args], text=True, stdout=subprocess.PIPE, **popen
    )  # type: ignore[call-overload, no-any-return]


READ = """
import sys, msgpack, numpy as np
from wasm_engine.tensors import TensorPlane, TensorRef
ref = TensorRef.from_wire(msgpack.unpackb(bytes.fromhex(sys.argv[1])))
view = TensorPlane(owner="child").open(ref)
print(float(view.sum(dtype=np.float64)), view.flags.writeable, flush=True)
"""


def wire_hex(ref: TensorRef) -> str:
    import msgpack

    return bytes(msgpack.packb(ref.to_wire())).hex()


def test_another_process_reads_a_published_tensor_in_place(owner: TensorPlane) -> None:
    data = np.arange(1 << 18, dtype=np.float32)
    ref = owner.publish(data, [])
    assert ref.loc == "shm"
    out = subprocess.run(
        [sys.executable, "-c", READ, wire_hex(ref)], capture_output=True, text=True, check=True
    ).stdout.split()
    assert float(out[0]) == float(data.sum(dtype=np.float64)) and out[1] == "False"


def test_a_loan_is_written_in_place_and_sent_as_its_handle(
    owner: TensorPlane, reader: TensorPlane
) -> None:
    loan = owner.loan((512, 256), "float32")
    loan.array[:] = 2.5  # computed straight into the slot
    ref = owner.share(loan, [])
    view = reader.open(ref)
    assert view.shape == (512, 256) and float(view.sum()) == 2.5 * 512 * 256
    with pytest.raises(ValueError):
        view[0, 0] = 1.0  # a reader's view is read-only


def test_a_receiver_fills_an_output_slot_in_place(owner: TensorPlane) -> None:
    ref = owner.share(owner.loan((1024,), "int64", in_shm=True), [])  # 8 KiB: shm all the same
    fill = (
        "import sys, msgpack, numpy as np\n"
        "from wasm_engine.tensors import TensorPlane, TensorRef\n"
        "ref = TensorRef.from_wire(msgpack.unpackb(bytes.fromhex(sys.argv[1])))\n"
        "TensorPlane(owner='child').open_output(ref)[:] = np.arange(1024)\n"
    )
    subprocess.run([sys.executable, "-c", fill, wire_hex(ref)], check=True)
    assert owner.open(ref).tolist() == list(range(1024))


def test_a_ref_to_a_segment_that_does_not_exist_is_stale(reader: TensorPlane) -> None:
    ref = TensorRef("float32", (16,), "shm", "wasm-engine-nosuch-1-aa-1", 64, 64, 1, "x", reader.ns)
    with pytest.raises(WasmEngineError) as info:
        reader.open(ref)
    assert info.value.code == E.SHM_STALE_HANDLE
    assert info.value.detail["reason"] == "no_segment"


def test_offset_or_length_past_the_end_is_bad_handle(
    owner: TensorPlane, reader: TensorPlane
) -> None:
    ref = owner.publish(np.ones(1 << 16, np.float32), [])
    end = 2 * MiB
    past = replace(ref, offset=end - 64, shape=(32,), nbytes=128)
    assert code(reader.open, past) == E.SHM_BAD_HANDLE
    huge = replace(ref, shape=(1 << 20,), nbytes=4 * MiB)
    assert code(reader.open, huge) == E.SHM_BAD_HANDLE
    under = replace(ref, offset=0)  # would read the slot header as data
    assert code(reader.open, under) == E.SHM_BAD_HANDLE


def test_dtype_or_shape_not_matching_nbytes_is_bad_handle(owner: TensorPlane) -> None:
    wire = owner.publish(np.ones(1 << 16, np.float32), []).to_wire()
    assert code(TensorRef.from_wire, {**wire, "dtype": "float64"}) == E.SHM_BAD_HANDLE
    assert code(TensorRef.from_wire, {**wire, "shape": [3, 3]}) == E.SHM_BAD_HANDLE


def test_a_stale_generation_is_refused_after_the_slot_is_reused(
    owner: TensorPlane, reader: TensorPlane
) -> None:
    old = owner.publish(np.full(1 << 16, 1.0, np.float32), [])
    assert reader.open(old)[0] == 1.0
    assert owner.release(old) and not owner.release(old)  # a second free changes nothing
    new = owner.publish(np.full(1 << 16, 7.0, np.float32), [])
    assert (new.segment, new.offset) == (old.segment, old.offset)  # the same slot, reused
    assert new.generation > old.generation
    assert code(reader.open, old) == E.SHM_STALE_HANDLE
    assert not reader.current(old) and reader.current(new)
    assert reader.open(new)[0] == 7.0


def test_a_ref_for_another_shm_namespace_is_refused(
    owner: TensorPlane, reader: TensorPlane
) -> None:
    ref = owner.publish(np.ones(1 << 16, np.float32), [])
    assert code(reader.open, replace(ref, ns="other-host/ipc:[4026531839]")) == (
        E.SHM_FOREIGN_NAMESPACE
    )


def test_across_namespaces_the_same_api_sends_inline(owner: TensorPlane) -> None:
    blobs: list[bytes] = []
    data = np.arange(1 << 16, dtype=np.float32)
    ref = owner.publish(data, blobs, dest_ns="other-host/ipc:[1]")
    loan = owner.loan((8, 8), "float64", dest_ns="other-host/ipc:[1]")
    loan.array[:] = 3.0
    ref2 = owner.share(loan, blobs)
    assert (ref.loc, ref.offset, ref2.loc, ref2.offset) == ("inline", 0, "inline", 1)
    there = TensorPlane(owner="remote", ns="other-host/ipc:[1]")  # no arena, another host
    assert np.array_equal(there.open(ref, blobs), data)
    assert float(there.open(ref2, blobs).sum()) == 192.0
    assert code(there.open, ref, [blobs[0][:-4]]) == E.SHM_BAD_HANDLE  # blob ≠ nbytes
    assert code(there.open, replace(ref, offset=5), blobs) == E.SHM_BAD_HANDLE  # no blob 5
    small = TensorPlane(owner="s", inline_cap=1024)
    assert code(small.publish, data, []) == E.SHM_INLINE_TOO_LARGE


def test_small_tensors_go_inline_on_one_host_too(owner: TensorPlane) -> None:
    ref = owner.publish(np.ones(16, np.float32), blobs := [])
    assert ref.loc == "inline" and len(blobs) == 1


def test_arena_full_is_typed_backpressure_without_a_leak(owner: TensorPlane) -> None:
    assert owner.arena is not None
    total = owner.arena.free_bytes
    refs = []
    with pytest.raises(WasmEngineError) as info:
        while True:  # 512 KiB slots (+ a 64 B header each): 3 per 2 MiB segment
            refs.append(owner.share(owner.loan((MiB // 8,), "float32"), []))
    assert info.value.code == E.SHM_ARENA_FULL and info.value.retryable
    assert info.value.detail["requested"] == MiB // 2 and len(refs) == 6
    assert owner.release(refs.pop())  # a holder is done: the next loan fits (backpressure)
    refs.append(owner.share(owner.loan((MiB // 8,), "float32"), []))
    for ref in refs:
        assert owner.release(ref)
    assert owner.arena.free_bytes == total  # everything back, nothing lost
    owner.release(owner.share(owner.loan((MiB // 2 - 16,), "float32"), []))  # 2 MiB - 64 fits


def test_a_reader_killed_while_reading_leaves_the_owner_whole(
    owner: TensorPlane, reader: TensorPlane
) -> None:
    data = np.arange(1 << 18, dtype=np.float32)
    ref = owner.publish(data, [])
    spin = (
        READ.replace("view = TensorPlane", "plane = TensorPlane")
        .replace(
            "print(float(view.sum(dtype=np.float64)), view.flags.writeable, flush=True)",
            "view = plane.open(ref)\nprint('reading', flush=True)\nwhile True: view.sum()",
        )
        .replace('(owner="child").open(ref)', "(owner='child')")
    )
    child = run_child(spin, wire_hex(ref))
    assert child.stdout is not None and child.stdout.readline().strip() == "reading"
    os.kill(child.pid, signal.SIGKILL)
    assert child.wait(timeout=10) == -signal.SIGKILL
    assert Path("/dev/shm", ref.segment).exists()  # no resource tracker unlinked it
    assert np.array_equal(reader.open(ref), data)  # the data is intact and still served


def test_preflight_says_what_to_change_when_dev_shm_is_too_small() -> None:
    free = os.statvfs("/dev/shm").f_bavail * os.statvfs("/dev/shm").f_frsize
    with pytest.raises(WasmEngineError) as info:
        check_shm_space(free + (1 << 40))
    err = info.value
    assert err.code == E.SHM_TOO_SMALL
    assert "shm_size:" in err.message and "ipc:" in err.message
    assert err.detail["need"] == free + (1 << 40)
    with pytest.raises(WasmEngineError) as info:  # and no arena is created half-way
        Arena("tpre", free + (1 << 40))
    assert info.value.code == E.SHM_TOO_SMALL and segments_of("tpre") == []
    assert code(check_shm_space, 1, Path("/no/such/shm")) == E.SHM_TOO_SMALL
    check_shm_space(MiB)  # and a size that fits passes


def test_reap_removes_exactly_one_stacks_segments() -> None:
    a, b = Arena("treapa", MiB), Arena("treapb", MiB)
    try:
        assert reap("treapa") == list(a.segments) and segments_of("treapa") == []
        assert segments_of("treapb") == list(b.segments)
    finally:
        a.close()
        b.close()


def test_a_reader_lets_go_of_segments_their_owner_unlinked(reader: TensorPlane) -> None:
    """A mapping outlives the segment's name: without ``sweep`` a long-lived reader would
    keep the pages of every closed client's arena. A view still alive keeps its mapping."""
    stack = f"t{os.getpid()}x{os.urandom(2).hex()}"
    first = TensorPlane(Arena(stack, 2 * MiB, segment_size=2 * MiB), owner="client-1")
    second = TensorPlane(Arena(stack + "b", 2 * MiB, segment_size=2 * MiB), owner="client-2")
    try:
        ref1 = first.publish(np.arange(1024, dtype=np.float32), [], in_shm=True)
        ref2 = second.publish(np.ones(1024, dtype=np.float32), [], in_shm=True)
        assert reader.open(ref1).sum() == sum(range(1024))
        held = reader.open(ref2)
        assert reader.sweep() == 0  # both still named
        first.close()  # a client closes: its arena is unlinked
        assert reader.sweep() == 1
        second.close()
        assert reader.sweep() == 1 and held.sum() == 1024  # the live view still reads
        assert reader.sweep() == 0
    finally:
        first.close()
        second.close()
