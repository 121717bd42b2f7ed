"""Protocol v1 constants and the envelope header.

Owns: the magic frame, the version, message ids, size limits and the header
(its fields, which may be absent, and their validation). Bodies belong to
``messages``; frame layout to ``envelope``.
"""

from __future__ import annotations

import itertools
import os
import time
from dataclasses import dataclass
from typing import Any, Final

from .codec import packb, unpack_map
from .errors import PROTO_BAD_FIELD, PROTO_VERSION, ProtocolError

MAGIC: Final = b"WE/1"
MAGIC_PREFIX: Final = b"WE/"
VERSION: Final = (1, 0)


@dataclass(frozen=True)
class SizeLimits:
    """Caps checked on every received message, answered with ``proto.too_large``.

    libzmq's ``MAXMSGSIZE`` is set to ``frame_hard`` as a last guard only: it drops
    the peer without a reply, so the typed checks below come first.
    """

    header: int = 16 << 10  # one header frame
    body: int = 8 << 20  # one body frame
    blob: int = 64 << 20  # one blob frame (inline data; bulk tensors go through shm)
    blobs: int = 64  # blob frames per message
    message: int = 128 << 20  # all frames of one message together

    @property
    def frame_hard(self) -> int:
        return self.message + (1 << 20)


DEFAULT_LIMITS: Final = SizeLimits()

_PREFIX = os.urandom(6).hex()
_counter = itertools.count(1)


def _renew_prefix() -> None:
    global _PREFIX  # noqa: PLW0603 - set once more, in a forked child only
    _PREFIX = os.urandom(6).hex()  # a forked child would repeat its parent's ids


os.register_at_fork(after_in_child=_renew_prefix)


def new_id() -> str:
    """A message (or generated task) id: ``<12 hex random per process>-<counter>``;
    unique across processes, forked ones included, and cheap (no syscall per id).
    Ids are opaque strings on the wire."""
    return f"{_PREFIX}-{next(_counter)}"


@dataclass(slots=True)
class Header:
    """The envelope header; routers read only this.

    Required on the wire: ``v``, ``id``, ``type``, ``ts``. May be absent or nil:
    ``parent`` (nil for a message nothing caused, and for an error answering an
    unreadable header), ``trace`` (nil outside a workflow), ``from`` and
    ``deadline`` (ns since the epoch, ``time.time_ns()``).
    """

    type: str
    id: str
    parent: str | None = None
    trace: str | None = None
    sender: str = ""
    ts: int = 0
    deadline: int | None = None
    v: tuple[int, int] = VERSION

    def pack(self) -> bytes:
        return packb(
            {
                "v": self.v,
                "id": self.id,
                "type": self.type,
                "parent": self.parent,
                "trace": self.trace,
                "from": self.sender,
                "ts": self.ts,
                "deadline": self.deadline,
            }
        )


def make_header(
    type_: str,
    *,
    parent: str | None = None,
    trace: str | None = None,
    sender: str = "",
    deadline: int | None = None,
) -> Header:
    return Header(type_, new_id(), parent, trace, sender, time.time_ns(), deadline)


def _opt_str(raw: dict[str, Any], key: str, limit: int = 256) -> str | None:
    value = raw.get(key)
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > limit:
        raise ProtocolError(PROTO_BAD_FIELD, f"header.{key} must be a string of <= {limit} chars")
    return value


def _req_str(raw: dict[str, Any], key: str) -> str:
    value = _opt_str(raw, key)
    if not value:
        raise ProtocolError(PROTO_BAD_FIELD, f"header.{key} is required")
    return value


def _opt_int(raw: dict[str, Any], key: str) -> int | None:
    value = raw.get(key)
    if value is None:
        return None
    if type(value) is not int:
        raise ProtocolError(PROTO_BAD_FIELD, f"header.{key} must be an integer")
    return value


def parse_header(data: bytes, limits: SizeLimits = DEFAULT_LIMITS) -> Header:
    """Decode and validate a header frame; ``ProtocolError`` on any defect.

    The common case is checked inline (this runs for every message a router
    sees); anything unusual goes through :func:`_parse_header_slow`, which
    names the defect.
    """
    raw = unpack_map(data, what="header", limit=limits.header)
    v = raw.get("v")
    id_ = raw.get("id")
    type_ = raw.get("type")
    ts = raw.get("ts")
    parent = raw.get("parent")
    trace = raw.get("trace")
    sender = raw.get("from")
    deadline = raw.get("deadline")
    if (
        type(v) is list
        and len(v) == 2
        and v[0] == VERSION[0]
        and type(v[1]) is int
        and v[1] >= 0
        and type(id_) is str
        and 0 < len(id_) <= 256
        and type(type_) is str
        and 0 < len(type_) <= 256
        and type(ts) is int
        and (parent is None or (type(parent) is str and len(parent) <= 256))
        and (trace is None or (type(trace) is str and len(trace) <= 256))
        and (sender is None or (type(sender) is str and len(sender) <= 256))
        and (deadline is None or type(deadline) is int)
    ):
        return Header(type_, id_, parent, trace, sender or "", ts, deadline, (v[0], v[1]))
    return _parse_header_slow(raw)


def _parse_header_slow(raw: dict[str, Any]) -> Header:
    v = raw.get("v")
    if not isinstance(v, list) or len(v) != 2 or not all(type(x) is int and x >= 0 for x in v):
        raise ProtocolError(PROTO_BAD_FIELD, "header.v must be [major, minor]")
    if v[0] != VERSION[0]:
        raise ProtocolError(
            PROTO_VERSION,
            f"protocol major {v[0]} not supported (this side speaks {VERSION[0]})",
            detail={"supported": list(VERSION)},
        )
    if "ts" not in raw:
        raise ProtocolError(PROTO_BAD_FIELD, "header.ts is required")
    ts = _opt_int(raw, "ts")
    if ts is None:
        raise ProtocolError(PROTO_BAD_FIELD, "header.ts must be an integer")
    return Header(
        type=_req_str(raw, "type"),
        id=_req_str(raw, "id"),
        parent=_opt_str(raw, "parent"),
        trace=_opt_str(raw, "trace"),
        sender=_opt_str(raw, "from") or "",
        ts=ts,
        deadline=_opt_int(raw, "deadline"),
        v=(v[0], v[1]),
    )
