"""Host-side flag-log preparation: global apply de-dup, request splitting, the backlog."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest

from confidence._logs import flag_logs as _flag_logs
from confidence._logs.exposures import (
    DEDUP_WINDOW_MS,
    Deduplicator,
    LogBatch,
    LogPreparer,
)
from confidence._logs.flag_logs import FlagLogPipeline, _Backlog
from confidence._proto.confidence.flags.resolver.v1 import api_pb2

T0 = 1_700_000_000_000  # ms


def applied(assigned: Any, flag: str, unit: str, at_ms: int, **fields: Any) -> Any:
    f = assigned.flags.add(flag=flag, targeting_key=unit, targeting_key_selector="targeting_key")
    f.assignment_info.segment = fields.pop("segment", "segments/all")
    f.assignment_info.variant = fields.pop("variant", f"{flag}/variants/on")
    f.assignment_id = fields.pop("assignment_id", "a-1")
    f.rule = fields.pop("rule", f"{flag}/rules/r1")
    for ft in fields.pop("fallthroughs", ()):
        f.fallthrough_assignments.add(rule=ft, assignment_id="ft", targeting_key=unit)
    assert not fields
    f.apply_time.FromMilliseconds(at_ms)
    return f


def request(*envelopes: list[tuple[str, str, int]], resolve_count: int = 0) -> Any:
    req = api_pb2.WriteFlagLogsRequest()
    for i, flags in enumerate(envelopes):
        assigned = req.flag_assigned.add(resolve_id=f"resolve-{i}")
        assigned.client_info.client = "clients/c"
        for flag, unit, at in flags:
            applied(assigned, flag, unit, at)
    if resolve_count:
        info = req.flag_resolve_info.add(flag="flags/f")
        info.variant_resolve_info.add(variant="flags/f/variants/on", count=resolve_count)
    req.telemetry_data.resolver_version = "test"
    return req


def exposures(req: Any) -> list[tuple[str, str, int]]:
    return [
        (f.flag, f.targeting_key, f.apply_time.ToMilliseconds())
        for a in req.flag_assigned
        for f in a.flags
    ]


# -- Deduplicator ------------------------------------------------------------------------------


def test_window_is_120_seconds_of_apply_time_and_ignores_only_the_apply_time() -> None:
    dedup = Deduplicator()
    first = request([("flags/f", "u", T0)])
    assert dedup.filter(first, T0) == (0, 0)
    assert exposures(first) == [("flags/f", "u", T0)]

    later = request(
        [("flags/f", "u", T0 + 1)],  # same identity, 1 ms later: dropped (envelope too)
        [("flags/f", "u", T0 + DEDUP_WINDOW_MS - 1), ("flags/g", "u", T0 + 5)],
        [("flags/f", "v", T0 + 5)],  # another unit: a new identity
    )
    assert dedup.filter(later, T0 + 10) == (2, 0)
    assert exposures(later) == [("flags/g", "u", T0 + 5), ("flags/f", "v", T0 + 5)]
    assert [a.resolve_id for a in later.flag_assigned] == ["resolve-1", "resolve-2"]

    # 120 s after the one that was sent: an exposure again, and the window restarts there.
    again = request([("flags/f", "u", T0 + DEDUP_WINDOW_MS)], [("flags/f", "u", T0 + 130_000)])
    assert dedup.filter(again, T0 + DEDUP_WINDOW_MS) == (1, 0)
    assert exposures(again) == [("flags/f", "u", T0 + DEDUP_WINDOW_MS)]
    stats = dedup.stats()
    assert (stats.applies_total, stats.applies_deduped, stats.overflow) == (7, 3, 0)


@pytest.mark.parametrize(
    "field",
    ["targeting_key_selector", "segment", "variant", "assignment_id", "rule", "fallthroughs"],
)
def test_every_other_field_is_part_of_the_identity(field: str) -> None:
    dedup = Deduplicator()
    assert dedup.filter(request([("flags/f", "u", T0)]), T0) == (0, 0)
    req = api_pb2.WriteFlagLogsRequest()
    assigned = req.flag_assigned.add()
    if field == "targeting_key_selector":
        applied(assigned, "flags/f", "u", T0 + 1).targeting_key_selector = "user_id"
    elif field == "fallthroughs":
        applied(assigned, "flags/f", "u", T0 + 1, fallthroughs=["flags/f/rules/r0"])
    else:
        applied(assigned, "flags/f", "u", T0 + 1, **{field: "other"})
    assert dedup.filter(req, T0 + 1) == (0, 0)
    assert len(exposures(req)) == 1


def test_late_and_out_of_order_applies() -> None:
    dedup = Deduplicator()
    assert dedup.filter(request([("flags/f", "u", T0 + 100_000)]), T0 + 100_000) == (0, 0)
    # Drained late from another instance, applied before the one that was sent: same window.
    assert dedup.filter(request([("flags/f", "u", T0)]), T0 + 110_000) == (1, 0)
    # Applied 118 s after the one that was sent and drained 30 s later (a long flush
    # interval): still recognized, the identity is kept beyond the window.
    assert dedup.filter(request([("flags/f", "u", T0 + 218_000)]), T0 + 248_000) == (1, 0)


def test_a_full_window_forgets_its_oldest_identity_and_counts_it() -> None:
    dedup = Deduplicator(capacity=3)
    req = request([("flags/f", f"u{i}", T0) for i in range(5)])
    assert dedup.filter(req, T0) == (0, 2)
    assert len(exposures(req)) == 5
    assert dedup.stats().window_size == 3
    # u0 and u1 were forgotten to make room; u2..u4 are still deduplicated.
    req = request([("flags/f", "u0", T0 + 1), ("flags/f", "u4", T0 + 1)])
    assert dedup.filter(req, T0 + 1) == (1, 1)
    assert exposures(req) == [("flags/f", "u0", T0 + 1)]
    # Once the window has passed, expiry makes room: no eviction.
    late = T0 + DEDUP_WINDOW_MS + 1
    assert dedup.filter(request([("flags/f", "new", late)]), late) == (0, 0)
    assert dedup.filter(request([("flags/f", "new", late + 1)]), late + 1) == (1, 0)
    assert dedup.stats().overflow == 3


def test_work_per_exposure_stays_bounded_past_capacity() -> None:
    # 1 identity per ms, 4 capacities: the window (120 s) holds more than the capacity, so
    # the window both evicts in-window identities and expires old ones; each entry is removed
    # at most once, and the window never holds more than its capacity.
    capacity, n, per_request = 2_000, 8_000, 100
    dedup = Deduplicator(capacity=capacity)
    for start in range(0, n, per_request):
        at = T0 + start
        req = request([("flags/f", f"u{i}", at) for i in range(start, start + per_request)])
        before = dedup.removed
        assert dedup.filter(req, at) == (0, 0 if start < capacity else per_request)
        assert dedup.removed - before <= per_request
        assert dedup.stats().window_size <= capacity
    assert dedup.removed == n - capacity
    stats = dedup.stats()
    assert (stats.applies_total, stats.applies_deduped, stats.overflow) == (n, 0, n - capacity)
    # the most recent `capacity` identities are still deduplicated, older ones are not
    now = T0 + n
    req = request([("flags/f", f"u{i}", now) for i in (n - 1, n - capacity, n - capacity - 1)])
    assert dedup.filter(req, now) == (2, 1)
    assert exposures(req) == [("flags/f", f"u{n - capacity - 1}", now)]


def test_an_envelope_that_never_had_flags_is_kept() -> None:
    req = request([], [("flags/f", "u", T0)], [("flags/f", "u", T0)])
    assert Deduplicator().filter(req, T0) == (1, 0)
    assert [len(a.flags) for a in req.flag_assigned] == [0, 1]


# -- LogPreparer -------------------------------------------------------------------------------


def test_prepare_dedups_adds_host_counts_to_telemetry_and_counts() -> None:
    preparer = LogPreparer(dedup=Deduplicator())
    first = request([("flags/f", "u", T0)], resolve_count=3)
    first.telemetry_data.apply_dedup.applies_deduped = 5
    (batch,) = preparer.prepare([first.SerializeToString()], T0)
    assert batch == LogBatch(first.SerializeToString(), 1, 3)  # unchanged: the same bytes

    second = request([("flags/f", "u", T0 + 1)], [("flags/g", "u", T0 + 1)], resolve_count=2)
    second.telemetry_data.apply_dedup.applies_deduped = 5
    (batch,) = preparer.prepare([second.SerializeToString()], T0 + 1)
    decoded = api_pb2.WriteFlagLogsRequest.FromString(batch.body)
    assert exposures(decoded) == [("flags/g", "u", T0 + 1)]
    assert decoded.telemetry_data.apply_dedup.applies_deduped == 6  # guest's 5 + ours
    assert decoded.telemetry_data.resolver_version == "test"
    assert (batch.exposures, batch.resolves) == (1, 2)
    assert preparer.prepare([b""], T0) == []


def test_without_dedup_everything_passes() -> None:
    req = request([("flags/f", "u", T0)], [("flags/f", "u", T0)], resolve_count=2)
    (batch,) = LogPreparer(dedup=None).prepare([req.SerializeToString()], T0)
    assert (batch.body, batch.exposures, batch.resolves) == (req.SerializeToString(), 2, 2)


def test_large_requests_are_split_below_the_limit_losing_nothing() -> None:
    limit = 4096
    envelopes = [
        [("flags/f", f"unit-{i:04d}", T0), ("flags/g", f"unit-{i:04d}", T0)] for i in range(300)
    ]
    req = request(*envelopes, resolve_count=600)
    for i in range(40):
        info = req.client_resolve_info.add(client=f"clients/c{i}")
        info.schema.add().schema[f"field{i}"] = 3
    body = req.SerializeToString()
    assert len(body) > 10 * limit

    batches = LogPreparer(dedup=None, max_request_bytes=limit).prepare([body], T0)
    assert len(batches) > 10
    decoded = [api_pb2.WriteFlagLogsRequest.FromString(b.body) for b in batches]
    assert all(len(b.body) <= limit for b in batches)
    assert [d.HasField("telemetry_data") for d in decoded] == [True] + [False] * (len(decoded) - 1)
    assert Counter(e for d in decoded for e in exposures(d)) == Counter(exposures(req))
    assert [a.resolve_id for d in decoded for a in d.flag_assigned] == [
        a.resolve_id for a in req.flag_assigned
    ]
    assert sorted(i.client for d in decoded for i in d.client_resolve_info) == sorted(
        i.client for i in req.client_resolve_info
    )
    assert sum(b.exposures for b in batches) == 600
    assert sum(b.resolves for b in batches) == 600


def test_an_entry_larger_than_the_limit_travels_alone() -> None:
    req = request([("flags/f", f"u{i}", T0) for i in range(100)], [("flags/f", "x", T0)])
    batches = LogPreparer(dedup=None, max_request_bytes=512).prepare([req.SerializeToString()], T0)
    assert [b.exposures for b in batches] == [100, 1]


# -- backlog and host telemetry ----------------------------------------------------------------


def batch(n: int, size: int = 10) -> LogBatch:
    return LogBatch(bytes([n]) * size, exposures=n, resolves=2 * n)


def test_backlog_drops_oldest_beyond_its_bounds_but_never_the_batch_in_flight(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(_flag_logs, "MAX_BACKLOG_BATCHES", 3)
    monkeypatch.setattr(_flag_logs, "MAX_BACKLOG_BYTES", 35)
    backlog = _Backlog()
    b1, b2, b3, b4, b5 = batch(1), batch(2), batch(3), batch(4), batch(5, size=30)
    assert backlog.extend([b1, b2, b3]) == []
    assert backlog.begin() is b1
    assert backlog.extend([b4]) == [b2]  # not b1: it is being delivered
    backlog.end(b1, delivered=True)
    assert len(backlog) == 2 and backlog.bytes == 20
    assert backlog.extend([b5]) == [b3, b4]  # the byte bound
    assert backlog.begin() is b5
    backlog.end(b5, delivered=False)  # failed: stays
    assert backlog.take_all() == [b5] and backlog.bytes == 0


def test_host_telemetry_merges_into_the_guest_telemetry() -> None:
    pipeline = FlagLogPipeline(interval=1.0, dedup=True, state_updated_at=lambda: 1234.5)
    guest = request([("flags/f", "u", T0)])
    guest.telemetry_data.memory_bytes = 77
    body = guest.SerializeToString() + pipeline._host_telemetry(3, 1)
    merged = api_pb2.WriteFlagLogsRequest.FromString(body)
    assert merged.telemetry_data.memory_bytes == 77
    assert merged.telemetry_data.resolver_version == "test"
    assert (merged.telemetry_data.flush.succeeded, merged.telemetry_data.flush.failed) == (3, 1)
    assert merged.telemetry_data.state_age.last_state_update == 1_234_500
    assert exposures(merged) == exposures(guest)
    # flush is always present (as the reference sends it), zeros included.
    bare = api_pb2.WriteFlagLogsRequest.FromString(
        FlagLogPipeline(interval=1.0, dedup=False)._host_telemetry(0, 0)
    )
    assert bare.telemetry_data.HasField("flush")
    assert (bare.telemetry_data.flush.succeeded, bare.telemetry_data.flush.failed) == (0, 0)
    assert not bare.telemetry_data.resolve_rate and not bare.telemetry_data.provider_init_rate
