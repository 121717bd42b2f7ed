"""Peer liveness and reconnect backoff: pure, with the clock passed in.

The Paranoid Pirate rule (ZeroMQ Guide): a peer is alive while any frame from it
arrived within ``interval × liveness``; a side that lost its peer reconnects on
a fresh socket after a backoff that doubles up to a cap. Both the orchestrator
(per worker) and the worker (for the orchestrator) use these.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Liveness:
    """Tracks one peer. ``now`` values are nanoseconds from any one clock."""

    interval_ns: int
    liveness: int
    last_seen: int

    def beat(self, now: int) -> None:
        """Any frame from the peer counts as a heartbeat."""
        self.last_seen = now

    def missed(self, now: int) -> int:
        """Whole intervals since the last frame."""
        return max(0, (now - self.last_seen) // self.interval_ns)

    def expired(self, now: int) -> bool:
        return now - self.last_seen > self.interval_ns * self.liveness

    def age_s(self, now: int) -> float:
        return max(0, now - self.last_seen) / 1e9


@dataclass(slots=True)
class Backoff:
    """Delays for successive reconnect attempts: initial, ×2 each time, capped."""

    initial_s: float = 0.1
    cap_s: float = 5.0
    attempt: int = 0

    def next_delay(self) -> float:
        delay: float = min(self.cap_s, self.initial_s * 2.0**self.attempt)
        self.attempt += 1
        return delay

    def reset(self) -> None:
        self.attempt = 0
