"""The pure parts of the tensor plane: the slot allocator and the handle's own checks."""

from __future__ import annotations

from typing import Any

import pytest

from wasm_engine import errors as E
from wasm_engine.errors import WasmEngineError
from wasm_engine.tensors.ref import TensorRef
from wasm_engine.tensors.slots import SlotAllocator


def test_allocator_first_fit_aligned_and_coalescing() -> None:
    a = SlotAllocator(1024, align=64)
    x, y, z = a.alloc(100), a.alloc(64), a.alloc(1)
    assert (x, y, z) == (0, 128, 192)
    assert a.used == {0: 128, 128: 64, 192: 64}
    assert a.free(128) and not a.free(128)  # a double free is refused, nothing changes
    assert a.alloc(65) == 256  # the 64-byte hole is too small: first fit goes on
    assert a.alloc(64) == 128  # and the hole is used by what fits
    for start in (0, 128, 192, 256):
        assert a.free(start)
    assert a.free_bytes == 1024 and a.largest == 1024  # all merged back into one range


def test_allocator_full_returns_none_and_changes_nothing() -> None:
    a = SlotAllocator(256, align=64)
    assert a.alloc(256) == 0
    assert a.alloc(1) is None
    assert a.free_bytes == 0 and a.used == {0: 256}


def wire(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "dtype": "float32",
        "shape": [4, 8],
        "loc": "shm",
        "segment": "wasm-engine-abc-1-ff-1",
        "offset": 64,
        "nbytes": 128,
        "generation": 3,
        "owner": "w1",
        "ns": "host/ipc:[1]",
    }
    base.update(changes)
    return base


def test_a_good_handle_round_trips() -> None:
    ref = TensorRef.from_wire(wire())
    assert ref.shape == (4, 8) and TensorRef.from_wire(ref.to_wire()) == ref


@pytest.mark.parametrize(
    "changes",
    [
        {"nbytes": 127},  # dtype × shape does not match nbytes
        {"dtype": "float32", "shape": [4, 9]},
        {"dtype": "object"},  # not a plain number type
        {"dtype": "<U8"},
        {"shape": [-1, 8]},
        {"shape": "4x8"},
        {"loc": "gpu"},
        {"segment": "../../etc/passwd"},  # a name is a file name under /dev/shm: only ours
        {"segment": "wasm-engine-a/../../x"},
        {"segment": "other-segment"},
        {"offset": 65},  # not slot-aligned
        {"offset": -64},
        {"generation": 0},
        {"generation": "3"},
        {"owner": None},
    ],
)
def test_malformed_handles_are_bad_handle(changes: dict[str, Any]) -> None:
    with pytest.raises(WasmEngineError) as info:
        TensorRef.from_wire(wire(**changes))
    assert info.value.code == E.SHM_BAD_HANDLE


def test_a_handle_that_is_not_a_map_is_bad_handle() -> None:
    with pytest.raises(WasmEngineError) as info:
        TensorRef.from_wire([1, 2])
    assert info.value.code == E.SHM_BAD_HANDLE
