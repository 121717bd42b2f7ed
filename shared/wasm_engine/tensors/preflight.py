"""Preflight: is there room in /dev/shm for the arena? Checked before it is created.

Docker gives a container a 64 MiB /dev/shm unless told otherwise, and a segment
that does not fit fails late (SIGBUS on first touch, not at creation), so the
check runs up front and says exactly what to change.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..errors import SHM_TOO_SMALL, WasmEngineError
from .shm import SHM_DIR

MiB = 1 << 20


def advice(need: int, available: int, total: int, path: Path = SHM_DIR) -> WasmEngineError:
    need_mib = -(-need // MiB)
    return WasmEngineError(
        SHM_TOO_SMALL,
        f"{path} has {available // MiB} MiB free of {total // MiB} MiB; the tensor arena needs "
        f"{need_mib} MiB. Fix one of: in compose.yaml give the service `shm_size: "
        f"{max(need_mib * 2, 256)}m` (or `ipc: shareable` on one service and "
        f"`ipc: service:<that service>` on the others, to share one /dev/shm); "
        f"`docker run --shm-size={max(need_mib * 2, 256)}m`; or lower WASM_ENGINE_SHM_ARENA "
        f"(0 turns the arena off: tensors then travel inline).",
        detail={"path": str(path), "need": need, "available": available, "total": total},
    )


def check_shm_space(need: int, path: Path = SHM_DIR) -> None:
    """``shm.too_small`` unless ``path`` exists and has ``need`` bytes free."""
    if need <= 0:
        return
    try:
        st = os.statvfs(path)
    except OSError:
        raise advice(need, 0, 0, path) from None
    available = st.f_bavail * st.f_frsize
    if available < need:
        raise advice(need, available, st.f_blocks * st.f_frsize, path)
