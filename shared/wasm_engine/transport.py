"""ZeroMQ plumbing every service shares: socket construction and fast framing.

Only a service's ``service.py`` (and the client and worker loop, which are
their own socket owners) call into this module. It sets the options our wire
contract relies on (``ROUTER_MANDATORY``, ``MAXMSGSIZE`` as a last guard,
linger, reconnect backoff, PUB high-water mark) in one place, and sends and
receives whole messages with the base socket methods, which cost a third of
``send_multipart``'s per-frame Python overhead.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import zmq

from .protocol import DEFAULT_LIMITS

# The Cython base methods and plain-int flags: pyzmq's sugar ``send`` and its
# IntFlag arithmetic cost more per frame than the send itself.
_base = zmq.backend.Socket
_send = _base.send
_recv = _base.recv
_get = _base.get
_SNDMORE = int(zmq.SNDMORE)
NOBLOCK = int(zmq.NOBLOCK)


def _common(sock: zmq.Socket[bytes], linger_ms: int) -> None:
    sock.setsockopt(zmq.LINGER, linger_ms)
    sock.setsockopt(zmq.MAXMSGSIZE, DEFAULT_LIMITS.frame_hard)


def router(
    ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, *, hwm: int = 100_000
) -> zmq.Socket[bytes]:
    """A bound ROUTER that raises on sends to a peer that is gone."""
    sock = ctx.socket(zmq.ROUTER)
    _common(sock, 0)
    sock.setsockopt(zmq.ROUTER_MANDATORY, 1)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    _bind(sock, endpoint)
    return sock


def dealer(
    ctx: zmq.Context[zmq.Socket[bytes]],
    endpoint: str,
    *,
    identity: bytes | None = None,
    hwm: int = 100_000,
    linger_ms: int = 0,
) -> zmq.Socket[bytes]:
    """A connected DEALER with exponential reconnect backoff (100 ms .. 5 s)."""
    sock = ctx.socket(zmq.DEALER)
    _common(sock, linger_ms)
    if identity is not None:
        sock.setsockopt(zmq.ROUTING_ID, identity)
    sock.setsockopt(zmq.SNDHWM, hwm)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, 5000)
    sock.connect(endpoint)
    return sock


def publisher(
    ctx: zmq.Context[zmq.Socket[bytes]], endpoint: str, *, hwm: int = 1000
) -> zmq.Socket[bytes]:
    """A bound XPUB: a slow subscriber loses messages, it never blocks us. It reads
    like a PUB's, and subscriptions arrive as messages (``b"\x01" + topic`` when a
    topic gets its first subscriber, ``b"\x00" + topic`` when its last one leaves
    or disconnects), so the publisher can skip making what nobody reads."""
    sock = ctx.socket(zmq.XPUB)
    _common(sock, 0)
    sock.setsockopt(zmq.SNDHWM, hwm)
    _bind(sock, endpoint)
    return sock


def subscriber(
    ctx: zmq.Context[zmq.Socket[bytes]],
    endpoint: str,
    topics: Sequence[bytes] = (b"",),
    *,
    hwm: int = 1000,
    reconnect_max_ms: int = 1000,
) -> zmq.Socket[bytes]:
    """A connected SUB: past ``hwm`` queued messages the newest are dropped, so a slow
    reader costs the publisher nothing. Reconnects with backoff (100 ms .. ``reconnect_max_ms``:
    what it misses while disconnected is lost, so it retries sooner than a DEALER)."""
    sock = ctx.socket(zmq.SUB)
    _common(sock, 0)
    sock.setsockopt(zmq.RCVHWM, hwm)
    sock.setsockopt(zmq.RECONNECT_IVL, 100)
    sock.setsockopt(zmq.RECONNECT_IVL_MAX, reconnect_max_ms)
    for topic in topics:
        sock.setsockopt(zmq.SUBSCRIBE, topic)
    sock.connect(endpoint)
    return sock


def _bind(sock: zmq.Socket[bytes], endpoint: str) -> None:
    if endpoint.startswith("ipc://"):
        path = endpoint[len("ipc://") :]
        if os.path.exists(path):
            os.unlink(path)  # a stale socket file from a killed run
    sock.bind(endpoint)


def send(sock: zmq.Socket[bytes], frames: Sequence[bytes], flags: int = 0) -> None:
    """Send one message; raises ``zmq.Again`` (NOBLOCK) or ``zmq.ZMQError``."""
    flags = int(flags)
    more = flags | _SNDMORE
    for frame in frames[:-1]:
        _send(sock, frame, more)
    _send(sock, frames[-1], flags)


def send_to(sock: zmq.Socket[bytes], peer: bytes, frames: Sequence[bytes], flags: int = 0) -> None:
    """Send one message to a ROUTER peer."""
    flags = int(flags)
    _send(sock, peer, flags | _SNDMORE)
    send(sock, frames, flags)


def recv(sock: zmq.Socket[bytes], flags: int = 0) -> list[bytes]:
    """Receive one whole message (raises ``zmq.Again`` with NOBLOCK when none).

    Frames come as ``zmq.Frame`` so that "more parts follow" is read from the
    frame, not asked of the socket with a getsockopt per part."""
    frame = _recv(sock, int(flags), False)
    frames: list[bytes] = [frame.bytes]
    while frame.more:
        frame = _recv(sock, 0, False)
        frames.append(frame.bytes)
    return frames


def drain(sock: zmq.Socket[bytes], limit: int = 1 << 30) -> list[list[bytes]]:
    """Every message waiting now (at most ``limit``), without blocking.

    Receives until ``zmq.Again`` rather than asking ``EVENTS`` first: libzmq
    answers each ``EVENTS`` (and each failed receive) with a poll() syscall on
    its command mailbox, so one failed receive per drain is the cheap way."""
    out: list[list[bytes]] = []
    try:
        while len(out) < limit:
            out.append(recv(sock, NOBLOCK))
    except zmq.Again:
        pass
    return out
