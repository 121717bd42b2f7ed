"""Protocol v1: header, frames, limits and the message registry (no sockets)."""

from __future__ import annotations

import msgpack
import pytest

from wasm_engine import codec, envelope, messages
from wasm_engine import errors as E
from wasm_engine.errors import ProtocolError, WasmEngineError
from wasm_engine.protocol import MAGIC, SizeLimits, make_header, new_id, parse_header


def frames_for(type_: str, body: dict, *, blobs: tuple[bytes, ...] = (), **hdr) -> list[bytes]:
    return envelope.encode(make_header(type_, **hdr), codec.packb(body), blobs)


def code_of(exc_info: pytest.ExceptionInfo[WasmEngineError]) -> str:
    return exc_info.value.code


def test_roundtrip_keeps_header_body_and_blobs() -> None:
    frames = frames_for(
        "task.submit",
        {"task_id": "t", "kind": "wasm", "agent": "sha256:a"},
        blobs=(b"x", b"yz"),
        parent="p1",
        trace="tr",
        deadline=123,
    )
    env = envelope.decode([b"peer", *frames], hops=1)
    assert env.routing == [b"peer"]
    assert (env.header.type, env.header.parent, env.header.trace, env.header.deadline) == (
        "task.submit",
        "p1",
        "tr",
        123,
    )
    assert env.blobs == [b"x", b"yz"]
    msg = messages.parse(env.header.type, env.body)
    assert isinstance(msg, messages.TaskSubmit) and msg.agent == "sha256:a"


def test_ids_are_unique_strings() -> None:
    ids = {new_id() for _ in range(10_000)}
    assert len(ids) == 10_000 and all(isinstance(i, str) for i in ids)


def test_optional_header_fields_may_be_absent() -> None:
    raw = msgpack.packb({"v": [1, 0], "id": "x", "type": "status.get", "ts": 1})
    header = parse_header(raw)
    assert (header.parent, header.trace, header.deadline, header.sender) == (None, None, None, "")


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ({"id": "x", "type": "t", "ts": 1}, E.PROTO_BAD_FIELD),  # no v
        ({"v": [1], "id": "x", "type": "t", "ts": 1}, E.PROTO_BAD_FIELD),
        ({"v": [2, 0], "id": "x", "type": "t", "ts": 1}, E.PROTO_VERSION),
        ({"v": [1, 0], "type": "t", "ts": 1}, E.PROTO_BAD_FIELD),  # no id
        ({"v": [1, 0], "id": "x", "ts": 1}, E.PROTO_BAD_FIELD),  # no type
        ({"v": [1, 0], "id": "x", "type": "t"}, E.PROTO_BAD_FIELD),  # no ts
        ({"v": [1, 0], "id": 5, "type": "t", "ts": 1}, E.PROTO_BAD_FIELD),
        ({"v": [1, 0], "id": "x", "type": "t", "ts": 1, "deadline": "soon"}, E.PROTO_BAD_FIELD),
        ({"v": [1, 0], "id": "x", "type": "t", "ts": 1, "parent": 7}, E.PROTO_BAD_FIELD),
    ],
)
def test_bad_headers_are_typed(raw: dict, code: str) -> None:
    with pytest.raises(ProtocolError) as exc:
        parse_header(msgpack.packb(raw))
    assert code_of(exc) == code


def test_higher_minor_and_unknown_fields_are_accepted() -> None:
    raw = msgpack.packb({"v": [1, 9], "id": "x", "type": "status.get", "ts": 1, "future": {"a": 1}})
    assert parse_header(raw).v == (1, 9)
    body = codec.packb({"task_id": "t", "kind": "wasm", "agent": "sha256:a", "new_field": [1, 2]})
    assert isinstance(messages.parse("task.submit", body), messages.TaskSubmit)


@pytest.mark.parametrize(
    ("frames", "code"),
    [
        ([b"peer"], E.PROTO_BAD_FRAME),
        ([b"peer", MAGIC, b"h"], E.PROTO_BAD_FRAME),
        ([b"peer", b"HELLO", b"h", b"b"], E.PROTO_BAD_FRAME),
        ([b"peer", b"WE/2", b"h", b"b"], E.PROTO_VERSION),
        ([b"peer", MAGIC, b"\xc1garbage", b"b"], E.PROTO_BAD_MSGPACK),
        ([b"peer", MAGIC, msgpack.packb([1, 2]), b"b"], E.PROTO_BAD_MSGPACK),
    ],
)
def test_bad_frames_are_typed(frames: list[bytes], code: str) -> None:
    with pytest.raises(envelope.EnvelopeError) as exc:
        envelope.decode(frames, hops=1)
    assert code_of(exc) == code
    assert exc.value.parent is None  # the header was unreadable: the error's parent is nil


def test_error_names_the_header_when_it_was_readable() -> None:
    limits = SizeLimits(body=100)
    frames = [b"peer", *frames_for("task.submit", {"x": "y" * 200})]
    with pytest.raises(envelope.EnvelopeError) as exc:
        envelope.decode(frames, hops=1, limits=limits)
    assert exc.value.code == E.PROTO_TOO_LARGE
    assert exc.value.parent == envelope.decode(frames, hops=1).header.id
    assert exc.value.detail["frame"] == "body"


@pytest.mark.parametrize(
    ("limits", "blobs", "frame"),
    [
        (SizeLimits(blob=10), (b"x" * 11,), "blob0"),
        (SizeLimits(message=300), (b"x" * 200, b"y" * 200), "message"),
    ],
)
def test_size_limits_per_frame_and_per_message(
    limits: SizeLimits, blobs: tuple[bytes, ...], frame: str
) -> None:
    frames = frames_for("agent.put", {"digest": "d"}, blobs=blobs)
    with pytest.raises(envelope.EnvelopeError) as exc:
        envelope.decode(frames, limits=limits)
    assert exc.value.code == E.PROTO_TOO_LARGE and exc.value.detail["frame"] == frame


def test_too_many_blobs() -> None:
    frames = frames_for("agent.put", {"digest": "d"}, blobs=(b"x",) * 5)
    with pytest.raises(envelope.EnvelopeError) as exc:
        envelope.decode(frames, limits=SizeLimits(blobs=4))
    assert exc.value.code == E.PROTO_TOO_LARGE


def test_hostile_msgpack_cannot_claim_huge_containers() -> None:
    # a map header claiming 2**32-1 entries, then nothing
    with pytest.raises(ProtocolError) as exc:
        codec.unpack_map(b"\xdf\xff\xff\xff\xff", what="body", limit=1024)
    assert exc.value.code == E.PROTO_BAD_MSGPACK
    with pytest.raises(ProtocolError):  # ext types are refused
        codec.unpack_map(b"\x81\xa1a\xd4\x01\x00", what="body", limit=1024)
    with pytest.raises(ProtocolError):  # non-string keys are refused
        codec.unpack_map(b"\x81\x01\x02", what="body", limit=1024)
    with pytest.raises(ProtocolError):  # trailing bytes after the map
        codec.unpack_map(b"\x80\x80", what="body", limit=1024)


def test_unknown_type_and_bad_fields() -> None:
    with pytest.raises(ProtocolError) as exc:
        messages.parse("task.explode", codec.packb({}))
    assert exc.value.code == E.PROTO_UNKNOWN_TYPE
    cases = [
        ({"kind": "wasm", "agent": "a"}, "task_id"),  # missing
        ({"task_id": 5, "kind": "wasm", "agent": "a"}, "task_id"),  # wrong type
        ({"task_id": "t", "kind": "bake", "agent": "a"}, "kind"),  # bad value
        ({"task_id": "t", "kind": "wasm"}, "agent"),  # required for wasm
        ({"task_id": "t", "kind": "wasm", "agent": "a", "priority": 10**6}, "priority"),
        ({"task_id": "t", "kind": "wasm", "agent": "a", "limits": {"fuel": -1}}, "limits.fuel"),
        ({"task_id": "t", "kind": "wasm", "agent": "a", "input": "text"}, "input"),
        ({"task_id": "", "kind": "wasm", "agent": "a"}, "task_id"),
    ]
    for body, field in cases:
        with pytest.raises(ProtocolError) as exc:
            messages.parse("task.submit", codec.packb(body))
        assert exc.value.code == E.PROTO_BAD_FIELD, body
        assert exc.value.detail["field"] == field


@pytest.mark.parametrize("credits", [0, -1, 5000])
def test_credits_out_of_range_are_refused(credits: int) -> None:
    for type_, body in (
        ("worker.hello", {"name": "w", "kind": "wasm", "credits": credits}),
        ("worker.credit", {"credits": credits}),
    ):
        with pytest.raises(ProtocolError) as exc:
            messages.parse(type_, codec.packb(body))
        assert exc.value.code == E.PROTO_BAD_FIELD


def test_every_message_type_roundtrips_through_its_class() -> None:
    samples = {
        "task.submit": {"task_id": "t", "kind": "wasm", "agent": "sha256:a", "input": b"\xc0"},
        "task.ack": {"task_id": "t", "state": "queued"},
        "task.result": {"task_id": "t", "output": {"a": [1]}, "stats": {"run_us": 3}},
        "task.event": {"task_id": "t", "seq": 1, "data": "tok"},
        "task.cancel": {"task_id": "t"},
        "task.dispatch": {"task_id": "t", "attempt": 1, "queued_us": 5, "agent": "sha256:a"},
        "error": {"code": "x.y", "message": "m", "retryable": True, "detail": {}},
        "status.get": {},
        "status": {"orchestrator": {}, "workers": [], "queues": {}, "counters": {}},
        "agent.put": {"digest": "sha256:a", "name": "n", "reuse": True},
        "agent.stored": {"digest": "sha256:a", "size": 3},
        "worker.hello": {
            "name": "w",
            "kind": "wasm",
            "credits": 4,
            "capabilities": ["wasm"],
            "segments": [{"name": "wasm-engine-s-1-aa-1", "size": 1 << 20}],
        },
        "worker.welcome": {"worker": "w", "heartbeat_interval": 1.0, "heartbeat_liveness": 3},
        "worker.heartbeat": {"worker": "w", "inflight": 2},
        "worker.credit": {"credits": 8},
        "worker.bye": {"returned": ["a", "b"]},
        "session.end": {"agent": "sha256:ab", "session": "s1"},
        "shm.lease": {"ref": {"dtype": "float32"}, "holders": ["t1"], "ttl": 2.0},
        "shm.release": {"ref": {"dtype": "float32"}, "holder": "t1"},
        "shm.free": {"segment": "wasm-engine-s-1-aa-1", "offset": 64, "generation": 3},
        "telemetry.events": {"events": [{"ev": "task.queued"}], "dropped": 0},
        "telemetry.snapshot": {"status": {"workers": []}},
    }
    assert set(samples) == set(messages.REGISTRY), "a new message type needs a sample here"
    for type_, body in samples.items():
        msg = messages.parse(type_, codec.packb(body))
        assert type_ == type(msg).TYPE
        again = messages.parse(type_, msg.pack())
        assert again == msg


def test_error_body_roundtrip() -> None:
    err = WasmEngineError(E.TASK_OVERLOADED, "full", detail={"queue": "wasm"})
    assert err.retryable is True
    back = WasmEngineError.from_body(messages.parse("error", codec.packb(err.to_body())).to_body())
    assert (back.code, back.message, back.retryable, back.detail) == (
        E.TASK_OVERLOADED,
        "full",
        True,
        {"queue": "wasm"},
    )
