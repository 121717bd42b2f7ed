"""The tensor plane: bulk data between processes as shared-memory handles.

A message names a :class:`TensorRef`; the receiver maps the segment and reads in
place. Modules, one job each: ``ref`` (the handle and its checks), ``slots``
(the byte-range allocator), ``shm`` (segments, names, slot headers, the
reaper), ``preflight`` (room in /dev/shm), ``arena`` (a process's segments and
slots), ``plane`` (publish / loan / share / open, inline fallback). The
lifecycle and failure cases are in docs/tensors.md.
"""

from .arena import Arena, Slot
from .plane import INLINE_CAP, INLINE_THRESHOLD, Loan, TensorPlane
from .preflight import check_shm_space
from .ref import DTYPES, TensorRef
from .shm import SHM_DIR, Segment, reap, segments_of, shm_namespace, stack_id, unlink

__all__ = [
    "DTYPES",
    "INLINE_CAP",
    "INLINE_THRESHOLD",
    "SHM_DIR",
    "Arena",
    "Loan",
    "Segment",
    "Slot",
    "TensorPlane",
    "TensorRef",
    "check_shm_space",
    "reap",
    "segments_of",
    "shm_namespace",
    "stack_id",
    "unlink",
]
