"""The SDK's Book hands task.event values to on_event: in order, once per seq, before the result."""

from __future__ import annotations

import logging
from typing import Any

import pytest

from wasm_engine import messages as M
from wasm_engine.envelope import encode
from wasm_engine.errors import WasmEngineError
from wasm_engine.protocol import make_header
from wasm_engine.requests import Book, Pending, Result


def reply(parent: str, type_: str, body: M.Message) -> list[bytes]:
    return encode(make_header(type_, parent=parent), body.pack())


def book_with(seen: list[Any], on_event: Any) -> Book:
    book = Book(name="t")

    def resolve(result: Result | None, error: WasmEngineError | None) -> None:
        seen.append(("result", result.output if result else error))

    book.pending["rid"] = Pending("task", [], None, resolve, on_event=on_event)
    return book


def test_events_in_order_then_the_result() -> None:
    seen: list[Any] = []
    book = book_with(seen, lambda data: seen.append(("event", data)))
    for seq, data in enumerate([{"step": 0}, "partial", [1, 2]]):
        book.on_reply(reply("rid", "task.event", M.TaskEvent("task", seq, data)))
    book.on_reply(reply("rid", "task.result", M.TaskResult("task", "done")))
    assert seen == [
        ("event", {"step": 0}),
        ("event", "partial"),
        ("event", [1, 2]),
        ("result", "done"),
    ]
    assert "rid" not in book.pending


def test_a_replayed_attempt_is_delivered_once_per_seq() -> None:
    seen: list[Any] = []
    book = book_with(seen, seen.append)
    for seq in [0, 1, 0, 1, 2]:  # the worker was lost after seq 1; the retry starts over
        book.on_reply(reply("rid", "task.event", M.TaskEvent("task", seq, seq)))
    assert seen == [0, 1, 2]


def test_on_event_errors_do_not_lose_the_result(caplog: pytest.LogCaptureFixture) -> None:
    def broken(data: Any) -> None:
        raise ValueError("caller bug")

    seen: list[Any] = []
    book = book_with(seen, broken)
    book.on_reply(reply("rid", "task.event", M.TaskEvent("task", 0, 1)))
    book.on_reply(reply("rid", "task.result", M.TaskResult("task", 2)))
    assert seen == [("result", 2)]
    assert any(r.levelno == logging.ERROR for r in caplog.records)


def test_events_without_on_event_or_malformed_are_ignored() -> None:
    seen: list[Any] = []
    book = book_with(seen, None)
    book.on_reply(reply("rid", "task.event", M.TaskEvent("task", 0, 1)))
    assert seen == [] and "rid" in book.pending
    book = book_with(seen, seen.append)
    book.on_reply(encode(make_header("task.event", parent="rid"), b"\x81\xa3seq\xa1x"))
    assert seen == [] and "rid" in book.pending
