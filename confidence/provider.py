"""`ConfidenceProvider`: the OpenFeature provider for Confidence, resolving flags locally.

Hosting (async or sync), the SDK-event bookkeeping and fork resume live in `_hosting`
(`HostedProvider`, this class's base); options and defaults in `_config`; the status rules in
`_status`. This module keeps the OpenFeature mapping and the evaluation hot path.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from os import PathLike
from time import perf_counter_ns
from typing import TYPE_CHECKING, Any, Final

from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import (
    ErrorCode,
    OpenFeatureError,
)
from openfeature.flag_evaluation import FlagResolutionDetails
from openfeature.provider import Metadata, ProviderStatus

from confidence import _lazy
from confidence._config import (
    DEFAULT_API_BASE_URL,  # re-exported for users
    DEFAULT_CDN_BASE_URL,  # re-exported for users
    DEFAULT_EVENTS_BASE_URL,
    DEFAULT_INIT_TIMEOUT,
    DEFAULT_LOG_POLL_INTERVAL,
    DEFAULT_LOG_SPOOL_MAX_BYTES,
    DEFAULT_MAX_STATE_BYTES,
    DEFAULT_SHUTDOWN_TIMEOUT,
    DEFAULT_STALE_AFTER_FAILURES,
    DEFAULT_STATE_POLL_INTERVAL,
    DEFAULT_STATE_REQUEST_TIMEOUT,
    configure,
    refuse_official_injections,
)
from confidence._context import ContextError, encode_context
from confidence._evaluation import (
    FlagKind,
    FlagLookup,
    error_details,
    interpret,
    interpret_row,
    parse_flag_key,
)
from confidence._hosting import HostedProvider
from confidence._logs.tracking import build_event, encode_event
from confidence._sdk_compat import REASON_STALE, FlagValueType
from confidence._stats import (
    LatencyObserver,
    ProviderStats,
    SnapshotConfig,
    StatsRecorder,
    prometheus_text,
    snapshot,
)
from confidence._status import Status
from confidence._wasm import engine as _engine  # noqa: F401  (see below)
from confidence._wasm.abi import ResolveRequest, ResolverError, ResolverErrorKind
from confidence._wasm.pool import NoStateError
from confidence._wasm.resolve import MaterializationError

if TYPE_CHECKING:
    from openfeature.track import TrackingEventDetails

    from confidence._fork import AwaitingResolver
    from confidence._wasm.resolve import FlagResolver
    from confidence.explain import Explanation
    from confidence.materialization import AsyncMaterializationStore, MaterializationStore

# What every start needs, imported with the provider rather than on the way to READY:
# wasmtime (`_engine`, above) and AES-GCM for the (default) encrypted state, ~15 ms
# together. What a start does not need stays out: aiohttp (the state fetch has its own
# small transport, `_http_light`; delivery imports it after READY), the protobuf runtime (the ABI
# is encoded by hand), anything for stores or the CLI. `import confidence` alone loads
# none of it (see confidence/__init__.py).
_lazy.load("cryptography.hazmat.primitives.ciphers.aead")
# The runtime's event-loop backend (~30 ms): anyio imports it when the loop thread starts,
# i.e. on the way to READY (2,000-flag state: median READY 99 -> 79 ms, bench --only startup).
# A private module of anyio: if a release renames it, that start simply pays the import later.
with contextlib.suppress(ImportError):
    _lazy.load("anyio._backends._asyncio")

logger = logging.getLogger("confidence.provider")

__all__ = ["DEFAULT_API_BASE_URL", "DEFAULT_CDN_BASE_URL", "ConfidenceProvider"]


_METADATA: Final = Metadata(name="confidence-sdk-python-local")
_NOT_INITIALIZED: Final = "Provider not initialized"
_NO_STATE: Final = "Provider not ready: no resolver state loaded yet"
_PROVIDER_STATUS: Final = {
    Status.NOT_READY: ProviderStatus.NOT_READY,
    Status.READY: ProviderStatus.READY,
    Status.STALE: ProviderStatus.STALE,
    Status.ERROR: ProviderStatus.ERROR,
    Status.FATAL: ProviderStatus.FATAL,
}
#: No flag key is longer (flag names are short ids; paths are a few property names). Longer
#: keys are refused up front rather than echoed into messages and kept in parse_flag_key's cache.
MAX_FLAG_KEY_LENGTH: Final = 1024


# `Any` below is a flag's value (any JSON value, typed by the caller's resolve_*_details, as
# the SDK's generic FlagResolutionDetails is) and the resolver's JSON rows: data, not a seam.

#: What a slow-path evaluation needs: the resolver (or, in a forked child, one that waits
#: for the child's runtime), the parsed key and the request.
_Prepared = tuple["FlagResolver | AwaitingResolver", FlagLookup, ResolveRequest]


class ConfidenceProvider(HostedProvider):
    """OpenFeature provider that resolves Confidence flags in a local WebAssembly resolver.

    Parameters follow the official provider (`confidence-openfeature-provider` 0.15.3), in
    its order, so `ConfidenceProvider(secret, key)` works:

    - `encryption_key`: the credential's 64-hex-character key (without it the legacy
      plaintext state is fetched).
    - `assign_poll_interval`: accepted for compatibility (must be > 0) and has no effect:
      exposures leave with the other flag logs every `log_poll_interval` and at shutdown.
    - `materialization_store`: a sync or async store; its `close()` (or `aclose()`) is
      called once, at the first shutdown, after its last write.
    - `disable_exposure_collection`: resolve every flag with apply=false, so no exposure is
      logged at all; resolve counts and telemetry are still sent.
    - `http_client`, `grpc_channel`, `state_fetcher`, `flag_logger`, `wasm_bytes`: the
      official provider's injection points; they have no equivalent here and raise a
      `TypeError` that names what to use instead (`cdn_base_url`, `api_base_url`,
      `state_file`, the emulator).

    Keyword-only extras:

    - `init_timeout`: how long `initialize()`/`start()` wait for the first state (seconds).
    - `shutdown_timeout`: budget for the final log flush at shutdown (seconds).
    - `account_id`: the account of a raw `ResolverState` given as `state_file`.
    - `offline`: with `state_file`, use no network at all (no state polling, no log upload).
    - `state_request_timeout`: deadline for one whole state fetch, connect to last byte
      (seconds; socket timeouts alone miss DNS and slow-drip bodies).
    - `max_state_bytes`: a state body over this size is refused, while streaming (64 MiB).
    - `stale_after_failures`: consecutive failed state fetches before PROVIDER_STALE (3).
    - `resolver_memory_limit`: guest memory cap of each resolver instance, bytes (512 MiB);
      an instance that exceeds it traps, is replaced, and that one evaluation gets its default.
    - `events_base_url`: where `track()` events are published (`/v1/events:publish`).
    - `state_cache_dir`: keep the last applied state on disk there, and start from it (as
      STALE) when Confidence is unreachable at a cold start.
    - `otel_metrics`: publish `stats()` as OpenTelemetry metrics when `opentelemetry-api`
      is installed (`confidence.otel`).
    - `log_spool_dir`: flag-log batches that cannot be delivered before the shutdown
      deadline, or that overflow the in-memory backlog, are written there (atomically, mode
      0600, at most `log_spool_max_bytes`, 256 MiB) and delivered first by the next start
      of any process using the same directory (at least once; see docs/reliability.md).
    - `enable_apply_dedup`: an exposure identical to one sent within the last 120 s (same
      unit, flag, variant, rule, ...) is not sent again, across all resolver instances. With
      it off, N evaluations give N exposures.
    """

    def __init__(
        self,
        client_secret: str,
        # The official provider's parameters, in its order (so positional calls keep
        # working); the ones without a meaning here raise a TypeError naming ours.
        encryption_key: str | None = None,
        state_poll_interval: float = DEFAULT_STATE_POLL_INTERVAL,
        log_poll_interval: float = DEFAULT_LOG_POLL_INTERVAL,
        assign_poll_interval: float | None = None,
        materialization_store: MaterializationStore | AsyncMaterializationStore | None = None,
        use_remote_materialization_store: bool = False,
        http_client: object | None = None,
        grpc_channel: object | None = None,
        state_fetcher: object | None = None,
        flag_logger: object | None = None,
        wasm_bytes: bytes | None = None,
        enable_apply_dedup: bool = True,
        disable_exposure_collection: bool = False,
        *,
        cdn_base_url: str = DEFAULT_CDN_BASE_URL,
        api_base_url: str = DEFAULT_API_BASE_URL,
        pool_size: int | None = None,
        state_file: str | PathLike[str] | None = None,
        init_timeout: float = DEFAULT_INIT_TIMEOUT,
        shutdown_timeout: float = DEFAULT_SHUTDOWN_TIMEOUT,
        account_id: str | None = None,
        offline: bool = False,
        events_base_url: str = DEFAULT_EVENTS_BASE_URL,
        state_cache_dir: str | PathLike[str] | None = None,
        otel_metrics: bool = True,
        state_request_timeout: float = DEFAULT_STATE_REQUEST_TIMEOUT,
        max_state_bytes: int = DEFAULT_MAX_STATE_BYTES,
        stale_after_failures: int = DEFAULT_STALE_AFTER_FAILURES,
        resolver_memory_limit: int | None = None,
        log_spool_dir: str | PathLike[str] | None = None,
        log_spool_max_bytes: int = DEFAULT_LOG_SPOOL_MAX_BYTES,
    ) -> None:
        refuse_official_injections(
            http_client=http_client,
            grpc_channel=grpc_channel,
            state_fetcher=state_fetcher,
            flag_logger=flag_logger,
            wasm_bytes=wasm_bytes,
        )
        # Evaluation counters and track() events belong to the provider, not to one runtime:
        # they survive restarts, and events tracked before start() are kept.
        self._stats = StatsRecorder()
        config = configure(
            client_secret,
            encryption_key=encryption_key,
            state_poll_interval=state_poll_interval,
            log_poll_interval=log_poll_interval,
            assign_poll_interval=assign_poll_interval,
            materialization_store=materialization_store,
            use_remote_materialization_store=use_remote_materialization_store,
            enable_apply_dedup=enable_apply_dedup,
            disable_exposure_collection=disable_exposure_collection,
            cdn_base_url=cdn_base_url,
            api_base_url=api_base_url,
            pool_size=pool_size,
            state_file=state_file,
            init_timeout=init_timeout,
            shutdown_timeout=shutdown_timeout,
            account_id=account_id,
            offline=offline,
            events_base_url=events_base_url,
            state_cache_dir=state_cache_dir,
            otel_metrics=otel_metrics,
            state_request_timeout=state_request_timeout,
            max_state_bytes=max_state_bytes,
            stale_after_failures=stale_after_failures,
            resolver_memory_limit=resolver_memory_limit,
            log_spool_dir=log_spool_dir,
            log_spool_max_bytes=log_spool_max_bytes,
            analytics=self._stats,
        )
        super().__init__(config, client_secret)
        self._collect_exposures = config.collect_exposures
        self._state_file = config.state_file
        self._event_queue = config.runtime.event_queue
    def __repr__(self) -> str:
        s = self._settings
        return (
            f"ConfidenceProvider(client_secret='***', cdn_base_url={s.cdn_base_url!r}, "
            f"api_base_url={s.api_base_url!r}, state_poll_interval={s.state_poll_interval}, "
            f"log_poll_interval={s.log_poll_interval}, state_file={self._state_file!r}, "
            f"offline={not s.sync_state})"
        )

    # -- OpenFeature: metadata -------------------------------------------------------------------

    def get_metadata(self) -> Metadata:
        # The SDK calls this on the initializing thread right after it recorded READY for
        # a successful initialize() (to name the provider in the READY event): the first
        # moment a STALE event can stick. A start from the state cache announces it then,
        # so the SDK's status is STALE from the start instead of READY until the next
        # failed sync re-announces it. (Any other SDK still gets that re-announcement.)
        self._after_sdk_ready()
        return _METADATA

    @property
    def is_ready(self) -> bool:
        """True while a resolver state is loaded and the provider is running."""
        runtime = self._runtime
        return runtime is not None and runtime.has_state

    # -- observability --------------------------------------------------------------------------

    def stats(self) -> ProviderStats:
        """A snapshot of counters and status (cheap; safe from any thread)."""
        # After shutdown: the last runtime's final counters (what was delivered and lost).
        runtime = self._runtime or self._last_runtime
        return snapshot(self._stats, runtime, self._event_queue)

    def observe_latency(self, observer: LatencyObserver) -> None:
        """Call `observer(elapsed_ns, reason)` after every evaluation (how `otel` records)."""
        self._stats.add_latency_observer(observer)

    def get_status(self) -> ProviderStatus:
        """The provider's own view of its status (the official provider's `get_status()`).

        NOT_READY before a first state (and after shutdown), READY, STALE (the state could
        not be refreshed), ERROR (the CDN serves a state we refused; the last good one keeps
        serving), FATAL (wrong secret or key: waiting will not help). The OpenFeature SDK
        keeps its own status (`client.get_provider_status()`), from our events.
        """
        runtime = self._runtime
        if runtime is None or runtime.finished:
            return ProviderStatus.NOT_READY
        return _PROVIDER_STATUS[runtime.status]

    def get_prometheus_metrics(self, request: SnapshotConfig | None = None) -> str:
        """Counters and gauges in Prometheus text exposition format (0.0.4).

        `confidence_resolves_total{reason="RESOLVE_REASON_..."}` and the
        `confidence_resolve_latency_microseconds` histogram carry the same numbers as the
        resolve analytics sent to Confidence, cumulative over the provider's lifetime; the
        rest mirrors `stats()`. `request` is accepted for compatibility and ignored.
        """
        return prometheus_text(self.stats(), self._stats.telemetry_totals())

    def _instrument_otel(self) -> None:
        if not self._otel_metrics or self._otel_instrumented:
            return
        self._otel_instrumented = True
        try:
            from confidence.otel import instrument_if_available

            instrument_if_available(self)
        except Exception:  # metrics must never stop the provider from starting
            logger.warning("Could not set up OpenTelemetry metrics", exc_info=True)

    # -- OpenFeature: tracking ------------------------------------------------------------------

    def track(
        self,
        tracking_event_name: str,
        evaluation_context: EvaluationContext | None = None,
        tracking_event_details: TrackingEventDetails | None = None,
    ) -> None:
        """Queue a Confidence event (sent with the next flush). Never raises, never blocks.

        The payload is `tracking_event_details.attributes`, then `value`, then `context`
        (the evaluation context); the reserved keys win over attributes of the same name.
        Offline providers drop events.
        """
        queue = self._event_queue
        if queue is None:
            return
        try:
            event = build_event(tracking_event_name, evaluation_context, tracking_event_details)
            queue.put(encode_event(event))
        except Exception as exc:
            logger.warning(
                "Dropped tracking event %r: %s", tracking_event_name, self._redact(str(exc))
            )

    # -- debugging: explain ----------------------------------------------------------------------

    def explain(
        self,
        flag_key: str,
        context: EvaluationContext | Mapping[str, Any] | None = None,
    ) -> Explanation:
        """Why does `context` get what it gets from `flag_key`? The resolver's own trace.

        Resolves the flag as an evaluation would (same state, rules, bucketing and
        materialization reads) with tracing on, and returns every rule in order, the
        criteria with the values seen and why they did not match, the bucketing and the
        final variant and reason (`confidence.explain.Explanation`; `.render()` draws it
        as a tree). Sends no exposure and counts in no statistics; materialization writes
        are reported, not stored. A property path in `flag_key` is ignored.

        `context` is an OpenFeature EvaluationContext or a plain mapping
        (`{"targeting_key": ..., **attributes}`). Raises an OpenFeatureError
        (PROVIDER_NOT_READY, FLAG_NOT_FOUND, INVALID_CONTEXT, GENERAL) when the flag
        cannot be explained; an unknown flag is not an error (`presence == "not_found"`).
        """
        from dataclasses import replace

        from confidence.explain import Explanation

        if context is not None and not isinstance(context, EvaluationContext):
            attributes = dict(context)
            key = attributes.get("targeting_key")
            if isinstance(key, str):
                del attributes["targeting_key"]  # a non-string key stays an attribute
            context = EvaluationContext(
                targeting_key=key if isinstance(key, str) else None, attributes=attributes
            )
        prepared = self._prepare(flag_key, None, context)
        if isinstance(prepared, FlagResolutionDetails):
            raise OpenFeatureError(
                prepared.error_code or ErrorCode.GENERAL, prepared.error_message
            )
        resolver, _lookup, request = prepared
        try:
            doc = resolver.explain(replace(request, apply=False, skip_logging=True))
        except Exception as exc:
            details = self._failure(None, exc)
            raise OpenFeatureError(
                details.error_code or ErrorCode.GENERAL, details.error_message
            ) from None
        return Explanation.from_document(doc)

    # -- evaluation ----------------------------------------------------------------------------

    def _prepare(
        self, flag_key: str, default_value: Any, evaluation_context: EvaluationContext | None
    ) -> _Prepared | FlagResolutionDetails[Any]:
        runtime = self._runtime
        resolver: FlagResolver | AwaitingResolver | None = (
            runtime.resolver if runtime is not None else None
        )
        if resolver is None:
            resume = self._fork_resume
            if resume is None:
                return error_details(default_value, ErrorCode.PROVIDER_NOT_READY, _NOT_INITIALIZED)
            resolver = self._resume_after_fork(resume)
        if len(flag_key) > MAX_FLAG_KEY_LENGTH:
            return error_details(
                default_value,
                ErrorCode.FLAG_NOT_FOUND,
                f"Flag key is {len(flag_key)} characters long; the limit is {MAX_FLAG_KEY_LENGTH}",
            )
        lookup = parse_flag_key(flag_key)
        if not lookup.name:
            return error_details(
                default_value, ErrorCode.FLAG_NOT_FOUND, f"Flag '{flag_key}' not found"
            )
        try:
            context_json, skip_apply = encode_context(evaluation_context)
        except ContextError as exc:
            return error_details(default_value, ErrorCode.INVALID_CONTEXT, str(exc))
        request = ResolveRequest(
            flags=(lookup.resource,),
            context_json=context_json,
            client_secret=self._client_secret,
            apply=self._collect_exposures and not skip_apply,
        )
        return resolver, lookup, request

    def _failure(self, default_value: Any, exc: Exception) -> FlagResolutionDetails[Any]:
        if isinstance(exc, ContextError):
            return error_details(default_value, ErrorCode.INVALID_CONTEXT, str(exc))
        if isinstance(exc, NoStateError):
            return error_details(default_value, ErrorCode.PROVIDER_NOT_READY, _NO_STATE)
        if isinstance(exc, ResolverError) and exc.kind is ResolverErrorKind.INVALID_CONTEXT:
            # The resolver could not read the context (nested deeper than it allows).
            return error_details(default_value, ErrorCode.INVALID_CONTEXT, str(exc))
        if isinstance(exc, (ResolverError, MaterializationError)):
            return error_details(default_value, ErrorCode.GENERAL, self._redact(str(exc)))
        return error_details(
            default_value, ErrorCode.GENERAL, self._redact(f"{type(exc).__name__}: {exc}")
        )

    def _evaluate(
        self,
        flag_key: str,
        default_value: Any,
        kind: FlagKind,
        evaluation_context: EvaluationContext | None,
    ) -> FlagResolutionDetails[Any]:
        start = perf_counter_ns()
        # The resolver's flag rows (a `Resolved`'s flags, or the guest's JSON rows), once
        # there is an answer: only those evaluations count in the resolve analytics.
        answer: Sequence[Sequence[Any]] | None = None
        try:
            runtime = self._runtime
            resolver = runtime.resolver if runtime is not None else None
            if (
                resolver is None
                or len(flag_key) > MAX_FLAG_KEY_LENGTH
                or not (lookup := parse_flag_key(flag_key)).name
            ):
                # Not running, resuming after a fork, or a key that is refused up front.
                prepared = self._prepare(flag_key, default_value, evaluation_context)
                if isinstance(prepared, FlagResolutionDetails):
                    details = prepared
                else:
                    prepared_resolver, lookup, request = prepared
                    resolved = prepared_resolver.resolve(request)
                    answer = resolved.flags
                    details = interpret(resolved, lookup, kind, default_value)
            else:
                # The hot path: the same steps as _prepare, without the ResolveRequest (and
                # without a `Resolved`: the guest's row is read as is).
                context_json, skip_apply = encode_context(evaluation_context)
                answer, resolve_id = resolver.resolve_flag_row(
                    lookup.resource,
                    context_json,
                    self._client_secret,
                    self._collect_exposures and not skip_apply,
                )
                details = interpret_row(
                    answer[0] if answer else None, resolve_id, lookup, kind, default_value
                )
        except Exception as exc:  # never raise into the SDK
            details = self._failure(default_value, exc)
        # _finish(), inlined.
        runtime = self._runtime
        if runtime is not None and runtime.serving_cached_state and details.error_code is None:
            details.reason = REASON_STALE  # (a fresh object of ours: no copy needed)
        self._stats.record(details.reason, details.error_code, perf_counter_ns() - start, answer)
        return details

    def _finish(
        self,
        details: FlagResolutionDetails[Any],
        start: int,
        answer: Sequence[Sequence[Any]] | None = None,
    ) -> FlagResolutionDetails[Any]:
        runtime = self._runtime
        if runtime is not None and runtime.serving_cached_state and details.error_code is None:
            # A state from state_cache_dir that no sync has confirmed: say so per evaluation.
            details.reason = REASON_STALE  # (a fresh object of ours: no copy needed)
        self._stats.record(details.reason, details.error_code, perf_counter_ns() - start, answer)
        return details

    async def _evaluate_async(
        self,
        flag_key: str,
        default_value: Any,
        kind: FlagKind,
        evaluation_context: EvaluationContext | None,
    ) -> FlagResolutionDetails[Any]:
        start = perf_counter_ns()
        # The resolver's flag rows (a `Resolved`'s flags, or the guest's JSON rows), once
        # there is an answer: only those evaluations count in the resolve analytics.
        answer: Sequence[Sequence[Any]] | None = None
        try:
            runtime = self._runtime
            resolver = runtime.resolver if runtime is not None else None
            if (
                resolver is None
                or len(flag_key) > MAX_FLAG_KEY_LENGTH
                or not (lookup := parse_flag_key(flag_key)).name
            ):
                # Not running, resuming after a fork, or a key that is refused up front.
                prepared = self._prepare(flag_key, default_value, evaluation_context)
                if isinstance(prepared, FlagResolutionDetails):
                    details = prepared
                else:
                    prepared_resolver, lookup, request = prepared
                    resolved = await prepared_resolver.resolve_async(request)
                    answer = resolved.flags
                    details = interpret(resolved, lookup, kind, default_value)
            else:
                # The hot path, as in _evaluate.
                context_json, skip_apply = encode_context(evaluation_context)
                resolved = await resolver.resolve_flag_async(
                    lookup.resource,
                    context_json,
                    self._client_secret,
                    self._collect_exposures and not skip_apply,
                )
                answer = resolved.flags
                details = interpret(resolved, lookup, kind, default_value)
        except Exception as exc:  # never raise into the SDK
            details = self._failure(default_value, exc)
        return self._finish(details, start, answer)

    def resolve_boolean_details(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        return self._evaluate(flag_key, default_value, FlagKind.BOOLEAN, evaluation_context)

    def resolve_string_details(
        self,
        flag_key: str,
        default_value: str,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[str]:
        return self._evaluate(flag_key, default_value, FlagKind.STRING, evaluation_context)

    def resolve_integer_details(
        self,
        flag_key: str,
        default_value: int,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[int]:
        return self._evaluate(flag_key, default_value, FlagKind.INTEGER, evaluation_context)

    def resolve_float_details(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        return self._evaluate(flag_key, default_value, FlagKind.FLOAT, evaluation_context)

    def resolve_object_details(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        return self._evaluate(flag_key, default_value, FlagKind.OBJECT, evaluation_context)

    async def resolve_boolean_details_async(
        self,
        flag_key: str,
        default_value: bool,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[bool]:
        return await self._evaluate_async(
            flag_key, default_value, FlagKind.BOOLEAN, evaluation_context
        )

    async def resolve_string_details_async(
        self,
        flag_key: str,
        default_value: str,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[str]:
        return await self._evaluate_async(
            flag_key, default_value, FlagKind.STRING, evaluation_context
        )

    async def resolve_integer_details_async(
        self,
        flag_key: str,
        default_value: int,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[int]:
        return await self._evaluate_async(
            flag_key, default_value, FlagKind.INTEGER, evaluation_context
        )

    async def resolve_float_details_async(
        self,
        flag_key: str,
        default_value: float,
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[float]:
        return await self._evaluate_async(
            flag_key, default_value, FlagKind.FLOAT, evaluation_context
        )

    async def resolve_object_details_async(
        self,
        flag_key: str,
        default_value: Sequence[FlagValueType] | Mapping[str, FlagValueType],
        evaluation_context: EvaluationContext | None = None,
    ) -> FlagResolutionDetails[Sequence[FlagValueType] | Mapping[str, FlagValueType]]:
        return await self._evaluate_async(
            flag_key, default_value, FlagKind.OBJECT, evaluation_context
        )
