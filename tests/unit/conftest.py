"""Fixtures for the unit tests: ``h``, a scheduler :class:`Harness` with the test agent stored."""

from __future__ import annotations

import pytest
from scheduler_harness import Harness


@pytest.fixture
def h() -> Harness:
    harness = Harness()
    harness.put_agent()
    return harness
