"""Tensors as values in a task's input or output (``infer`` requests and results).

A tensor value is one msgpack map, either
- *inline*: ``{"dtype", "shape", "data": bin}`` (row-major, little-endian): the
  bytes ride in the message body, for small tensors and across hosts; or
- a *shm handle*: a :class:`TensorRef` wire map (``loc: "shm"``): the bytes stay
  in a shared-memory slot and the reader maps them, no copy.
:func:`to_value` picks by size (:data:`INLINE_THRESHOLD`) when given a plane with an
arena; :func:`from_value` reads either (a read-only numpy array).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .plane import INLINE_THRESHOLD, TensorPlane
from .ref import MAX_DIMS, TensorRef, bad, dtype_of


def inline(array: np.ndarray[Any, Any]) -> dict[str, Any]:
    a = np.ascontiguousarray(array)
    dtype_of(a.dtype.name)  # refuse dtypes a handle cannot name
    return {"dtype": a.dtype.name, "shape": list(a.shape), "data": a.tobytes()}


def to_value(
    array: np.ndarray[Any, Any], plane: TensorPlane | None = None, threshold: int = INLINE_THRESHOLD
) -> tuple[dict[str, Any], TensorRef | None]:
    """The value for ``array`` and, when it went to shared memory, its handle (the
    caller owns that slot: it releases it, or leases it, when the reader is done)."""
    a = np.asarray(array)
    if plane is None or plane.arena is None or a.nbytes < threshold:
        return inline(a), None
    ref = plane.publish(a, [], in_shm=True)
    return ref.to_wire(), ref


def from_value(value: Any, plane: TensorPlane | None = None) -> np.ndarray[Any, Any]:
    """A read-only array from a tensor value (``shm.bad_handle`` & co. when it is not one)."""
    if not isinstance(value, dict):
        raise bad(f"a tensor value must be a map, got {type(value).__name__}")
    if "loc" in value:
        ref = TensorRef.from_wire(value)
        if plane is None or ref.loc != "shm":
            raise bad("a handle here must name shared memory this process can map", field="loc")
        return plane.open(ref)
    name = value.get("dtype")
    dtype = dtype_of(name if isinstance(name, str) else "")
    shape, data = value.get("shape"), value.get("data")
    if (
        type(shape) is not list
        or len(shape) > MAX_DIMS
        or not all(type(d) is int and d >= 0 for d in shape)
    ):
        raise bad(f"shape must be a list of <= {MAX_DIMS} non-negative ints", field="shape")
    if not isinstance(data, bytes) or len(data) != dtype.itemsize * math.prod(shape):
        raise bad("data must be bin of itemsize × prod(shape) bytes", field="data")
    out: np.ndarray[Any, Any] = np.frombuffer(data, dtype).reshape(shape)
    return out
