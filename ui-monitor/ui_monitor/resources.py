"""Shared-memory and inference accounting, from whatever the stack reports.

Owns :class:`Shm` (segments and leases by owner, from ``shm.*`` events or a
``shm`` section of the status snapshot) and :class:`Inference` (batch sizes,
devices, GPU→CPU fallbacks from ``infer.stats`` and any event that carries
them; the page and the Prometheus metrics both read it). Both read their
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


def batch_counts(ev: dict[str, Any]) -> dict[int, int]:
    """The batch sizes one event (or ``infer.stats`` entry) reports, ``{size: runs}``: its
    ``batches`` map (``{"<size>": count}``), else one ``batch``/``batch_size``."""
    sizes = ev.get("batches")
    if isinstance(sizes, dict):
        out: dict[int, int] = {}
        for key, value in sizes.items():
            size = int(key) if isinstance(key, str) and key.isdecimal() and len(key) < 10 else None
            size = _int(key) if size is None else size
            n = _int(value)
            if size is not None and size > 0 and n is not None and n > 0:
                out[size] = out.get(size, 0) + n
        return out
    batch = _int(ev.get("batch"))
    if batch is None:
        batch = _int(ev.get("batch_size"))
    return {batch: 1} if batch is not None and batch > 0 else {}


def fallback_count(name: str, ev: dict[str, Any]) -> int:
    """GPU→CPU fallbacks one event reports: its ``fallbacks`` count, else 1 for a truthy
    ``fallback`` or an event named ``*fallback*``."""
    n = _int(ev.get("fallbacks"))
    if n is not None:
        return max(n, 0)
    return int(bool(ev.get("fallback")) or "fallback" in name)


def _parts(ev: dict[str, Any]) -> list[dict[str, Any]]:
    """An ``infer.stats`` event's per-model entries (``models``), else the event itself."""
    models = ev.get("models")
    if isinstance(models, list):
        return [m for m in models if isinstance(m, dict)]
    return [ev]


class Inference:
    """Batch sizes, devices used and fallbacks, from the fields events carry: an
    ``infer.stats`` event's ``models`` entries (``batches`` {size: count}, ``fallbacks``,
    ``requests``, ``device``: what a worker ran since its last heartbeat), or any event's
    ``batch``/``batch_size`` (one run), ``device`` (``task.done``: one task), ``fallback``
    (truthy), or a name that says ``fallback`` (``infer.fallback``)."""

    def __init__(self) -> None:
        self.batches: Counter[int] = Counter()  # batch size -> runs
        self.devices: Counter[str] = Counter()  # device -> tasks
        self.fallbacks: Counter[str] = Counter()  # model -> fallbacks

    def apply(self, name: str, ev: dict[str, Any]) -> tuple[dict[int, int], int]:
        """Account one event; returns its batch sizes ({size: runs}) and fallbacks."""
        sizes: Counter[int] = Counter()
        fallbacks = 0
        for part in _parts(ev):
            sizes.update(batch_counts(part))
            n = fallback_count(name, part)
            if n:
                model = _str(part.get("model")) or _str(part.get("queue")) or "?"
                self.fallbacks[model] += n
                fallbacks += n
            device = _str(part.get("device"))
            served = _int(part.get("requests")) or 0  # a worker's report: served there
            if device is not None and name == "task.done":
                self.devices[device] += 1
            elif device is not None and "batches" in part and served > 0:
                self.devices[device] += served
        self.batches.update(sizes)
        return dict(sizes), fallbacks

    def view(self) -> dict[str, Any]:
        return {
            "batches": {str(k): v for k, v in sorted(self.batches.items())},
            "devices": dict(self.devices),
            "fallbacks": dict(self.fallbacks),
        }
