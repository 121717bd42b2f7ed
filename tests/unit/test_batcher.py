"""The dynamic batcher with a fake clock: no sleeps."""

from __future__ import annotations

import pytest

from inference_worker.batcher import DynamicBatcher, Limits
from wasm_engine.errors import WasmEngineError


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def b(clock: Clock) -> DynamicBatcher:
    return DynamicBatcher({"mlp": Limits(4, 0.002), "big": Limits(64, 0.010)}, clock)


def test_waits_for_company_until_the_delay(b: DynamicBatcher, clock: Clock) -> None:
    b.submit("mlp", "a", "A")
    assert b.due() == [] and b.next_deadline() == pytest.approx(0.002)
    clock.now += 0.001
    b.submit("mlp", "b", "B")
    assert b.due() == []
    clock.now += 0.001
    (batch,) = b.due()
    assert [m.request_id for m in batch.members] == ["a", "b"] and batch.model == "mlp"
    assert b.pending() == 0 and b.next_deadline() is None


def test_full_batch_leaves_at_once_and_the_rest_waits(b: DynamicBatcher) -> None:
    for i in range(6):
        b.submit("mlp", str(i), i)
    (batch,) = b.due()
    assert [m.item for m in batch.members] == [0, 1, 2, 3] and batch.rows == 4
    assert b.pending("mlp") == 2


def test_rows_count_not_requests(b: DynamicBatcher, clock: Clock) -> None:
    b.submit("mlp", "a", None, rows=3)
    b.submit("mlp", "b", None, rows=2)  # 5 rows: over max 4, so a leaves alone
    (first,) = b.due()
    assert [m.request_id for m in first.members] == ["a"]
    assert b.due() == []
    clock.now += 0.002
    (second,) = b.due()
    assert [m.request_id for m in second.members] == ["b"]


def test_models_batch_apart(b: DynamicBatcher, clock: Clock) -> None:
    b.submit("mlp", "a", None)
    b.submit("big", "b", None)
    clock.now += 0.005
    batches = b.due()
    assert [(x.model, len(x.members)) for x in batches] == [("mlp", 1)]
    assert b.next_deadline() == pytest.approx(0.010)


def test_cancel_removes_a_waiting_request(b: DynamicBatcher, clock: Clock) -> None:
    b.submit("mlp", "a", None)
    b.submit("mlp", "b", None)
    assert b.cancel("a") and not b.cancel("a")
    clock.now += 1
    (batch,) = b.due()
    assert [m.request_id for m in batch.members] == ["b"]


def test_bad_submits_are_typed(b: DynamicBatcher) -> None:
    with pytest.raises(WasmEngineError) as err:
        b.submit("nope", "a", None)
    assert err.value.code == "infer.model_missing"
    with pytest.raises(WasmEngineError) as err:
        b.submit("mlp", "a", None, rows=5)
    assert err.value.code == "infer.bad_input"
    assert b.pending() == 0
