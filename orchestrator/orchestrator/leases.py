"""Tensor leases: who owns each shared-memory segment and slot, who holds each slot.

A pure state machine (no sockets, no files, ``now`` passed in): it answers with
instructions (:class:`Free`: tell an owner a slot may be reused; segment names
to unlink) that :mod:`.tensor_hooks` and ``service`` carry out.

Rules (docs/tensors.md):
- an owner announces its segments (``worker.hello`` ``segments``); a name owned
  by someone else is refused;
- an owner leases a slot to holders (``shm.lease``); the handle is checked
  against the segment: known, the owner's, same shm namespace, offset + nbytes
  inside it (``shm.bad_handle`` / ``shm.foreign_namespace``), and its generation
  not older than one already seen for that slot (``shm.stale_handle``);
- each holder releases (``shm.release``); the last release frees the slot; a
  lease not released by its deadline is freed too (a holder that died quietly);
- a lost holder releases everything it held; a lost owner's segments are to be
  unlinked and its leases dropped (their handles are stale from then on);
- a holder's holds can pass to another (``transfer``: a finished child's
  tensors to the parent task reading them) and be released all at once
  (``drop_holder``: that parent finished); ``holding`` indexes them by holder.
"""

from __future__ import annotations

import heapq
from collections import Counter
from dataclasses import dataclass, field

from wasm_engine.errors import SHM_FOREIGN_NAMESPACE, SHM_STALE_HANDLE, WasmEngineError
from wasm_engine.tensors.ref import TensorRef, bad, valid_segment_name
from wasm_engine.tensors.shm import HEADER

SlotKey = tuple[str, int]  # (segment, data offset)


@dataclass(frozen=True, slots=True)
class Free:
    """Tell ``owner`` that its slot is free to reuse."""

    owner: str
    segment: str
    offset: int
    generation: int


@dataclass(slots=True)
class SegmentRecord:
    name: str
    size: int
    owner: str
    ns: str


@dataclass(slots=True)
class Lease:
    segment: str
    offset: int
    generation: int
    owner: str
    holders: set[str]
    expires: int
    nbytes: int = 0


@dataclass
class Leases:
    ttl_ns: int
    segments: dict[str, SegmentRecord] = field(default_factory=dict)
    owned: dict[str, set[str]] = field(default_factory=dict)  # owner -> segment names
    leases: dict[SlotKey, Lease] = field(default_factory=dict)
    latest: dict[SlotKey, int] = field(default_factory=dict)  # newest generation seen per slot
    counters: Counter[str] = field(default_factory=Counter)
    holding: dict[str, set[SlotKey]] = field(default_factory=dict)  # holder -> its slots
    _deadlines: list[tuple[int, str, int, int]] = field(default_factory=list)

    # ------------------------------------------------------------------ owners
    def attach(self, owner: str, ns: str, segments: list[tuple[str, int]]) -> None:
        """Record ``owner``'s segments (all or none)."""
        for name, size in segments:
            if not valid_segment_name(name) or size <= HEADER:
                raise bad(f"segment {name[:64]!r} of {size} B is not a valid segment")
            known = self.segments.get(name)
            if known is not None and known.owner != owner:
                raise bad(f"segment {name} is owned by {known.owner}", segment=name)
        for name, size in segments:
            self.segments[name] = SegmentRecord(name, size, owner, ns)
            self.owned.setdefault(owner, set()).add(name)

    def lose_owner(self, owner: str) -> list[str]:
        """Forget ``owner``: its segments (to unlink) and every lease on them."""
        names = sorted(self.owned.pop(owner, set()))
        gone = set(names)
        for name in names:
            del self.segments[name]
        for key in [k for k in self.leases if k[0] in gone]:
            self._unindex(key, self.leases.pop(key).holders)
            self.counters["leases_dropped"] += 1
        for key in [k for k in self.latest if k[0] in gone]:
            del self.latest[key]
        return names

    # ------------------------------------------------------------------ leases
    def lease(
        self, owner: str, ref: TensorRef, holders: list[str], now: int, ttl_ns: int = 0
    ) -> None:
        if ref.loc != "shm":
            raise bad("only a shm handle can be leased", field="loc")
        if not holders:
            raise bad("a lease needs at least one holder", field="holders")
        seg = self.segments.get(ref.segment)
        if seg is None or seg.owner != owner:
            raise bad(f"segment {ref.segment} is not one of {owner}'s", segment=ref.segment)
        if ref.ns != seg.ns:
            raise WasmEngineError(
                SHM_FOREIGN_NAMESPACE,
                f"handle names shm namespace {ref.ns!r}; segment {ref.segment} is in {seg.ns!r}",
                detail={"ns": ref.ns, "segment_ns": seg.ns},
            )
        if ref.offset < HEADER or ref.offset + ref.nbytes > seg.size:
            raise bad(
                f"offset {ref.offset} + nbytes {ref.nbytes} outside segment of {seg.size} B",
                segment=ref.segment,
                size=seg.size,
            )
        key = (ref.segment, ref.offset)
        if ref.generation < self.latest.get(key, 0):
            raise self._stale(key, ref.generation)
        expires = now + (ttl_ns or self.ttl_ns)
        held = self.leases.get(key)
        if held is None or held.generation != ref.generation:
            if held is not None:  # the owner reused the slot: the old holders' handles are stale
                self.counters["leases_replaced"] += 1
                self._unindex(key, held.holders)
            held = Lease(ref.segment, ref.offset, ref.generation, owner, set(), expires, ref.nbytes)
            self.leases[key] = held
            self.latest[key] = ref.generation
        held.holders.update(holders)
        for holder in holders:
            self.holding.setdefault(holder, set()).add(key)
        held.expires = max(held.expires, expires)
        heapq.heappush(self._deadlines, (held.expires, ref.segment, ref.offset, ref.generation))
        self.counters["leases"] += 1

    def release(self, holder: str, segment: str, offset: int, generation: int) -> Free | None:
        """``holder`` is done; the :class:`Free` for its owner when it was the last."""
        key = (segment, offset)
        held = self.leases.get(key)
        if held is None or held.generation != generation or holder not in held.holders:
            raise self._stale(key, generation, holder)
        held.holders.discard(holder)
        self._unindex(key, (holder,))
        return self._maybe_free(key, held)

    def drop_holder(self, holder: str) -> list[Free]:
        """A holder is gone (a lost worker, a finished parent): release all it held."""
        frees = []
        for key in self.holding.pop(holder, ()):
            held = self.leases.get(key)
            if held is not None and holder in held.holders:
                held.holders.discard(holder)
                free = self._maybe_free(key, held)
                if free is not None:
                    frees.append(free)
        return frees

    def transfer(self, holder: str, to: str, now: int) -> int:
        """``holder``'s holds become ``to``'s, each renewed for a ttl from ``now``; how many."""
        keys = self.holding.pop(holder, set())
        for key in keys:
            held = self.leases[key]
            held.holders.discard(holder)
            held.holders.add(to)
            held.expires = max(held.expires, now + self.ttl_ns)
            heapq.heappush(self._deadlines, (held.expires, key[0], key[1], held.generation))
        if keys:
            self.holding.setdefault(to, set()).update(keys)
        return len(keys)

    def expire(self, now: int) -> list[Free]:
        """Free every lease past its deadline (holders that never released)."""
        frees = []
        while self._deadlines and self._deadlines[0][0] <= now:
            _, segment, offset, generation = heapq.heappop(self._deadlines)
            held = self.leases.get((segment, offset))
            if held is None or held.generation != generation or held.expires > now:
                continue  # released, replaced or extended since
            self.counters["leases_expired"] += 1
            self._unindex((segment, offset), held.holders)
            held.holders.clear()
            free = self._maybe_free((segment, offset), held)
            if free is not None:
                frees.append(free)
        return frees

    def _unindex(self, key: SlotKey, holders: set[str] | tuple[str, ...]) -> None:
        for holder in holders:
            keys = self.holding.get(holder)
            if keys is not None:
                keys.discard(key)
                if not keys:
                    del self.holding[holder]

    def _maybe_free(self, key: SlotKey, held: Lease) -> Free | None:
        if held.holders:
            return None
        del self.leases[key]
        self.counters["leases_freed"] += 1
        return Free(held.owner, held.segment, held.offset, held.generation)

    def _stale(self, key: SlotKey, generation: int, holder: str | None = None) -> WasmEngineError:
        held = self.leases.get(key)
        return WasmEngineError(
            SHM_STALE_HANDLE,
            f"no lease on {key[0]}@{key[1]} generation {generation}"
            + (f" held by {holder}" if holder else ""),
            detail={"segment": key[0], "offset": key[1], "current": held and held.generation},
        )

    def describe(self) -> dict[str, int]:
        return {
            "segments": len(self.segments),
            "owners": len(self.owned),
            "leases": len(self.leases),
            "holds": sum(len(x.holders) for x in self.leases.values()),
        }
