"""A process's face of the tensor plane: publish, loan, share, open, release.

One :class:`TensorPlane` per process. It owns that process's :class:`Arena` (when
it has one), the segments it has mapped to read others' tensors (mapped once,
kept: a second handle into the same segment costs no syscall and no page fault;
``sweep`` lets go of those whose owner unlinked them, so their pages are freed)
and the choice between shared memory and inline blobs:

- ``publish(array, blobs)`` copies an existing array once, into a slot (or into
  a blob appended to ``blobs``);
- ``loan(shape, dtype)`` hands out a writable array to compute into; ``share``
  then turns it into a handle at O(1) cost for a shm slot;
- ``open(ref, blobs)`` is a read-only numpy view of the data, no copy;
  ``open_output(ref)`` a writable view of a slot someone asked us to fill.

A tensor goes inline (as a blob of the message) when the receiver is in another
shm namespace (``dest_ns``), when it is under :data:`INLINE_THRESHOLD`, or when
this process has no arena; inline tensors are capped at ``inline_cap``
(``shm.inline_too_large``).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import numpy as np

from ..errors import SHM_FOREIGN_NAMESPACE, SHM_INLINE_TOO_LARGE, SHM_STALE_HANDLE, WasmEngineError
from .arena import Arena
from .ref import TensorRef, bad, dtype_of, nbytes_of
from .shm import HEADER, SHM_DIR, Segment, shm_namespace

log = logging.getLogger("wasm_engine.tensors")

#: Below this many bytes a tensor travels inline even when the receiver shares our
#: /dev/shm: measured by ``wasm-engine bench tensor-handoff`` (docs/tensors.md).
INLINE_THRESHOLD: Final = 64 << 10
INLINE_CAP: Final = 64 << 20  # the envelope's blob limit


@dataclass(slots=True)
class Loan:
    """A writable array to compute into, and the handle it will travel as. For an
    inline loan ``ref`` is None until :meth:`TensorPlane.share` appends the blob."""

    array: np.ndarray[Any, Any]
    ref: TensorRef | None


class TensorPlane:
    def __init__(
        self,
        arena: Arena | None = None,
        *,
        owner: str = "",
        ns: str | None = None,
        inline_threshold: int = INLINE_THRESHOLD,
        inline_cap: int = INLINE_CAP,
        shm_dir: Path = SHM_DIR,
    ) -> None:
        self.arena = arena
        self.owner = owner
        self.ns = ns if ns is not None else shm_namespace()
        self.inline_threshold = inline_threshold
        self.inline_cap = inline_cap
        self.shm_dir = shm_dir
        self._mapped: dict[tuple[str, bool], Segment] = {}
        self._lock = threading.RLock()  # mapping and viewing vs sweep (another thread)

    # ------------------------------------------------------------------ producing
    def goes_inline(self, nbytes: int, dest_ns: str | None) -> bool:
        return (
            self.arena is None
            or (dest_ns is not None and dest_ns != self.ns)
            or nbytes < self.inline_threshold
        )

    def loan(
        self, shape: Sequence[int], dtype: str, *, dest_ns: str | None = None, in_shm: bool = False
    ) -> Loan:
        """A writable array of ``shape``/``dtype`` in a slot of our arena (or, for an
        inline tensor, in ordinary memory); ``shm.arena_full`` when no slot fits.
        ``in_shm`` skips the size threshold: an output slot another process fills
        must be in shared memory whatever its size."""
        np_dtype = dtype_of(dtype)
        dims = tuple(int(d) for d in shape)
        nbytes = nbytes_of(dims, np_dtype)
        arena = self.arena
        if arena is None or (
            self.goes_inline(nbytes, dest_ns) and not (in_shm and dest_ns in (None, self.ns))
        ):
            self._check_cap(nbytes)
            return Loan(np.empty(dims, np_dtype), None)
        slot = arena.alloc(nbytes)
        array: np.ndarray[Any, Any] = np.frombuffer(
            slot.segment.mm, np_dtype, count=nbytes // np_dtype.itemsize, offset=slot.offset
        ).reshape(dims)
        ref = TensorRef(
            dtype, dims, "shm", slot.segment.name, slot.offset, nbytes, slot.generation,
            self.owner, self.ns,
        )  # fmt: skip
        return Loan(array, ref)

    def share(self, loan: Loan, blobs: list[bytes]) -> TensorRef:
        """The handle of a loan, to put in a message body: O(1) for a slot; an inline
        loan is copied into a new blob appended to ``blobs``."""
        if loan.ref is not None:
            return loan.ref
        return self._inline(loan.array, blobs)

    def publish(
        self,
        array: np.ndarray[Any, Any],
        blobs: list[bytes],
        *,
        dest_ns: str | None = None,
        in_shm: bool = False,
    ) -> TensorRef:
        """Copy ``array`` once, into a slot (or a blob appended to ``blobs``). ``in_shm``
        skips the size threshold, as for :meth:`loan` (agents read shm handles only)."""
        array = np.asarray(array)
        name = array.dtype.name
        dtype_of(name)  # refuse dtypes a handle cannot name
        if self.goes_inline(array.nbytes, dest_ns) and not (
            in_shm and self.arena is not None and dest_ns in (None, self.ns)
        ):
            return self._inline(array, blobs)
        loan = self.loan(array.shape, name, dest_ns=dest_ns, in_shm=in_shm)
        np.copyto(loan.array, array)
        return self.share(loan, blobs)

    def _check_cap(self, nbytes: int) -> None:
        if nbytes > self.inline_cap:
            raise WasmEngineError(
                SHM_INLINE_TOO_LARGE,
                f"{nbytes} B inline is over the cap of {self.inline_cap} B",
                detail={"nbytes": nbytes, "cap": self.inline_cap},
            )

    def _inline(self, array: np.ndarray[Any, Any], blobs: list[bytes]) -> TensorRef:
        self._check_cap(array.nbytes)
        blobs.append(np.ascontiguousarray(array).tobytes())
        shape = tuple(int(d) for d in array.shape)
        return TensorRef(
            array.dtype.name, shape, "inline", "", len(blobs) - 1, array.nbytes, 0,
            self.owner, self.ns,
        )  # fmt: skip

    def release(self, ref: TensorRef) -> bool:
        """The owner gives a slot back (all its holders are done); False when it was
        not ours or is already free."""
        if ref.loc != "shm" or self.arena is None:
            return False
        return self.arena.free(ref.segment, ref.offset, ref.generation)

    # ------------------------------------------------------------------ consuming
    def open(self, ref: TensorRef, blobs: Sequence[bytes] = ()) -> np.ndarray[Any, Any]:
        """A read-only view of the data, no copy (``shm.*`` errors on a bad handle)."""
        if ref.loc == "inline":
            if not 0 <= ref.offset < len(blobs):
                raise bad(f"inline tensor names blob {ref.offset} of {len(blobs)}", field="offset")
            blob = blobs[ref.offset]
            if len(blob) != ref.nbytes:
                raise bad(f"blob {ref.offset} has {len(blob)} B, handle says {ref.nbytes}")
            view: np.ndarray[Any, Any] = np.frombuffer(blob, ref.np_dtype)
            view.flags.writeable = False
            return view.reshape(ref.shape)
        return self._view(ref, writable=False)

    def open_output(self, ref: TensorRef) -> np.ndarray[Any, Any]:
        """A writable view of a slot another process loaned us to fill in place."""
        if ref.loc != "shm":
            raise bad("only a shm handle can be an output slot", field="loc")
        return self._view(ref, writable=True)

    def current(self, ref: TensorRef) -> bool:
        """Whether the slot still holds this handle's generation: check after reading
        to know the data was not freed under you (a holder that respects its lease
        never sees False)."""
        try:
            with self._lock:
                self._check_generation(self._segment(ref, False), ref)
        except WasmEngineError:
            return False
        return True

    def sweep(self) -> int:
        """Unmap the segments we read from whose owner has unlinked them (it closed or
        was lost): their pages are freed once no view of them is left. How many."""
        with self._lock:
            gone = [k for k in self._mapped if not (self.shm_dir / k[0]).exists()]
            for key in gone:
                self._forget(key)
        return len(gone)

    def _segment(self, ref: TensorRef, writable: bool) -> Segment:
        if ref.ns != self.ns:
            raise WasmEngineError(
                SHM_FOREIGN_NAMESPACE,
                f"segment {ref.segment} lives in shm namespace {ref.ns!r}, this process in "
                f"{self.ns!r}: it must be sent inline",
                detail={"ns": ref.ns, "here": self.ns},
            )
        if self.arena is not None and ref.segment in self.arena.segments:
            return self.arena.segments[ref.segment]  # our own: already mapped
        key = (ref.segment, writable)
        seg = self._mapped.get(key)
        if seg is None or not (self.shm_dir / ref.segment).exists():
            if seg is not None:  # unlinked since we mapped it: the data is gone
                self._forget(key)
            seg = Segment.attach(ref.segment, writable=writable, shm_dir=self.shm_dir)
            self._mapped[key] = seg
        return seg

    def _view(self, ref: TensorRef, *, writable: bool) -> np.ndarray[Any, Any]:
        with self._lock:  # a view made before a sweep keeps its mapping alive
            return self._view_locked(ref, writable)

    def _view_locked(self, ref: TensorRef, writable: bool) -> np.ndarray[Any, Any]:
        seg = self._segment(ref, writable)
        if ref.offset < HEADER or ref.offset + ref.nbytes > seg.size:
            raise bad(
                f"offset {ref.offset} + nbytes {ref.nbytes} is outside segment {ref.segment} "
                f"of {seg.size} B",
                segment=ref.segment,
                size=seg.size,
            )
        self._check_generation(seg, ref)
        count = ref.nbytes // ref.np_dtype.itemsize
        view: np.ndarray[Any, Any] = np.frombuffer(seg.mm, ref.np_dtype, count, ref.offset)
        if not writable:
            view.flags.writeable = False
        return view.reshape(ref.shape)

    @staticmethod
    def _check_generation(seg: Segment, ref: TensorRef) -> None:
        head = seg.read_header(ref.offset - HEADER)
        if head is None or head[0] != ref.generation or ref.nbytes > head[1]:
            raise WasmEngineError(
                SHM_STALE_HANDLE,
                f"slot {ref.segment}@{ref.offset} no longer holds generation {ref.generation}",
                detail={"segment": ref.segment, "offset": ref.offset, "now": head and head[0]},
            )

    def _forget(self, key: tuple[str, bool]) -> None:
        seg = self._mapped.pop(key)
        if not seg.close():
            log.debug("segment %s still viewed: unmapped when the views go", seg.name)

    def close(self) -> None:
        """Unmap what we read from, and unlink our arena."""
        with self._lock:
            for key in list(self._mapped):
                self._forget(key)
        if self.arena is not None:
            self.arena.close()
