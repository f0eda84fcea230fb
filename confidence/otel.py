"""OpenTelemetry metrics for `ConfidenceProvider` (extra `[otel]`: `opentelemetry-api` only).

A provider instruments itself when it starts if `opentelemetry-api` is importable (opt out
with `ConfidenceProvider(..., otel_metrics=False)`), on the global meter provider: until the
application installs an SDK that is OpenTelemetry's no-op proxy, and it becomes real when one
is set. `instrument(provider, meter_provider=...)` instruments for a specific meter provider.

Everything except the latency histogram is an *observable* instrument fed from
`provider.stats()` at collection time, so the evaluation hot path pays nothing for them. The
histogram records each evaluation's duration (a callback on the provider's stats recorder).

- `confidence.flag.evaluations` (observable counter, `{evaluation}`), attribute
  `feature_flag.result.reason`;
- `confidence.flag.evaluation.errors` (observable counter, `{evaluation}`), attribute
  `error.type` (the OpenFeature error code);
- `confidence.flag.evaluation.duration` (histogram, `s`), attribute `feature_flag.result.reason`;
- `confidence.state.age` (observable gauge, `s`);
- `confidence.state.sync.last_outcome` (observable gauge, 1), attribute `outcome`
  (`success`/`failure`);
- `confidence.state.sync.consecutive_failures` (observable gauge, `{failure}`);
- `confidence.exposure.backlog` (observable gauge, `{batch}`) and `confidence.exposure.dropped`
  (observable counter, `{batch}`);
- `confidence.events.backlog` (observable gauge, `{event}`), `confidence.events.dropped` and
  `confidence.events.published` (observable counters, `{event}`).

Several providers on one meter provider share the instruments: counters are summed, the
state age and failure gauges report the worst provider.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from opentelemetry.metrics import MeterProvider, Observation

    from confidence._stats import ProviderStats, ReasonKey
    from confidence.provider import ConfidenceProvider

__all__ = ["METER_NAME", "instrument", "instrument_if_available"]

METER_NAME: Final = "confidence-openfeature-provider"

_LOCK: Final = threading.Lock()
# One instrument set per meter provider (None = the global one).
_REGISTRIES: dict[int | None, _Registry] = {}


def _reason_key(reason: ReasonKey) -> str:
    return str(getattr(reason, "value", reason))


class _Registry:
    """The instruments of one meter provider and the providers they observe."""

    def __init__(self, meter_provider: MeterProvider | None) -> None:
        from opentelemetry import metrics
        from opentelemetry.metrics import CallbackOptions
        from opentelemetry.metrics import Observation as _Observation

        self._observation = _Observation
        self.meter_provider = meter_provider  # pinned: the registry is keyed by its id()
        self._providers: weakref.WeakSet[ConfidenceProvider] = weakref.WeakSet()
        self._snapshots: tuple[float, list[ProviderStats]] | None = None
        self._snap_lock = threading.Lock()
        from confidence._version import __version__

        meter = (
            meter_provider.get_meter(METER_NAME, __version__)
            if meter_provider is not None
            else metrics.get_meter(METER_NAME, __version__)
        )

        def cb(
            fn: Callable[[list[ProviderStats]], Iterable[Observation]],
        ) -> list[Callable[[CallbackOptions], Iterable[Observation]]]:
            def callback(options: CallbackOptions) -> Iterable[Observation]:
                return list(fn(self._stats()))

            return [callback]

        meter.create_observable_counter(
            "confidence.flag.evaluations",
            callbacks=cb(self._resolves),
            unit="{evaluation}",
            description="Flag evaluations by OpenFeature reason",
        )
        meter.create_observable_counter(
            "confidence.flag.evaluation.errors",
            callbacks=cb(self._errors),
            unit="{evaluation}",
            description="Flag evaluations that returned an error, by error code",
        )
        self.histogram = meter.create_histogram(
            "confidence.flag.evaluation.duration",
            unit="s",
            description="Time spent in the provider per flag evaluation",
        )
        meter.create_observable_gauge(
            "confidence.state.age",
            callbacks=cb(self._state_age),
            unit="s",
            description="Seconds since the served resolver state was last confirmed current",
        )
        meter.create_observable_gauge(
            "confidence.state.sync.last_outcome",
            callbacks=cb(self._last_outcome),
            description="1 for the outcome (success/failure) of the latest state fetch",
        )
        meter.create_observable_gauge(
            "confidence.state.sync.consecutive_failures",
            callbacks=cb(self._failures),
            unit="{failure}",
            description="Consecutive failed state fetches",
        )
        meter.create_observable_gauge(
            "confidence.exposure.backlog",
            callbacks=cb(lambda stats: self._sum(stats, lambda s: s.log_backlog_batches)),
            unit="{batch}",
            description="Flag-log batches waiting for delivery",
        )
        meter.create_observable_counter(
            "confidence.exposure.dropped",
            callbacks=cb(lambda stats: self._sum(stats, lambda s: s.log_dropped_batches)),
            unit="{batch}",
            description="Flag-log batches dropped because the backlog was full",
        )
        meter.create_observable_gauge(
            "confidence.events.backlog",
            callbacks=cb(lambda stats: self._sum(stats, lambda s: s.events.backlog)),
            unit="{event}",
            description="Tracked events waiting for delivery",
        )
        meter.create_observable_counter(
            "confidence.events.dropped",
            callbacks=cb(lambda stats: self._sum(stats, lambda s: s.events.dropped)),
            unit="{event}",
            description="Tracked events dropped (queue full or refused)",
        )
        meter.create_observable_counter(
            "confidence.events.published",
            callbacks=cb(lambda stats: self._sum(stats, lambda s: s.events.published)),
            unit="{event}",
            description="Tracked events accepted by Confidence",
        )

    def add(self, provider: ConfidenceProvider) -> None:
        if provider in self._providers:
            return
        self._providers.add(provider)
        histogram = self.histogram
        attributes: dict[ReasonKey, dict[str, str]] = {}

        def observe(elapsed_ns: int, reason: ReasonKey) -> None:
            attrs = attributes.get(reason)
            if attrs is None:
                attrs = attributes[reason] = {"feature_flag.result.reason": _reason_key(reason)}
            histogram.record(elapsed_ns / 1e9, attrs)

        # (ConfidenceProvider has no public latency hook yet, so this reaches its recorder.)
        provider.observe_latency(observe)

    # -- callbacks ------------------------------------------------------------------------

    def _stats(self) -> list[ProviderStats]:
        # One collection calls every callback in a row: share one snapshot per provider.
        with self._snap_lock:
            now = time.monotonic()
            cached = self._snapshots
            if cached is not None and now - cached[0] < 0.05:
                return cached[1]
            stats = [p.stats() for p in list(self._providers)]
            self._snapshots = (now, stats)
            return stats

    def _sum(
        self, stats: list[ProviderStats], get: Callable[[ProviderStats], int]
    ) -> list[Observation]:
        return [self._observation(sum(get(s) for s in stats))] if stats else []

    def _by_key(self, counts: Iterable[tuple[str, int]], attribute: str) -> list[Observation]:
        total: dict[str, int] = {}
        for key, n in counts:
            total[key] = total.get(key, 0) + n
        return [self._observation(n, {attribute: key}) for key, n in sorted(total.items())]

    def _resolves(self, stats: list[ProviderStats]) -> list[Observation]:
        pairs = [kv for s in stats for kv in s.resolves_by_reason.items()]
        return self._by_key(pairs, "feature_flag.result.reason")

    def _errors(self, stats: list[ProviderStats]) -> list[Observation]:
        pairs = [kv for s in stats for kv in s.errors_by_code.items()]
        return self._by_key(pairs, "error.type")

    def _state_age(self, stats: list[ProviderStats]) -> list[Observation]:
        ages = [s.state_age_seconds for s in stats if s.state_age_seconds is not None]
        return [self._observation(max(ages))] if ages else []

    def _last_outcome(self, stats: list[ProviderStats]) -> list[Observation]:
        outcomes = {s.last_sync_outcome for s in stats if s.last_sync_outcome is not None}
        if not outcomes:
            return []
        worst = "failure" if "failure" in outcomes else "success"
        return [self._observation(1, {"outcome": worst})]

    def _failures(self, stats: list[ProviderStats]) -> list[Observation]:
        if not stats:
            return []
        return [self._observation(max(s.sync_consecutive_failures for s in stats))]


def instrument(
    provider: ConfidenceProvider, *, meter_provider: MeterProvider | None = None
) -> None:
    """Publish `provider`'s metrics through OpenTelemetry.

    `meter_provider`: an `opentelemetry.metrics.MeterProvider`; default: the global one.
    Idempotent per (provider, meter provider). Raises ImportError without opentelemetry-api.
    """
    try:
        import opentelemetry.metrics  # noqa: F401
    except ImportError as exc:
        raise ImportError(
            "OpenTelemetry metrics need opentelemetry-api: "
            "pip install 'confidence-openfeature-provider[otel]'"
        ) from exc
    key = None if meter_provider is None else id(meter_provider)
    with _LOCK:
        registry = _REGISTRIES.get(key)
        if registry is None:
            registry = _REGISTRIES[key] = _Registry(meter_provider)
        registry.add(provider)


def instrument_if_available(provider: ConfidenceProvider) -> bool:
    """`instrument(provider)` on the global meter provider if opentelemetry-api is installed."""
    try:
        import opentelemetry.metrics  # noqa: F401
    except ImportError:
        return False
    instrument(provider)
    return True
