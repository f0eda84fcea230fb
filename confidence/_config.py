"""Configuration in one home: every default, the validation of the provider's options, and
the settings a runtime runs with.

Invariants:
- every default is written once, here (`ConfidenceProvider.__init__`'s signature and
  `RuntimeSettings` both read these constants);
- `configure()` is the only place that validates options: it raises `TypeError` for the
  official provider's injection points and `ValueError` (messages unchanged since 0.1) for
  bad values, before anything is built;
- nothing here does I/O or imports a heavy dependency (the state cache, the log spool and the
  state-file loader are imported only when their option is given).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Final, Union

from confidence._logs.sender import DEFAULT_API_BASE_URL
from confidence._logs.tracking import DEFAULT_EVENTS_BASE_URL, EventQueue
from confidence._state.crypto import parse_encryption_key
from confidence._state.sync import DEFAULT_CDN_BASE_URL

if TYPE_CHECKING:
    from confidence._logs.spool import LogSpool
    from confidence._runtime import StoreCloser
    from confidence._state.cache import StateCache
    from confidence._stats import StatsRecorder
    from confidence.materialization import AsyncMaterializationStore, MaterializationStore

__all__ = [
    "DEFAULT_API_BASE_URL",
    "DEFAULT_CDN_BASE_URL",
    "DEFAULT_EVENTS_BASE_URL",
    "BootstrapState",
    "ProviderConfig",
    "RuntimeSettings",
    "configure",
]

#: A user's materialization store: sync or async (the package's exported protocols).
#: (A string alias: the protocols are imported for type checking only.)
AnyMaterializationStore = Union["MaterializationStore", "AsyncMaterializationStore"]

DEFAULT_STATE_POLL_INTERVAL: Final = 30.0
DEFAULT_LOG_POLL_INTERVAL: Final = 10.0
DEFAULT_INIT_TIMEOUT: Final = 10.0
DEFAULT_SHUTDOWN_TIMEOUT: Final = 5.0
#: Whole-request deadline of one state fetch, connect to last byte (seconds).
DEFAULT_STATE_REQUEST_TIMEOUT: Final = 10.0
#: A state body over this size is refused, while streaming.
DEFAULT_MAX_STATE_BYTES: Final = 64 * 1024 * 1024
#: Consecutive failed state fetches after which a loaded state is reported STALE.
DEFAULT_STALE_AFTER_FAILURES: Final = 3
DEFAULT_LOG_SPOOL_MAX_BYTES: Final = 256 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class BootstrapState:
    """A state to load before (or instead of) the first CDN fetch."""

    state: bytes = field(repr=False)
    account_id: str
    log_destinations: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class RuntimeSettings:
    """Everything one `_runtime.Runtime` runs with; shared by every runtime of a provider."""

    client_secret: str = field(repr=False)
    encryption_key: bytes | None = field(repr=False)
    state_poll_interval: float
    log_poll_interval: float
    cdn_base_url: str
    api_base_url: str
    pool_size: int | None
    shutdown_timeout: float
    sync_state: bool  # poll the CDN
    send_logs: bool  # deliver flag logs (else they are drained and dropped)
    bootstrap: Callable[[], BootstrapState] | None = field(default=None, repr=False)
    materialization_store: AnyMaterializationStore | None = field(default=None, repr=False)
    use_remote_materialization_store: bool = False
    cache_dir: Path | None = None
    # A cold compiled-module cache: become READY on quickly compiled code, then move to
    # optimized code compiled in the background (_engine.Tier).
    quick_start: bool = True
    # Limits (docs/reliability.md): whole-request deadline and body cap of a state fetch,
    # failed fetches before STALE, and the guest memory cap of each resolver instance.
    state_request_timeout: float = DEFAULT_STATE_REQUEST_TIMEOUT
    max_state_bytes: int = DEFAULT_MAX_STATE_BYTES
    stale_after_failures: int = DEFAULT_STALE_AFTER_FAILURES
    memory_limit: int | None = None
    # Flag logs: host-side apply de-duplication across resolver instances (the instances
    # de-duplicate their own exposures too), and each instance's cap on queued exposures
    # (0 = the resolver's default, 64 MiB).
    enable_apply_dedup: bool = True
    max_pending_exposure_bytes: int = 0
    # Where the CLOUDFLARE log destination posts (not a public option; tests point it at the
    # emulator). None: the real ingest worker.
    cloudflare_base_url: str | None = None
    # track(): the provider's event queue, published to events_base_url.
    event_queue: EventQueue | None = field(default=None, repr=False)
    events_base_url: str = DEFAULT_EVENTS_BASE_URL
    # state_cache_dir: the last applied state on disk.
    state_cache: StateCache | None = field(default=None, repr=False)
    # The provider's recorder: resolve analytics sent in flag-log telemetry.
    analytics: StatsRecorder | None = field(default=None, repr=False)
    # Closes the user's materialization_store once per provider, at the first shutdown.
    store_closer: StoreCloser | None = field(default=None, repr=False)
    # log_spool_dir: undeliverable flag logs on disk.
    log_spool: LogSpool | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """What the provider itself keeps, beside the settings of its runtimes."""

    runtime: RuntimeSettings
    init_timeout: float
    shutdown_timeout: float
    state_file: Path | None
    # False: every evaluation resolves with apply=false, so no exposure is ever logged
    # (resolve counts and telemetry still are).
    collect_exposures: bool
    otel_metrics: bool


#: The official provider's injection points that have no meaning here, and what to use.
_NO_INJECTION: Final = {
    "http_client": (
        "HTTP runs on the provider's own aiohttp session; to point it elsewhere, pass "
        "cdn_base_url= (state) and api_base_url= (flag logs, materializations)"
    ),
    "grpc_channel": (
        "no gRPC is used: flag logs and materializations go over HTTPS to api_base_url="
    ),
    "state_fetcher": (
        "start from a local state with state_file= (offline=True for no network), or serve "
        "states with confidence.testing.emulator.ConfidenceEmulator and cdn_base_url="
    ),
    "flag_logger": (
        "flag logs go to api_base_url=: in tests, point it at "
        "confidence.testing.emulator.ConfidenceEmulator (which records them), or pass "
        "offline=True with state_file= to send none"
    ),
    "wasm_bytes": (
        "the provider always runs the resolver it ships (a different module with a "
        "different interface); for test states use state_file= or the emulator"
    ),
}


def refuse_official_injections(**given: object) -> None:
    for name, value in given.items():
        if value is not None:
            raise TypeError(
                f"ConfidenceProvider does not take {name}= (an injection point of the "
                f"official provider): {_NO_INJECTION[name]}. See docs/migration.md."
            )


def configure(
    client_secret: str,
    *,
    encryption_key: str | None,
    state_poll_interval: float,
    log_poll_interval: float,
    assign_poll_interval: float | None,
    materialization_store: AnyMaterializationStore | None,
    use_remote_materialization_store: bool,
    enable_apply_dedup: bool,
    disable_exposure_collection: bool,
    cdn_base_url: str,
    api_base_url: str,
    pool_size: int | None,
    state_file: str | PathLike[str] | None,
    init_timeout: float,
    shutdown_timeout: float,
    account_id: str | None,
    offline: bool,
    events_base_url: str,
    state_cache_dir: str | PathLike[str] | None,
    otel_metrics: bool,
    state_request_timeout: float,
    max_state_bytes: int,
    stale_after_failures: int,
    resolver_memory_limit: int | None,
    log_spool_dir: str | PathLike[str] | None,
    log_spool_max_bytes: int,
    analytics: StatsRecorder,
) -> ProviderConfig:
    """Validate the provider's options (see `ConfidenceProvider`) and build its config.

    `analytics` is the provider's recorder: it outlives every runtime, as does the event
    queue created here (events tracked before start() are kept).
    """
    if not isinstance(client_secret, str) or not client_secret:
        raise ValueError("client_secret must be a non-empty string")
    if assign_poll_interval is not None and not assign_poll_interval > 0:
        raise ValueError("assign_poll_interval must be > 0")
    for name, value in (
        ("state_poll_interval", state_poll_interval),
        ("log_poll_interval", log_poll_interval),
        ("init_timeout", init_timeout),
        ("shutdown_timeout", shutdown_timeout),
    ):
        if not value > 0:
            raise ValueError(f"{name} must be > 0")
    if pool_size is not None and pool_size < 1:
        raise ValueError("pool_size must be >= 1")
    if not state_request_timeout > 0:
        raise ValueError("state_request_timeout must be > 0")
    for name, limit in (
        ("max_state_bytes", max_state_bytes),
        ("stale_after_failures", stale_after_failures),
        ("resolver_memory_limit", resolver_memory_limit),
    ):
        if limit is not None and limit < 1:
            raise ValueError(f"{name} must be >= 1")
    if log_spool_max_bytes < 1:
        raise ValueError("log_spool_max_bytes must be >= 1")
    if offline and state_file is None:
        raise ValueError("offline=True needs a state_file")
    key = parse_encryption_key(encryption_key) if encryption_key is not None else None

    path = Path(state_file) if state_file is not None else None
    bootstrap = None
    if path is not None:
        from functools import partial

        from confidence._state.file import load_state_file

        bootstrap = partial(load_state_file, path, encryption_key=key, account_id=account_id)
    state_cache = None
    if state_cache_dir is not None and not offline:
        from confidence._state.cache import DEFAULT_GRACE, StateCache

        state_cache = StateCache(
            Path(state_cache_dir),
            client_secret,
            key,
            # The cache must be in use before initialize() gives up.
            grace=min(DEFAULT_GRACE, float(init_timeout) / 2),
        )
    log_spool = None
    if log_spool_dir is not None and not offline:
        from confidence._logs.spool import LogSpool

        log_spool = LogSpool(Path(log_spool_dir), max_bytes=int(log_spool_max_bytes))
    store_closer = None
    if materialization_store is not None:
        from confidence._runtime import StoreCloser

        store_closer = StoreCloser(materialization_store)
    settings = RuntimeSettings(
        client_secret=client_secret,
        encryption_key=key,
        state_poll_interval=float(state_poll_interval),
        log_poll_interval=float(log_poll_interval),
        cdn_base_url=cdn_base_url,
        api_base_url=api_base_url,
        pool_size=pool_size,
        shutdown_timeout=float(shutdown_timeout),
        sync_state=not offline,
        send_logs=not offline,
        bootstrap=bootstrap,
        materialization_store=materialization_store,
        use_remote_materialization_store=use_remote_materialization_store,
        state_request_timeout=float(state_request_timeout),
        max_state_bytes=int(max_state_bytes),
        stale_after_failures=int(stale_after_failures),
        memory_limit=resolver_memory_limit,
        event_queue=None if offline else EventQueue(),
        events_base_url=events_base_url,
        state_cache=state_cache,
        log_spool=log_spool,
        enable_apply_dedup=bool(enable_apply_dedup),
        analytics=analytics,
        store_closer=store_closer,
    )
    return ProviderConfig(
        runtime=settings,
        init_timeout=float(init_timeout),
        shutdown_timeout=float(shutdown_timeout),
        state_file=path,
        collect_exposures=not disable_exposure_collection,
        otel_metrics=otel_metrics,
    )
