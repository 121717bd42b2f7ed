"""The tensor handle that rides in message bodies: :class:`TensorRef`.

Owns the handle's fields, its msgpack-able dict form and the checks every
received handle goes through before anything maps or reads it (dtype known,
shape sane, ``nbytes = itemsize × prod(shape)``, segment name of ours, offset
aligned): any defect is ``shm.bad_handle``. Checks that need the segment itself
(offset + nbytes within it, the slot's generation) are in ``shm``/``plane``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Final

import numpy as np

from ..errors import SHM_BAD_HANDLE, WasmEngineError

#: Element types a handle may name: fixed-size, native little-endian numbers only
#: (no object, string or structured dtypes: those cannot be read from raw bytes safely).
DTYPES: Final[dict[str, np.dtype[Any]]] = {
    name: np.dtype(name)
    for name in (
        "bool", "int8", "int16", "int32", "int64", "uint8", "uint16", "uint32", "uint64",
        "float16", "float32", "float64", "complex64", "complex128",
    )
}  # fmt: skip
MAX_DIMS: Final = 32
ALIGN: Final = 64  # every slot's data starts on a 64-byte boundary (cache line, SIMD loads)
SEGMENT_PREFIX: Final = "wasm-engine-"
# a segment name is a file name under /dev/shm: no "/", no "..", nothing but these
_SEGMENT_NAME = re.compile(r"^wasm-engine-[A-Za-z0-9_-]{1,200}$")
LOCS: Final = ("shm", "inline")


def bad(message: str, **detail: Any) -> WasmEngineError:
    return WasmEngineError(SHM_BAD_HANDLE, message, detail=detail)


def valid_segment_name(name: str) -> bool:
    return bool(_SEGMENT_NAME.match(name))


def dtype_of(name: str) -> np.dtype[Any]:
    found = DTYPES.get(name)
    if found is None:
        raise bad(f"dtype {name!r} is not one of {sorted(DTYPES)}", field="dtype")
    return found


def nbytes_of(shape: tuple[int, ...], dtype: np.dtype[Any]) -> int:
    return dtype.itemsize * math.prod(shape)


@dataclass(frozen=True, slots=True)
class TensorRef:
    """A tensor somewhere else: in a slot of a shared-memory segment (``loc="shm"``:
    ``segment`` names it, ``offset`` is where the data starts) or in a blob of the same
    message (``loc="inline"``: ``offset`` is the blob's index, ``segment`` is empty).

    ``generation`` is the slot's use count: a reused slot has a new one, and an old
    handle is refused with ``shm.stale_handle``. ``owner`` names the process that owns
    the slot, ``ns`` its shm namespace (host + IPC namespace): a handle is only
    mappable where ``ns`` is the reader's own."""

    dtype: str
    shape: tuple[int, ...]
    loc: str
    segment: str
    offset: int
    nbytes: int
    generation: int
    owner: str
    ns: str

    @property
    def np_dtype(self) -> np.dtype[Any]:
        return dtype_of(self.dtype)

    def to_wire(self) -> dict[str, Any]:
        """The msgpack-able form carried in message bodies."""
        return {
            "dtype": self.dtype,
            "shape": list(self.shape),
            "loc": self.loc,
            "segment": self.segment,
            "offset": self.offset,
            "nbytes": self.nbytes,
            "generation": self.generation,
            "owner": self.owner,
            "ns": self.ns,
        }

    @classmethod
    def from_wire(cls, raw: Any) -> TensorRef:
        """Validate a received handle; ``shm.bad_handle`` naming the first defect."""
        if not isinstance(raw, dict):
            raise bad(f"a tensor handle must be a map, got {type(raw).__name__}")
        fields: dict[str, Any] = {}
        for name, kind in (
            ("dtype", str), ("loc", str), ("segment", str), ("owner", str), ("ns", str),
            ("offset", int), ("nbytes", int), ("generation", int),
        ):  # fmt: skip
            value = raw.get(name)
            if type(value) is not kind:
                raise bad(f"tensor handle field {name!r} must be {kind.__name__}", field=name)
            fields[name] = value
        shape = raw.get("shape")
        if (
            type(shape) is not list
            or len(shape) > MAX_DIMS
            or not all(type(d) is int and 0 <= d < 1 << 48 for d in shape)
        ):
            raise bad(f"shape must be a list of <= {MAX_DIMS} non-negative ints", field="shape")
        ref = cls(shape=tuple(shape), **fields)
        ref.check()
        return ref

    def check(self) -> None:
        """Checks that need nothing but the handle itself."""
        dtype = dtype_of(self.dtype)
        if self.loc not in LOCS:
            raise bad(f"loc must be one of {LOCS}, got {self.loc!r}", field="loc")
        expect = nbytes_of(self.shape, dtype)
        if self.nbytes != expect:
            raise bad(
                f"nbytes {self.nbytes} != {self.dtype} size × prod{list(self.shape)} = {expect}",
                field="nbytes",
                expected=expect,
            )
        if self.offset < 0 or self.generation < 0:
            raise bad("offset and generation must be >= 0", field="offset")
        if self.loc == "shm":
            if not valid_segment_name(self.segment):
                raise bad(f"segment {self.segment[:64]!r} is not a wasm-engine segment name")
            if self.offset % ALIGN or self.generation == 0:
                raise bad("offset must be slot-aligned and generation >= 1", field="offset")
