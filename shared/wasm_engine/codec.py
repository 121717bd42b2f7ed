"""msgpack encoding with hard limits: the only place that (un)packs wire bytes.

Strict map keys, no ext types, no object hooks, explicit size caps on every
container. Anything that is not one well-formed msgpack map is a
:class:`ProtocolError` with code ``proto.bad_msgpack``; the caller decides what
to answer. Never pickle.
"""

from __future__ import annotations

import threading
from typing import Any

import msgpack

from .errors import PROTO_BAD_MSGPACK, ProtocolError

_local = threading.local()  # one reusable Packer per thread: half the cost of msgpack.packb


def _new_packer() -> msgpack.Packer:
    packer = msgpack.Packer(use_bin_type=True, datetime=False)
    _local.packer = packer
    return packer


def packb(obj: Any) -> bytes:
    """Encode a value (dicts, lists, str, bytes, ints, floats, bools, None)."""
    try:
        packer = _local.packer
    except AttributeError:
        packer = _new_packer()
    try:
        return packer.pack(obj)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError) as exc:
        _new_packer()  # a failed pack may leave the buffer half written
        raise ProtocolError(PROTO_BAD_MSGPACK, f"cannot encode: {exc}") from None


def unpack_map(data: bytes, *, what: str, limit: int) -> dict[str, Any]:
    """Decode ``data`` that must be exactly one msgpack map with string keys.

    ``limit`` bounds every string, binary, array and map inside it, so a few
    hostile bytes cannot claim gigabytes.
    """
    try:
        obj = msgpack.unpackb(
            data,
            raw=False,
            strict_map_key=True,
            use_list=True,
            max_str_len=limit,
            max_bin_len=limit,
            max_array_len=min(limit, 1 << 20),
            max_map_len=min(limit, 1 << 16),
            max_ext_len=0,
        )
    except (
        ValueError,
        TypeError,
        msgpack.ExtraData,
        msgpack.FormatError,
        msgpack.StackError,
        msgpack.OutOfData,
        UnicodeDecodeError,
    ) as exc:
        raise ProtocolError(
            PROTO_BAD_MSGPACK, f"{what} is not valid msgpack: {type(exc).__name__}: {exc}"
        ) from None
    if not isinstance(obj, dict):
        raise ProtocolError(
            PROTO_BAD_MSGPACK, f"{what} must be a msgpack map, got {type(obj).__name__}"
        )
    return obj
