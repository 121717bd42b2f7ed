"""What changed between two ``stats`` reports of one worker: :func:`deltas`.

An inference worker's heartbeat carries cumulative counters per model since it
started (``{"models": {name: {runs, rows, requests, failed, fallbacks,
batches: {"<size>": n}, device}}}``, docs/protocol.md). The orchestrator keeps
the latest on the worker's record and publishes the difference from the
previous one as an ``infer.stats`` event, so that a subscriber can add events
up. Rules:

- a model whose counts went down (any count, or any batch size) was reset (its
  worker restarted behind the same record, its model reloaded): its delta is
  its new counts, never negative;
- a model first seen in a later report counts from zero;
- a model with nothing new is left out, and a report with no model left gives
  no event.

Reports come from other processes: a field of the wrong type counts as 0, and
an entry that is not a map is skipped, never an error. Pure: no clock, no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

COUNTS = ("runs", "rows", "requests", "failed", "fallbacks")


def _count(value: Any) -> int:
    return value if type(value) is int and value > 0 else 0


def _batches(value: Any) -> dict[str, int]:
    """``{"<size>": n}`` with positive integer sizes and counts; anything else dropped."""
    if not isinstance(value, Mapping):
        return {}
    out: dict[str, int] = {}
    for size, n in value.items():
        key = str(size)
        if key.isdecimal() and len(key) <= 9 and int(key) > 0 and _count(n):
            out[str(int(key))] = _count(n)
    return out


def _models(report: Mapping[str, Any]) -> dict[str, Mapping[str, Any]]:
    models = report.get("models")
    if not isinstance(models, Mapping):
        return {}
    return {str(k): v for k, v in models.items() if isinstance(v, Mapping)}


def model_delta(name: str, old: Mapping[str, Any] | None, new: Mapping[str, Any]) -> dict[str, Any]:
    """One model's change as an event entry: ``model``, the ``COUNTS``, ``batches`` (sizes
    that ran since, ``{"<size>": n}``) and ``device`` when the report has one."""
    counts = {k: _count(new.get(k)) for k in COUNTS}
    batches = _batches(new.get("batches"))
    before = {k: _count(old.get(k)) for k in COUNTS} if old is not None else {}
    was = _batches(old.get("batches")) if old is not None else {}
    reset = any(counts[k] < before.get(k, 0) for k in COUNTS) or any(
        batches.get(size, 0) < n for size, n in was.items()
    )
    if reset:
        before, was = {}, {}
    entry: dict[str, Any] = {"model": name}
    entry.update({k: counts[k] - before.get(k, 0) for k in COUNTS})
    entry["batches"] = {s: n - was.get(s, 0) for s, n in batches.items() if n > was.get(s, 0)}
    device = new.get("device")
    if isinstance(device, str) and device:
        entry["device"] = device
    return entry


def deltas(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Per model of ``new``, what it added since ``old`` (the same worker's previous
    report); models with nothing new are left out."""
    before = _models(old)
    out = []
    for name, counts in sorted(_models(new).items()):
        entry = model_delta(name, before.get(name), counts)
        if entry["batches"] or any(entry[k] for k in COUNTS):
            out.append(entry)
    return out
