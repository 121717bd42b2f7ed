"""Frame layout of one message: ``[routing ids…, b"WE/1", header, body, *blobs]``.

Owns splitting and joining frames, the magic check and the size checks. The
body stays raw bytes here: a router that only forwards never unpacks it.
``messages`` turns a body into a typed object when a process is its endpoint.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .errors import PROTO_BAD_FRAME, PROTO_TOO_LARGE, PROTO_VERSION, ProtocolError
from .protocol import DEFAULT_LIMITS, MAGIC, MAGIC_PREFIX, Header, SizeLimits, parse_header

Frames = list[bytes]


class EnvelopeError(ProtocolError):
    """A message that could not be taken apart; ``parent`` is its header id when
    the header was readable, else None (then the error reply's parent is nil)."""

    def __init__(self, error: ProtocolError, parent: str | None) -> None:
        super().__init__(error.code, error.message, retryable=False, detail=error.detail)
        self.parent = parent


@dataclass(slots=True)
class Envelope:
    header: Header
    body: bytes
    blobs: list[bytes] = field(default_factory=list)
    routing: list[bytes] = field(default_factory=list)


def encode(header: Header, body: bytes, blobs: Sequence[bytes] = ()) -> Frames:
    """Frames after the routing ids."""
    frames = [MAGIC, header.pack(), body]
    frames.extend(blobs)
    return frames


def _check(frames: Sequence[bytes], hops: int, limits: SizeLimits) -> None:
    n = len(frames)
    if (  # the common case in one test: magic, small header and body, no blob
        n == hops + 3
        and frames[hops] == MAGIC
        and len(frames[hops + 1]) <= limits.header
        and len(frames[hops + 2]) <= min(limits.body, limits.message)
    ):
        return
    if n < hops + 3:
        raise ProtocolError(
            PROTO_BAD_FRAME,
            f"expected >= {hops + 3} frames (routing, magic, header, body), got {len(frames)}",
        )
    magic = frames[hops]
    if magic != MAGIC:
        if magic.startswith(MAGIC_PREFIX) and magic[3:].isdigit():
            raise ProtocolError(
                PROTO_VERSION,
                f"protocol {magic.decode('ascii')} not supported; this side speaks WE/1",
                detail={"supported": ["WE/1"]},
            )
        raise ProtocolError(PROTO_BAD_FRAME, "first frame after routing is not the WE/1 magic")
    nblobs = len(frames) - hops - 3
    if nblobs > limits.blobs:
        raise ProtocolError(PROTO_TOO_LARGE, f"{nblobs} blobs > limit {limits.blobs}")
    sizes = [len(f) for f in frames[hops + 1 :]]
    for what, size, cap in (("header", sizes[0], limits.header), ("body", sizes[1], limits.body)):
        if size > cap:
            raise ProtocolError(
                PROTO_TOO_LARGE,
                f"{what} frame {size} B > limit {cap} B",
                detail={"frame": what, "size": size, "limit": cap},
            )
    for i, size in enumerate(sizes[2:]):
        if size > limits.blob:
            raise ProtocolError(
                PROTO_TOO_LARGE,
                f"blob {i} is {size} B > limit {limits.blob} B",
                detail={"frame": f"blob{i}", "size": size, "limit": limits.blob},
            )
    total = sum(sizes)
    if total > limits.message:
        raise ProtocolError(
            PROTO_TOO_LARGE,
            f"message {total} B > limit {limits.message} B",
            detail={"frame": "message", "size": total, "limit": limits.message},
        )


def decode(frames: Sequence[bytes], hops: int = 0, limits: SizeLimits = DEFAULT_LIMITS) -> Envelope:
    """Split ``frames`` (``hops`` routing ids first) and parse the header.

    Raises :class:`EnvelopeError` naming the header id when it could be read.
    """
    try:
        _check(frames, hops, limits)
        header = parse_header(frames[hops + 1], limits)
    except ProtocolError as exc:
        raise EnvelopeError(exc, _best_effort_id(frames, hops, limits)) from None
    return Envelope(header, frames[hops + 2], list(frames[hops + 3 :]), list(frames[:hops]))


def _best_effort_id(frames: Sequence[bytes], hops: int, limits: SizeLimits) -> str | None:
    if len(frames) <= hops + 1 or len(frames[hops + 1]) > limits.header:
        return None
    try:
        return parse_header(frames[hops + 1], limits).id
    except ProtocolError:
        return None
