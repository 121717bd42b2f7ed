"""Shared-memory and inference accounting, from whatever the stack reports.

Owns :class:`Shm` (segments and leases by owner, from ``shm.*`` events or a
``shm`` section of the status snapshot) and :class:`Inference` (batch sizes,
devices, GPU→CPU fallbacks from any event that carries them). Both read their
fields defensively: these reports come from services that are still growing,
so a missing or oddly typed field is skipped, never an error, and an empty
account reads "none yet" on the page. Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

_FREED = ("freed", "free", "released", "release", "unlinked", "reclaimed", "closed", "expired")


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _count(value: Any, otherwise: int) -> int:
    """A reported count: a list's or map's length, an int, else ``otherwise``."""
    if isinstance(value, list | dict):
        return len(value)
    n = _int(value)
    return otherwise if n is None else n


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


class Shm:
    """Live segments ``{segment: (owner, bytes)}`` and leases ``{(segment, holder): owner}``."""

    def __init__(self) -> None:
        self.segments: dict[str, tuple[str, int]] = {}
        self.leases: dict[tuple[str, str], str] = {}
        self.events = 0
        self.reported: dict[str, Any] | None = None  # the snapshot's own shm section

    def apply(self, name: str, ev: dict[str, Any]) -> None:
        """One ``shm.*`` event: ``shm.segment.created`` / ``…freed``, ``shm.lease.*``."""
        segment = _str(ev.get("segment"))
        if segment is None:
            return
        self.events += 1
        freed = any(word in name for word in _FREED)
        owner = _str(ev.get("owner")) or "?"
        if "lease" in name:
            key = (segment, _str(ev.get("holder")) or owner)
            if freed:
                self.leases.pop(key, None)
            else:
                self.leases[key] = owner
        elif freed:
            self.segments.pop(segment, None)
            self.leases = {k: v for k, v in self.leases.items() if k[0] != segment}
        else:
            size = _int(ev.get("bytes")) or _int(ev.get("nbytes")) or 0
            self.segments[segment] = (owner, size)

    def from_snapshot(self, section: Any) -> None:
        self.reported = section if isinstance(section, dict) else None

    def by_owner(self) -> dict[str, int]:
        """Bytes held per owner: the snapshot's figures when it has them, else the events'."""
        rep = self.reported or {}
        owners = rep.get("by_owner") or rep.get("owners")
        if isinstance(owners, dict):
            out: dict[str, int] = {}
            for owner, value in owners.items():
                size = _int(value.get("bytes") if isinstance(value, dict) else value)
                if size is not None:
                    out[str(owner)] = size
            return out
        if isinstance(rep.get("segments"), list):
            out = {}
            for seg in rep["segments"]:
                if isinstance(seg, dict):
                    owner = _str(seg.get("owner")) or "?"
                    size = _int(seg.get("bytes")) or _int(seg.get("nbytes")) or 0
                    out[owner] = out.get(owner, 0) + size
            return out
        totals: Counter[str] = Counter()
        for owner, size in self.segments.values():
            totals[owner] += size
        return dict(totals)

    def lease_count(self) -> int:
        return _count((self.reported or {}).get("leases"), len(self.leases))

    def segment_count(self) -> int:
        return _count((self.reported or {}).get("segments"), len(self.segments))

    @property
    def seen(self) -> bool:
        return self.events > 0 or bool(self.reported)

    def view(self) -> dict[str, Any]:
        return {
            "seen": self.seen,
            "by_owner": self.by_owner(),
            "segments": self.segment_count(),
            "leases": self.lease_count(),
            "source": "snapshot" if self.reported else "events",
        }


class Inference:
    """Batch sizes, devices used and fallbacks, from the fields events carry:
    ``batch``/``batch_size`` (one count per event), ``device``, ``fallback`` (truthy),
    or an event whose name says ``fallback`` (``infer.fallback``)."""

    def __init__(self) -> None:
        self.batches: Counter[int] = Counter()
        self.devices: Counter[str] = Counter()
        self.fallbacks: Counter[str] = Counter()

    def apply(self, name: str, ev: dict[str, Any]) -> tuple[int | None, bool]:
        """Account one event; returns (its batch size or None, whether it was a fallback)."""
        batch = _int(ev.get("batch"))
        if batch is None:
            batch = _int(ev.get("batch_size"))
        if batch is not None and batch > 0:
            self.batches[batch] += 1
        else:
            batch = None
        device = _str(ev.get("device"))
        if device is not None and name == "task.done":
            self.devices[device] += 1
        fallback = bool(ev.get("fallback")) or "fallback" in name
        if fallback:
            model = _str(ev.get("model")) or _str(ev.get("queue")) or "?"
            self.fallbacks[model] += 1
        return batch, fallback

    def view(self) -> dict[str, Any]:
        return {
            "batches": {str(k): v for k, v in sorted(self.batches.items())},
            "devices": dict(self.devices),
            "fallbacks": dict(self.fallbacks),
        }
