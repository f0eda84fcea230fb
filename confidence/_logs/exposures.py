"""Host-side preparation of drained flag logs: global apply de-duplication and batch sizing.

Each wasm instance de-duplicates the exposures it produced itself (resolve.md §6), but the pool
runs several instances (one per resolving thread, plus replacements after state swaps and
traps), so one (unit, flag) evaluated on two instances would be exposed twice. `Deduplicator`
applies the same rule across every instance: an applied flag whose identity (every field but
`apply_time`) was sent within 120 s of its apply time is dropped; the window holds at most
100,000 identities: when it is full of identities still in their window, the oldest is forgotten
to make room for the new one (as the guest does) and the overflow counter grows. Every operation
is O(1) amortized, whatever the traffic: entries are kept in sending order, so expiry and
eviction only ever touch the front. FlagAssigned envelopes left without flags by this are
dropped (an envelope that never had flags stays, as the guest emits it).

`LogPreparer` turns drained `WriteFlagLogsRequest`s into `LogBatch`es ready to send: deduplicated,
annotated with the host's dedup counts, split below `MAX_REQUEST_BYTES`, and counted (exposures
and resolve counts), so that a batch that is later dropped can be reported precisely.

All of this runs in the flush's worker thread, never on a resolving thread or the event loop.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Final

from confidence import _lazy

__all__ = [
    "DEDUP_CAPACITY",
    "DEDUP_WINDOW_MS",
    "MAX_REQUEST_BYTES",
    "DedupStats",
    "Deduplicator",
    "LogBatch",
    "LogPreparer",
]

DEDUP_WINDOW_MS: Final = 120_000
DEDUP_CAPACITY: Final = 100_000
#: How late an exposure may be drained after its apply time and still be compared with the
#: identities sent before it: entries stay this much longer than the window (unless the
#: window is full), so a flush interval or a backlog of retired instances' logs cannot make
#: an identity be forgotten before a duplicate of it arrives.
DEDUP_LATE_ARRIVAL_MS: Final = 10 * 60_000
#: Largest request body we build. Confidence's limit is not documented; the reference
#: resolver fills its batches up to 4 MiB, so batches of that size are known to be accepted.
MAX_REQUEST_BYTES: Final = 4 * 1024 * 1024

_APPLY_TIME_TAG: Final = b"\x4a"  # AppliedFlag.apply_time: field 9, length-delimited


@dataclass(frozen=True, slots=True)
class LogBatch:
    """One serialized WriteFlagLogsRequest, with what it carries (for drop accounting)."""

    body: bytes
    exposures: int  # AppliedFlag entries
    resolves: int  # sum of the flag_resolve_info variant counts


@dataclass(frozen=True, slots=True)
class DedupStats:
    applies_total: int = 0
    applies_deduped: int = 0
    #: Identities forgotten while still in their window to make room (a full window).
    overflow: int = 0
    window_size: int = 0


def _millis(ts: Any) -> int:  # Any: protobuf (_proto is untyped)
    return int(ts.seconds) * 1000 + int(ts.nanos) // 1_000_000


def _time_suffix(flag: Any) -> tuple[bytes, int]:  # Any: protobuf (_proto is untyped)
    """How `flag`'s apply time ends its serialization, and the time in ms."""
    if not flag.HasField("apply_time"):
        return b"", 0
    encoded = flag.apply_time.SerializeToString()
    # A Timestamp is at most 17 bytes, so its length prefix is a single byte.
    return _APPLY_TIME_TAG + bytes((len(encoded),)) + encoded, _millis(flag.apply_time)


def _identity(flag: Any) -> tuple[bytes, int]:  # Any: protobuf (_proto is untyped)
    """The general path: the flag without its apply time, serialized, and the time."""
    copy = type(flag)()
    copy.CopyFrom(flag)
    at = _millis(copy.apply_time) if copy.HasField("apply_time") else 0
    copy.ClearField("apply_time")
    return copy.SerializeToString(deterministic=True), at


class Deduplicator:
    """The global apply-dedup window. Thread-safe (one lock around each request)."""

    def __init__(self, *, window_ms: int = DEDUP_WINDOW_MS, capacity: int = DEDUP_CAPACITY) -> None:
        self._window = window_ms
        self._capacity = capacity
        # identity digest -> apply time (ms) of the last exposure sent with it. Insertion
        # order follows sending order (a re-sent identity moves to the end), so the oldest
        # entries are at the front and a sweep stops at the first one still in the window.
        # (OrderedDict: O(1) access to the front, where a dict degrades after many deletions.)
        self._sent: OrderedDict[bytes, int] = OrderedDict()
        self._lock = threading.Lock()
        self._now = 0
        self._total = 0
        self._deduped = 0
        self._overflow = 0
        #: Entries removed by expiry or eviction: instrumentation (tests bound the work per
        #: exposure with it; each entry is removed at most once).
        self.removed = 0

    def stats(self) -> DedupStats:
        with self._lock:
            return DedupStats(self._total, self._deduped, self._overflow, len(self._sent))

    def filter(self, request: Any, now_ms: int) -> tuple[int, int]:  # Any: protobuf
        """Drop duplicate applied flags from a decoded WriteFlagLogsRequest, in place.

        Returns (deduplicated, overflowed) for this request.
        """
        # The hot loop of the flush (one iteration per exposure): locals, no calls per flag
        # beyond two serializations, a hash and a dict lookup.
        with self._lock:
            self._now = now_ms
            self._sweep(now_ms - self._window - DEDUP_LATE_ARRIVAL_MS)
            sent, window, digest = self._sent, self._window, hashlib.blake2b
            # Serialized apply time -> (its encoding as the flag's last field, ms). The guest
            # stamps all flags of one resolve with one time, and many resolves share a ms.
            suffixes: dict[bytes, tuple[bytes, int]] = {}
            total = deduped = overflowed = 0
            emptied: list[int] = []
            for index, assigned in enumerate(request.flag_assigned):
                flags = assigned.flags
                count = len(flags)
                if not count:
                    continue
                total += count
                drop: list[int] = []
                for position, flag in enumerate(flags):
                    raw = flag.SerializeToString()
                    stamp = flag.apply_time.SerializeToString()
                    known = suffixes.get(stamp)
                    if known is None:
                        known = suffixes[stamp] = _time_suffix(flag)
                    suffix, at = known
                    # Fields are serialized in field-number order, so apply_time (the
                    # highest) ends the bytes; anything else takes the general path.
                    if suffix and raw.endswith(suffix):
                        identity = raw[: -len(suffix)]
                    else:
                        identity, at = _identity(flag)
                    key = digest(identity, digest_size=16).digest()
                    last = sent.get(key)
                    if last is not None:
                        if -window < at - last < window:
                            drop.append(position)
                            continue
                        sent[key] = max(at, last)
                        sent.move_to_end(key)  # it is the newest again
                    else:
                        if len(sent) >= self._capacity and not self._make_room():
                            # Full of identities still in their window: forget the oldest.
                            sent.popitem(last=False)
                            self.removed += 1
                            overflowed += 1
                        sent[key] = at
                if drop:
                    deduped += len(drop)
                    if len(drop) == count:
                        emptied.append(index)
                    else:
                        for position in reversed(drop):
                            del flags[position]
            for index in reversed(emptied):
                del request.flag_assigned[index]
            self._total += total
            self._deduped += deduped
            self._overflow += overflowed
            return deduped, overflowed

    def _make_room(self) -> bool:
        # Full: forget what is certainly out of the window now, as the guest does.
        self._sweep(self._now - self._window)
        return len(self._sent) < self._capacity

    def _sweep(self, horizon: int) -> None:
        sent = self._sent
        while sent:
            key = next(iter(sent))
            if sent[key] > horizon:
                break
            sent.popitem(last=False)
            self.removed += 1


def _resolve_count(request: Any) -> int:  # Any: protobuf (_proto is untyped)
    return sum(v.count for info in request.flag_resolve_info for v in info.variant_resolve_info)


def _varint_len(n: int) -> int:
    return max(1, (n.bit_length() + 6) // 7)


class LogPreparer:
    """Drained requests in, `LogBatch`es out (deduplicated when enabled, size-bounded)."""

    def __init__(
        self,
        *,
        dedup: Deduplicator | None,
        max_request_bytes: int = MAX_REQUEST_BYTES,
    ) -> None:
        self.dedup = dedup
        self._limit = max_request_bytes

    def prepare(self, drained: Iterable[bytes], now_ms: int) -> list[LogBatch]:
        batches: list[LogBatch] = []
        for body in drained:
            if body:
                batches.extend(self._prepare_one(body, now_ms))
        return batches

    def _prepare_one(self, body: bytes, now_ms: int) -> list[LogBatch]:
        # Imported on the first flush, not at start-up: the protobuf runtime costs ~15 ms.
        # (In a drain thread: fork-safe, see _lazy.)
        _lazy.load("confidence._proto.confidence.flags.resolver.v1.api_pb2")
        from confidence._proto.confidence.flags.resolver.v1 import api_pb2

        request = api_pb2.WriteFlagLogsRequest.FromString(body)
        changed = False
        if request.HasField("telemetry_data") and request.telemetry_data.resolve_rate:
            # Counted by the host instead, once per evaluation with its final outcome (the
            # guest cannot know about a type mismatch or a missing path): see _stats.
            del request.telemetry_data.resolve_rate[:]
            changed = True
        if self.dedup is not None and request.flag_assigned:
            deduped, overflowed = self.dedup.filter(request, now_ms)
            if deduped or overflowed:
                # Confidence sees the whole picture: the guest's per-instance counts plus ours.
                telemetry = request.telemetry_data.apply_dedup
                telemetry.applies_deduped = min(2**32 - 1, telemetry.applies_deduped + deduped)
                telemetry.apply_dedup_overflow = min(
                    2**32 - 1, telemetry.apply_dedup_overflow + overflowed
                )
                changed = True
        if not (
            request.flag_assigned
            or request.client_resolve_info
            or request.flag_resolve_info
            or request.HasField("telemetry_data")
        ):
            return []
        if changed:
            body = request.SerializeToString()
        if len(body) <= self._limit:
            exposures = sum(len(a.flags) for a in request.flag_assigned)
            return [LogBatch(body, exposures, _resolve_count(request))]
        return self._split(request)

    def _split(self, request: Any) -> list[LogBatch]:  # Any: protobuf (_proto is untyped)
        """Greedy split: telemetry in the first request, every repeated entry in exactly one
        request, each request at most the limit (a single larger entry travels alone)."""
        from confidence._proto.confidence.flags.resolver.v1 import api_pb2  # (loaded: see above)

        items: list[tuple[str, Any, int]] = []  # Any: protobuf (_proto is untyped)
        for name in ("client_resolve_info", "flag_resolve_info", "flag_assigned"):
            for item in getattr(request, name):
                size = item.ByteSize()
                items.append((name, item, 1 + _varint_len(size) + size))
        chunks: list[Any] = []  # Any: protobuf (_proto is untyped)
        current = api_pb2.WriteFlagLogsRequest()
        size = 0
        if request.HasField("telemetry_data"):
            current.telemetry_data.CopyFrom(request.telemetry_data)
            size = current.ByteSize()
        has_items = False
        for name, item, item_size in items:
            if has_items and size + item_size > self._limit:
                chunks.append(current)
                current, size, has_items = api_pb2.WriteFlagLogsRequest(), 0, False
            getattr(current, name).add().CopyFrom(item)
            size += item_size
            has_items = True
        chunks.append(current)
        return [
            LogBatch(
                chunk.SerializeToString(),
                sum(len(a.flags) for a in chunk.flag_assigned),
                _resolve_count(chunk),
            )
            for chunk in chunks
        ]


def total(batches: Sequence[LogBatch]) -> tuple[int, int]:
    """(exposures, resolves) carried by `batches`."""
    return sum(b.exposures for b in batches), sum(b.resolves for b in batches)
