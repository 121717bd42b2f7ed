"""Shared-memory segments: names, create, attach, unlink, the slot header, the reaper.

A segment is a file under ``/dev/shm`` (what POSIX ``shm_open`` makes on Linux),
opened here with ``os.open`` and mapped with ``mmap``. That keeps Python's
``multiprocessing`` resource tracker out of it entirely: the tracker (3.11/3.12)
unlinks every segment a process *attached* to when that process exits, and a
killed reader would take the owner's data with it. Owners unlink their own
segments; the orchestrator unlinks those of an owner it lost; ``reap`` removes
a whole stack's after ``down``.

Names are ``wasm-engine-<stack>-<pid>-<random>-<n>``: two stacks (two test runs)
on one machine never collide and a stack's segments are found by prefix.

Every slot starts with a 64-byte header, then its data: magic, generation
(the slot's current use; 0 once freed) and capacity. A reader checks the
generation of its handle against it: that is how a reused slot refuses an old
handle (``shm.stale_handle``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import mmap
import os
import socket
import struct
from pathlib import Path
from typing import Final

from ..errors import SHM_STALE_HANDLE, WasmEngineError
from .ref import ALIGN, SEGMENT_PREFIX, bad, valid_segment_name

log = logging.getLogger("wasm_engine.tensors")

SHM_DIR: Final = Path("/dev/shm")
HEADER: Final = ALIGN  # bytes of slot header before the data
_MAGIC: Final = b"WEslot1\x00"
_HEAD = struct.Struct("<8sQQ")  # magic, generation, capacity


def shm_namespace() -> str:
    """Host + IPC namespace: processes with equal values share /dev/shm."""
    try:
        ipc = os.readlink("/proc/self/ns/ipc")
    except OSError:
        ipc = "ipc:?"
    return f"{socket.gethostname()}/{ipc}"


def stack_id(stack: str, home: str) -> str:
    """The stack's instance id in segment names: ``stack`` when set, else a digest
    of the run folder's absolute path (each LocalStack has its own folder)."""
    if stack:
        if not valid_segment_name(SEGMENT_PREFIX + stack) or "-" in stack:
            raise ValueError(f"stack id {stack!r}: use letters, digits and _ only")
        return stack
    return hashlib.sha1(os.path.abspath(home).encode()).hexdigest()[:10]


def stack_prefix(stack: str) -> str:
    return f"{SEGMENT_PREFIX}{stack}-"


class Segment:
    """One mapped segment. ``writable`` mappings are the owner's (and a receiver's
    filling an output slot); read-only ones are ``PROT_READ``, so a view of them
    cannot be written through even by mistake."""

    def __init__(self, name: str, mm: mmap.mmap, size: int, writable: bool) -> None:
        self.name = name
        self.mm = mm
        self.size = size
        self.writable = writable

    @classmethod
    def create(cls, name: str, size: int, shm_dir: Path = SHM_DIR) -> Segment:
        """A new segment, its pages touched now (first touch is the slow part; an
        arena pays it once, at start, not per tensor)."""
        if not valid_segment_name(name):
            raise ValueError(f"bad segment name {name!r}")
        fd = os.open(shm_dir / name, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.ftruncate(fd, size)
            mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE)
        except BaseException:
            os.unlink(shm_dir / name)
            raise
        finally:
            os.close(fd)
        return cls(name, mm, size, True)

    @classmethod
    def attach(cls, name: str, *, writable: bool = False, shm_dir: Path = SHM_DIR) -> Segment:
        """Map an existing segment; ``shm.stale_handle`` when it is gone (its owner
        freed it or was lost and reclaimed), ``shm.bad_handle`` for a name not ours."""
        if not valid_segment_name(name):
            raise bad(f"segment {name[:64]!r} is not a wasm-engine segment name")
        try:
            fd = os.open(shm_dir / name, os.O_RDWR if writable else os.O_RDONLY)
        except FileNotFoundError:
            raise WasmEngineError(
                SHM_STALE_HANDLE,
                f"segment {name} does not exist (freed, or its owner was lost)",
                detail={"segment": name, "reason": "no_segment"},
            ) from None
        try:
            size = os.fstat(fd).st_size
            if size < HEADER:
                raise bad(f"segment {name} is too small to hold a slot", segment=name)
            prot = mmap.PROT_READ | (mmap.PROT_WRITE if writable else 0)
            mm = mmap.mmap(fd, size, flags=mmap.MAP_SHARED | mmap.MAP_POPULATE, prot=prot)
        finally:
            os.close(fd)
        return cls(name, mm, size, writable)

    # -- slot headers
    def write_header(self, start: int, generation: int, capacity: int) -> None:
        _HEAD.pack_into(self.mm, start, _MAGIC, generation, capacity)

    def read_header(self, start: int) -> tuple[int, int] | None:
        """(generation, capacity) of the slot at ``start``, None when no slot starts there."""
        magic, generation, capacity = _HEAD.unpack_from(self.mm, start)
        return (generation, capacity) if magic == _MAGIC else None

    def close(self) -> bool:
        """Unmap; False (and still mapped) while numpy views of it are alive."""
        try:
            self.mm.close()
        except BufferError:
            return False
        return True


def unlink(name: str, shm_dir: Path = SHM_DIR) -> bool:
    """Remove a segment's name (mappings that exist stay valid until unmapped)."""
    if not valid_segment_name(name):
        return False
    try:
        os.unlink(shm_dir / name)
    except FileNotFoundError:
        return False
    except OSError as exc:
        if exc.errno != errno.ENOENT:
            log.warning("cannot unlink segment %s: %s", name, exc)
        return False
    return True


def segments_of(stack: str, shm_dir: Path = SHM_DIR) -> list[str]:
    prefix = stack_prefix(stack)
    with contextlib.suppress(FileNotFoundError):
        return sorted(p.name for p in shm_dir.iterdir() if p.name.startswith(prefix))
    return []


def reap(stack: str, shm_dir: Path = SHM_DIR) -> list[str]:
    """Unlink every segment of ``stack`` (after its processes stopped: ``down``)."""
    removed = [name for name in segments_of(stack, shm_dir) if unlink(name, shm_dir)]
    if removed:
        log.info("reaped %d shm segments of stack %s", len(removed), stack)
    return removed
