"""Suite-wide checks: after the whole run (kill -9 tests included), /dev/shm holds no
``wasm-engine-*`` segment that appeared during it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

SHM = Path("/dev/shm")


def _segments() -> set[str]:
    if not SHM.is_dir():
        return set()
    return {p.name for p in SHM.iterdir() if p.name.startswith("wasm-engine-")}


@pytest.fixture(scope="session", autouse=True)
def no_shm_segment_left() -> Iterator[None]:
    before = _segments()  # another checkout's run may hold some now: not ours to judge
    yield
    left = sorted(_segments() - before)
    assert not left, f"shm segments left behind by the test suite: {left}"
