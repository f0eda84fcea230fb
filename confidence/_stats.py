"""Evaluation counters and the `provider.stats()` snapshot.

The hot path pays for a few integer increments and one `perf_counter_ns()` pair, nothing
more: no lock and no shared counter. Each thread that evaluates gets its own shard (found
through a `threading.local`), so increments never race, neither under the GIL (where
`d[k] += 1` is a read-modify-write that a thread switch can split) nor on free-threaded
builds. A snapshot sums the shards; shards of threads that have ended are folded into one
"retired" shard so that apps that spawn many short-lived threads do not grow the list.

Latency is kept as an exponential histogram (4 buckets per power of two of nanoseconds,
i.e. at most 25 % relative error), from which the snapshot derives percentiles.

Each evaluation that reaches a decision (the resolver answered) is also counted for
Confidence's own resolve analytics (`TelemetryData.resolve_rate` / `resolve_latency`,
protocol.md §3.4): by the outcome's `ResolveReason` (the resolver's, or TYPE_MISMATCH /
FLAG_NOT_FOUND when the host decided; each evaluation exactly once), and its latency in
microseconds on Confidence's layout (bucket `i` holds values in
`(exp((i-1)*ln_ratio), exp(i*ln_ratio)]`, ln_ratio = ln(10)/18). `telemetry_delta()` gives
what was not yet acknowledged; `acknowledge()` marks a delivered delta, so a failed
delivery's counts ride on the next one.
"""

from __future__ import annotations

import math
import os
import threading
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Final

from openfeature.exception import ErrorCode

if TYPE_CHECKING:
    from confidence._logs.flag_logs import FlagLogStats
    from confidence._logs.tracking import EventQueue
    from confidence._runtime import Runtime
    from confidence._wasm.pool import PoolStats

#: An evaluation's OpenFeature reason or error code as the provider has it: the SDK's
#: `Reason`/`ErrorCode` (both `str` enums), a custom string, or None.
ReasonKey = str | None
#: Called after every evaluation with `(elapsed_ns, reason)` (e.g. an OpenTelemetry histogram).
LatencyObserver = Callable[[int, ReasonKey], None]

__all__ = [
    "LN_RATIO",
    "EventStats",
    "HostTelemetry",
    "LatencySummary",
    "ProviderStats",
    "SnapshotConfig",
    "StatsRecorder",
    "prometheus_text",
    "snapshot",
]

#: Fold the shards of finished threads away when a new thread's shard would make the list
#: this long (then again at twice the survivors): an app that runs each request on a new
#: thread and never takes a snapshot must not grow the list (and keep every Thread alive).
_FOLD_MIN: Final = 64

# Index = 4 * bit_length + the two bits below the leading one; 64-bit ns covers ~584 years.
_BUCKETS: Final = 4 * 65


#: Confidence's resolve-latency histogram: 18 buckets per decade (protocol.md §3.4).
LN_RATIO: Final = math.log(10) / 18
_INV_LN_RATIO: Final = 1 / LN_RATIO
_log: Final = math.log
# ResolveReason numbers the host decides (resolve.md §7).
_TYPE_MISMATCH: Final = 9
_FLAG_NOT_FOUND: Final = 10


def latency_exponent(micros: int) -> int:
    """Confidence histogram bucket of a latency in µs (values below 1 µs count as 1 µs)."""
    if micros <= 1:
        return 0
    return int(math.log(micros) * _INV_LN_RATIO) + 1


_TYPE_MISMATCH_CODE: Final = ErrorCode.TYPE_MISMATCH
_FLAG_NOT_FOUND_CODE: Final = ErrorCode.FLAG_NOT_FOUND


@dataclass(frozen=True, slots=True)
class HostTelemetry:
    """Cumulative resolve analytics (or a delta of them): counts by `ResolveReason` number,
    latency bucket counts by exponent, the latency sum (µs) and count."""

    rates: Mapping[int, int] = field(default_factory=dict)
    buckets: Mapping[int, int] = field(default_factory=dict)
    sum_us: int = 0
    count: int = 0

    def minus(self, other: HostTelemetry) -> HostTelemetry:
        def sub(a: Mapping[int, int], b: Mapping[int, int]) -> dict[int, int]:
            return {k: n - b.get(k, 0) for k, n in a.items() if n - b.get(k, 0) > 0}

        return HostTelemetry(
            sub(self.rates, other.rates),
            sub(self.buckets, other.buckets),
            max(0, self.sum_us - other.sum_us),
            max(0, self.count - other.count),
        )

    def plus(self, other: HostTelemetry) -> HostTelemetry:
        def add(a: Mapping[int, int], b: Mapping[int, int]) -> dict[int, int]:
            out = dict(a)
            for k, n in b.items():
                out[k] = out.get(k, 0) + n
            return out

        return HostTelemetry(
            add(self.rates, other.rates),
            add(self.buckets, other.buckets),
            self.sum_us + other.sum_us,
            self.count + other.count,
        )


def _bucket(ns: int) -> int:
    bits = ns.bit_length()
    if bits < 3:
        return bits
    return 4 * bits + ((ns >> (bits - 3)) & 3)


def _bucket_upper_ns(index: int) -> int:
    """Exclusive upper bound (ns) of a bucket."""
    bits, sub = divmod(index, 4)
    if bits < 3:
        return 1 << index if index < 3 else 8
    return (5 + sub) << (bits - 3)


class _Shard:
    """One thread's counters. Written only by that thread."""

    __slots__ = (
        "buckets",
        "count",
        "errors",
        "max_ns",
        "reasons",
        "t_buckets",
        "t_count",
        "t_rates",
        "t_sum_us",
        "thread",
        "total_ns",
    )

    def __init__(self, thread: threading.Thread | None) -> None:
        self.thread = thread
        self.reasons: dict[ReasonKey, int] = {}
        self.errors: dict[str, int] = {}
        self.count = 0
        self.total_ns = 0
        self.max_ns = 0
        self.buckets = [0] * _BUCKETS
        # Resolve analytics for Confidence (decided evaluations only).
        self.t_rates: dict[int, int] = {}
        self.t_buckets: dict[int, int] = {}
        self.t_sum_us = 0
        self.t_count = 0

    def fold_into(self, other: _Shard) -> None:
        for key, n in dict(self.reasons).items():
            other.reasons[key] = other.reasons.get(key, 0) + n
        for key, n in dict(self.errors).items():
            other.errors[key] = other.errors.get(key, 0) + n
        other.count += self.count
        other.total_ns += self.total_ns
        other.max_ns = max(other.max_ns, self.max_ns)
        buckets = other.buckets
        for i, n in enumerate(list(self.buckets)):
            if n:
                buckets[i] += n
        for rate, n in dict(self.t_rates).items():
            other.t_rates[rate] = other.t_rates.get(rate, 0) + n
        for bucket, n in dict(self.t_buckets).items():
            other.t_buckets[bucket] = other.t_buckets.get(bucket, 0) + n
        other.t_sum_us += self.t_sum_us
        other.t_count += self.t_count


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """Resolve latency (seconds) over the provider's lifetime. Percentiles are bucket upper
    bounds (at most 25 % above the true value); all zero when nothing was resolved."""

    count: int = 0
    mean: float = 0.0
    p50: float = 0.0
    p90: float = 0.0
    p99: float = 0.0
    max: float = 0.0


@dataclass(frozen=True, slots=True)
class EventStats:
    """`track()` events: queued, delivered, rejected by Confidence, dropped, pending."""

    tracked: int = 0
    published: int = 0
    rejected: int = 0
    dropped: int = 0
    backlog: int = 0
    failed_batches: int = 0


def _proxy(d: Mapping[str, int]) -> Mapping[str, int]:
    return MappingProxyType(dict(d))


@dataclass(frozen=True, slots=True)
class ProviderStats:
    """A point-in-time snapshot of the provider (`ConfidenceProvider.stats()`).

    Counters are cumulative over the provider object's lifetime (they survive restarts).
    """

    #: Evaluations by OpenFeature reason ("TARGETING_MATCH", "DEFAULT", "ERROR", "STALE", ...).
    resolves_by_reason: Mapping[str, int] = field(default_factory=lambda: _proxy({}))
    #: Evaluations that returned an error, by OpenFeature error code ("FLAG_NOT_FOUND", ...).
    errors_by_code: Mapping[str, int] = field(default_factory=lambda: _proxy({}))
    resolve_latency: LatencySummary = LatencySummary()
    #: "NOT_STARTED", "STARTING", "READY", "STALE", "ERROR" or "STOPPED".
    status: str = "NOT_STARTED"
    #: Seconds since the served state was last confirmed current (a successful sync), or
    #: since it was loaded if it never was; None without a state.
    state_age_seconds: float | None = None
    #: True while serving a state from `state_cache_dir` that no sync has confirmed yet.
    serving_cached_state: bool = False
    #: "success" or "failure" for the latest state fetch; None before the first one.
    last_sync_outcome: str | None = None
    last_sync_error: str | None = None
    #: Seconds since the latest state fetch finished; None before the first one.
    last_sync_seconds_ago: float | None = None
    sync_consecutive_failures: int = 0
    log_backlog_batches: int = 0
    log_dropped_batches: int = 0
    log_delivered_batches: int = 0
    #: Exposures and resolve counts lost (full backlog, a resolver's full exposure queue,
    #: undelivered at the shutdown deadline); every loss is also logged at WARNING.
    log_dropped_exposures: int = 0
    log_dropped_resolves: int = 0
    #: Exposures not sent because an identical one (same unit, flag, variant, rule, ...) was
    #: sent within 120 s by another resolver instance (`enable_apply_dedup`).
    log_exposures_deduplicated: int = 0
    #: The flag-log ledger of the latest run (still readable after shutdown): for exposures
    #: and for resolve counts, `produced == delivered + in_flight + queued + dropped +
    #: spooled` in every snapshot. Produced = left the resolvers (after de-duplication), was
    #: refused by a resolver's full queue, or was read back from `log_spool_dir`
    #: (unspooled: delivery is at least once). Spooled = written to `log_spool_dir` instead
    #: of being dropped; a later start delivers it.
    log_produced_exposures: int = 0
    log_delivered_exposures: int = 0
    log_in_flight_exposures: int = 0
    log_queued_exposures: int = 0
    log_produced_resolves: int = 0
    log_delivered_resolves: int = 0
    log_in_flight_resolves: int = 0
    log_queued_resolves: int = 0
    log_spooled_exposures: int = 0
    log_spooled_resolves: int = 0
    log_unspooled_exposures: int = 0
    log_unspooled_resolves: int = 0
    events: EventStats = EventStats()
    #: Resolver instance pool (`confidence._wasm.pool.PoolStats`), None while not running.
    pool: PoolStats | None = None

    @property
    def resolves(self) -> int:
        return sum(self.resolves_by_reason.values())


def _key(value: ReasonKey) -> str:
    # Reason/ErrorCode are StrEnums; the backport's str() on 3.10 would say "Reason.X".
    return str(getattr(value, "value", value))


class StatsRecorder:
    """The hot-path counters of one provider."""

    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()  # guards the shard list; never taken by record()
        self._shards: list[_Shard] = []
        self._retired = _Shard(None)
        self._taken = HostTelemetry()  # resolve analytics taken by a delivery (sent or in flight)
        self._fold_at = _FOLD_MIN
        #: Optional per-evaluation callback `(elapsed_ns, reason)`, e.g. an OpenTelemetry
        #: histogram. None (the default) costs one attribute read.
        self.latency_observer: LatencyObserver | None = None
        _RECORDERS.add(self)

    def _after_fork(self) -> None:
        # A forked child starts from zero: its copy of the parent's counts would be counted
        # twice by anything that sums processes (e.g. OpenTelemetry). New lock: the parent's
        # may have been held by a thread that does not exist here.
        self._lock = threading.Lock()
        self._local = threading.local()
        self._shards = []
        self._retired = _Shard(None)
        self._taken = HostTelemetry()
        self._fold_at = _FOLD_MIN

    def _new_shard(self) -> _Shard:
        shard = _Shard(threading.current_thread())
        with self._lock:
            if len(self._shards) >= self._fold_at:
                # O(shards) once per as many new threads: O(1) amortized per thread.
                self._fold_finished_locked()
                self._fold_at = max(_FOLD_MIN, 2 * len(self._shards))
            self._shards.append(shard)
        self._local.shard = shard
        return shard

    def record(
        self,
        reason: ReasonKey,
        error_code: str | None,
        elapsed_ns: int,
        flags: Sequence[Sequence[Any]] | None = None,  # rows of JSON values (see below)
    ) -> None:
        """Count one evaluation. Called on the hot path: keep it to increments.

        `flags` is the resolver's answer when the evaluation reached one: its flag rows, a
        `Resolved`'s `flags` or the guest's JSON rows (both hold the resolver's reason at
        index 3). Only those evaluations count in Confidence's resolve analytics.
        """
        try:
            shard: _Shard = self._local.shard
        except AttributeError:
            shard = self._new_shard()
        reasons = shard.reasons
        reasons[reason] = reasons.get(reason, 0) + 1
        if error_code is not None:
            errors = shard.errors
            errors[error_code] = errors.get(error_code, 0) + 1
        shard.count += 1
        shard.total_ns += elapsed_ns
        if elapsed_ns > shard.max_ns:
            shard.max_ns = elapsed_ns
        # _bucket(), inlined: a function call would cost as much as the rest of record().
        bits = elapsed_ns.bit_length()
        index = (bits << 2) + ((elapsed_ns >> (bits - 3)) & 3) if bits >= 3 else bits
        shard.buckets[index if index < _BUCKETS else _BUCKETS - 1] += 1
        if flags is not None:
            # The host's verdict wins over the resolver's reason: a type mismatch or a
            # missing path is counted once, as that, and not also as the resolver's MATCH.
            if error_code is None:
                code = flags[0][3]
            elif error_code is _TYPE_MISMATCH_CODE:
                code = _TYPE_MISMATCH
            elif error_code is _FLAG_NOT_FOUND_CODE or not flags:
                code = _FLAG_NOT_FOUND
            else:
                code = flags[0][3]
            rates = shard.t_rates
            rates[code] = rates.get(code, 0) + 1
            micros = elapsed_ns // 1000
            # latency_exponent(), inlined (ceil of a positive non-integer as int(x) + 1).
            exponent = int(_log(micros) * _INV_LN_RATIO) + 1 if micros > 1 else 0
            t_buckets = shard.t_buckets
            t_buckets[exponent] = t_buckets.get(exponent, 0) + 1
            shard.t_sum_us += micros
            shard.t_count += 1
        observer = self.latency_observer
        if observer is not None:
            try:
                observer(elapsed_ns, reason)
            except Exception:  # an observer must never break an evaluation
                self.latency_observer = None

    def add_latency_observer(self, observer: LatencyObserver) -> None:
        """Also call `observer(elapsed_ns, reason)` after every evaluation, after the
        observers added before it. An observer that raises is removed (with the others)
        rather than break an evaluation."""
        previous = self.latency_observer
        if previous is None:
            self.latency_observer = observer
            return

        def both(elapsed_ns: int, reason: ReasonKey) -> None:
            previous(elapsed_ns, reason)
            observer(elapsed_ns, reason)

        self.latency_observer = both

    def totals(self) -> _Shard:
        """Sum of all shards (folding the shards of finished threads away)."""
        total = _Shard(None)
        with self._lock:
            self._fold_finished_locked()
            self._retired.fold_into(total)
            for shard in self._shards:
                shard.fold_into(total)
        return total

    def telemetry_totals(self) -> HostTelemetry:
        """Resolve analytics since the provider was created (or this process forked)."""
        total = self.totals()
        return HostTelemetry(
            dict(total.t_rates), dict(total.t_buckets), total.t_sum_us, total.t_count
        )

    def take_telemetry(self) -> HostTelemetry:
        """Resolve analytics not yet taken for a delivery, marked as taken (so deliveries in
        flight at once never carry the same counts twice)."""
        current = self.telemetry_totals()
        with self._lock:
            delta = current.minus(self._taken)
            self._taken = self._taken.plus(delta)
            return delta

    def give_back(self, delta: HostTelemetry) -> None:
        """`delta` (from take_telemetry()) did not reach Confidence: the next delivery
        carries it again."""
        with self._lock:
            self._taken = self._taken.minus(delta)

    def _fold_finished_locked(self) -> None:
        alive: list[_Shard] = []
        for shard in self._shards:
            thread = shard.thread
            if thread is not None and not thread.is_alive():
                # The thread is gone, so nothing writes this shard any more.
                shard.fold_into(self._retired)
            else:
                alive.append(shard)
        self._shards = alive

    def counts(self) -> tuple[Mapping[str, int], Mapping[str, int], LatencySummary]:
        total = self.totals()
        reasons: dict[str, int] = {}
        for key, n in total.reasons.items():
            name = _key(key)
            reasons[name] = reasons.get(name, 0) + n
        errors: dict[str, int] = {}
        for key, n in total.errors.items():
            name = _key(key)
            errors[name] = errors.get(name, 0) + n
        return _proxy(reasons), _proxy(errors), _summary(total)


_RECORDERS: weakref.WeakSet[StatsRecorder] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for recorder in list(_RECORDERS):
        recorder._after_fork()


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_after_fork_in_child)


def _summary(total: _Shard) -> LatencySummary:
    count = total.count
    if count == 0:
        return LatencySummary()
    # Shards are read without stopping their writers, so the bucket sum may differ from
    # `count` by an in-flight increment: rank against the buckets' own total.
    in_buckets = sum(total.buckets) or 1
    targets = [(0.50, "p50"), (0.90, "p90"), (0.99, "p99")]
    found: dict[str, float] = {}
    cumulative = 0
    for index, n in enumerate(total.buckets):
        if not n:
            continue
        cumulative += n
        while targets and cumulative >= targets[0][0] * in_buckets:
            _q, name = targets.pop(0)
            found[name] = min(_bucket_upper_ns(index), total.max_ns) / 1e9
        if not targets:
            break
    return LatencySummary(
        count=count,
        mean=total.total_ns / count / 1e9,
        p50=found.get("p50", 0.0),
        p90=found.get("p90", 0.0),
        p99=found.get("p99", 0.0),
        max=total.max_ns / 1e9,
    )


def now_ns() -> int:
    return time.perf_counter_ns()


def _status(runtime: Runtime | None) -> str:
    if runtime is None:
        return "NOT_STARTED"
    if runtime.finished:
        return "STOPPED"
    if runtime.fatal_error is not None and not runtime.has_state:
        return "ERROR"
    if not runtime.has_state:
        return "STARTING"
    return "STALE" if runtime.is_stale else "READY"


def _ledger(logs: FlagLogStats | None) -> dict[str, int]:
    if logs is None:
        return {}
    return {
        "log_produced_exposures": logs.produced_exposures,
        "log_delivered_exposures": logs.delivered_exposures,
        "log_in_flight_exposures": logs.in_flight_exposures,
        "log_queued_exposures": logs.queued_exposures,
        "log_produced_resolves": logs.produced_resolves,
        "log_delivered_resolves": logs.delivered_resolves,
        "log_in_flight_resolves": logs.in_flight_resolves,
        "log_queued_resolves": logs.queued_resolves,
        "log_spooled_exposures": logs.spooled_exposures,
        "log_spooled_resolves": logs.spooled_resolves,
        "log_unspooled_exposures": logs.unspooled_exposures,
        "log_unspooled_resolves": logs.unspooled_resolves,
    }


def snapshot(
    recorder: StatsRecorder, runtime: Runtime | None, events: EventQueue | None
) -> ProviderStats:
    """Assemble `ProviderStats` from the recorder, the live runtime (if any) and the event
    queue. Reads runtime fields without locks: each is a single attribute read."""
    reasons, errors, latency = recorder.counts()
    event_stats = events.stats() if events is not None else EventStats()
    if runtime is None:
        return ProviderStats(
            resolves_by_reason=reasons,
            errors_by_code=errors,
            resolve_latency=latency,
            events=event_stats,
        )
    now = time.time()
    syncer = getattr(runtime, "_syncer", None)
    last_success = getattr(syncer, "last_success_at", None)
    last_failure = getattr(syncer, "last_failure_at", None)
    outcome: str | None = None
    last_at: float | None = None
    if last_success is not None and (last_failure is None or last_success >= last_failure):
        outcome, last_at = "success", last_success
    elif last_failure is not None:
        outcome, last_at = "failure", last_failure
    has_state = runtime.has_state
    age: float | None = None
    if has_state:
        loaded = runtime.state_loaded_at
        fresh = last_success if not runtime.serving_cached_state else None
        # A 304 confirms the loaded state is current, so the later of the two counts.
        base = max((t for t in (loaded, fresh) if t is not None), default=None)
        age = max(0.0, now - base) if base is not None else None
    pool = getattr(runtime, "_pool", None)
    pool_stats = None
    if pool is not None:
        try:
            pool_stats = pool.stats()
        except Exception:
            pool_stats = None
    backlog = getattr(runtime, "_backlog", None)
    logs = runtime.log_stats() if hasattr(runtime, "log_stats") else None
    return ProviderStats(
        resolves_by_reason=reasons,
        errors_by_code=errors,
        resolve_latency=latency,
        status=_status(runtime),
        state_age_seconds=age,
        serving_cached_state=bool(runtime.serving_cached_state),
        last_sync_outcome=outcome,
        last_sync_error=getattr(syncer, "last_error", None),
        last_sync_seconds_ago=max(0.0, now - last_at) if last_at is not None else None,
        sync_consecutive_failures=getattr(syncer, "consecutive_failures", 0) or 0,
        log_backlog_batches=len(backlog) if backlog is not None else 0,
        log_dropped_batches=getattr(runtime, "dropped_log_batches", 0),
        log_delivered_batches=getattr(runtime, "delivered_log_batches", 0),
        log_dropped_exposures=logs.dropped_exposures if logs is not None else 0,
        log_dropped_resolves=logs.dropped_resolves if logs is not None else 0,
        log_exposures_deduplicated=(
            logs.dedup.applies_deduped if logs is not None and logs.dedup is not None else 0
        ),
        **_ledger(logs),
        events=event_stats,
        pool=pool_stats,
    )


class SnapshotConfig:
    """Accepted by `get_prometheus_metrics()` for compatibility with the official provider
    (where it is an empty, experimental class); it changes nothing."""


# ResolveReason names for the `reason` label (as Confidence's resolver reports them).
_REASON_NAMES: Final = {
    0: "RESOLVE_REASON_UNSPECIFIED",
    1: "RESOLVE_REASON_MATCH",
    2: "RESOLVE_REASON_NO_SEGMENT_MATCH",
    3: "RESOLVE_REASON_NO_TREATMENT_MATCH",
    4: "RESOLVE_REASON_FLAG_ARCHIVED",
    5: "RESOLVE_REASON_TARGETING_KEY_ERROR",
    6: "RESOLVE_REASON_ERROR",
    7: "RESOLVE_REASON_UNRECOGNIZED_TARGETING_RULE",
    8: "RESOLVE_REASON_MATERIALIZATION_NOT_SUPPORTED",
    9: "RESOLVE_REASON_TYPE_MISMATCH",
    10: "RESOLVE_REASON_FLAG_NOT_FOUND",
}


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


def prometheus_text(stats: ProviderStats, analytics: HostTelemetry) -> str:
    """Prometheus text exposition (format 0.0.4) of a stats snapshot and the cumulative
    resolve analytics. Metric names follow the official provider's where it has one."""
    lines: list[str] = []

    def family(name: str, kind: str, help_text: str) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")

    family(
        "confidence_resolves_total",
        "counter",
        "Evaluations that reached a decision, by Confidence resolve reason.",
    )
    for code, count in sorted(analytics.rates.items()):
        name = _REASON_NAMES.get(code, str(code))
        lines.append(f'confidence_resolves_total{{reason="{_label(name)}"}} {count}')

    family(
        "confidence_resolve_latency_microseconds",
        "histogram",
        "Latency of evaluations that reached a decision (18 buckets per decade).",
    )
    cumulative = 0
    for exponent in sorted(analytics.buckets):
        cumulative += analytics.buckets[exponent]
        bound = math.exp(exponent * LN_RATIO)
        lines.append(
            f'confidence_resolve_latency_microseconds_bucket{{le="{bound:.6g}"}} {cumulative}'
        )
    lines.append(f'confidence_resolve_latency_microseconds_bucket{{le="+Inf"}} {analytics.count}')
    lines.append(f"confidence_resolve_latency_microseconds_sum {analytics.sum_us}")
    lines.append(f"confidence_resolve_latency_microseconds_count {analytics.count}")

    family(
        "confidence_evaluations_total",
        "counter",
        "Every evaluation, by OpenFeature reason.",
    )
    for reason, count in sorted(stats.resolves_by_reason.items()):
        lines.append(f'confidence_evaluations_total{{reason="{_label(reason)}"}} {count}')
    family(
        "confidence_evaluation_errors_total",
        "counter",
        "Evaluations that returned an error, by OpenFeature error code.",
    )
    for code_name, count in sorted(stats.errors_by_code.items()):
        lines.append(f'confidence_evaluation_errors_total{{code="{_label(code_name)}"}} {count}')

    family("confidence_ready", "gauge", "1 while a resolver state is being served.")
    lines.append(f"confidence_ready {1 if stats.status in ('READY', 'STALE') else 0}")
    if stats.state_age_seconds is not None:
        family("confidence_state_age_seconds", "gauge", "Age of the served resolver state.")
        lines.append(f"confidence_state_age_seconds {_number(stats.state_age_seconds)}")
    family(
        "confidence_state_sync_consecutive_failures",
        "gauge",
        "Consecutive failed state fetches.",
    )
    lines.append(f"confidence_state_sync_consecutive_failures {stats.sync_consecutive_failures}")
    for name, help_text, value in (
        (
            "confidence_flag_log_batches_delivered_total",
            "Flag-log requests delivered.",
            stats.log_delivered_batches,
        ),
        (
            "confidence_flag_log_batches_dropped_total",
            "Flag-log requests lost.",
            stats.log_dropped_batches,
        ),
        (
            "confidence_flag_log_exposures_dropped_total",
            "Exposures lost.",
            stats.log_dropped_exposures,
        ),
        (
            "confidence_apply_dedup_deduped_total",
            "Exposures not sent again within the de-duplication window.",
            stats.log_exposures_deduplicated,
        ),
        ("confidence_events_published_total", "track() events delivered.", stats.events.published),
        ("confidence_events_dropped_total", "track() events lost.", stats.events.dropped),
    ):
        family(name, "counter", help_text)
        lines.append(f"{name} {value}")
    family("confidence_flag_log_backlog_batches", "gauge", "Flag-log requests awaiting delivery.")
    lines.append(f"confidence_flag_log_backlog_batches {stats.log_backlog_batches}")
    return "\n".join(lines) + "\n"
