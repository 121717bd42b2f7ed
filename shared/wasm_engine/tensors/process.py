"""A service process's tensor plane, built from its :class:`~wasm_engine.config.Settings`.

Owns the start (preflight, then the arena, when ``shm_arena`` > 0) and the
orchestrator's side of the conversation as an owner sees it: the segments to
announce in ``worker.hello`` (recreating any the orchestrator reclaimed while it
thought us lost), ``shm.free``, and the ``shm.lease`` of each tensor a task
published (listed in its result's ``stats.tensors``), held by the task id until
the result's reader releases it. The worker loop calls these; it keeps no
tensor logic of its own.
"""

from __future__ import annotations

import logging
from typing import Any

from ..config import Settings
from ..messages import ShmFree, ShmLease
from .arena import Arena
from .plane import TensorPlane
from .shm import stack_id

log = logging.getLogger("wasm_engine.tensors")


def plane_for(settings: Settings, owner: str) -> TensorPlane:
    """Raises ``shm.too_small`` when /dev/shm cannot hold ``shm_arena``."""
    arena = None
    if settings.shm_arena > 0:
        arena = Arena(
            stack_id(settings.stack, settings.home),
            settings.shm_arena,
            segment_size=settings.shm_segment,
        )
    return TensorPlane(arena, owner=owner, inline_cap=settings.tensor_inline_cap)


def hello_segments(plane: TensorPlane) -> list[dict[str, Any]]:
    if plane.arena is None:
        return []
    plane.arena.revive()
    return list(plane.arena.describe())


def on_free(plane: TensorPlane, msg: ShmFree) -> None:
    if plane.arena is None or not plane.arena.free(msg.segment, msg.offset, msg.generation):
        log.debug("shm.free of a slot not in use: %s@%d", msg.segment, msg.offset)


def task_leases(stats: dict[str, Any], task_id: str) -> list[bytes]:
    """``shm.lease`` bodies for the tensors a task published (``stats["tensors"]``),
    each held by ``task_id``: sent ahead of the result on the same channel, so the
    orchestrator has the lease before anyone can read the result and release it."""
    return [ShmLease(ref, [task_id]).pack() for ref in stats.get("tensors", ())]
