"""The resolver-state sync loop: poll the CDN, decrypt, decode, hand over to the caller.

Protocol §2 in short: ``GET <cdn>/<sha256hex(secret)>[.enc]`` with ``If-None-Match``; a 200 is
AES-GCM ciphertext (when a key is configured) of a ``ClientResolverState``; a 304 means "still
the same". What this module adds over the reference provider (§2.5, §8 "latent issues"):

* the ETag is committed only after the caller's ``apply`` accepted the state, so a corrupt or
  undecryptable body can never hide behind 304s;
* a 200 whose decrypted content equals the last applied content is not re-applied (the CDN
  re-encrypts with a fresh nonce, so the ciphertext alone says nothing);
* exponential backoff with jitter instead of a fixed 1 s retry storm, and STALE/READY status
  transitions instead of silent failures;
* a whole-request deadline (``anyio.fail_after``) because aiohttp's socket timeouts do not
  cover every phase (e.g. DNS), and a streaming size cap so a misbehaving server cannot make us
  buffer an unbounded body.

Every request goes through the one HTTP layer (`_http.attempt`) on any `_http.Transport`: the
runtime passes `_http_light.LightSession` (READY does not wait for aiohttp's import); an
`aiohttp.ClientSession` works the same. The syncer owns no task group and no HTTP session:
the provider's runtime owns both, and starts ``run`` in its task group. Secrets never reach
a log line: the URL embeds a hash of the client secret that works as a capability, so only an
8-character prefix of it is ever logged.
"""

from __future__ import annotations

import enum
import hashlib
import logging
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Final

import anyio
import anyio.abc

from .. import _http
from .._http import FailureKind, HttpFailure
from .._wasm.protowire import ProtoDecodeError, decode_client_resolver_state
from ..errors import ConfidenceError
from .crypto import KEY_SIZE, StateDecryptionError, decrypt_state

__all__ = [
    "DEFAULT_CDN_BASE_URL",
    "ApplyStateFn",
    "FailureKind",
    "FetchedState",
    "StateSyncer",
    "SyncStatus",
    "backoff_delay",
    "secret_hash",
    "state_url",
]

logger = logging.getLogger("confidence.state_sync")

DEFAULT_CDN_BASE_URL: Final = "https://confidence-resolver-state-cdn.spotifycdn.com"

# 2**62 seconds is already "forever"; capping the exponent keeps the float maths finite.
_MAX_BACKOFF_EXPONENT = 62


def secret_hash(client_secret: str) -> str:
    """Lower-case hex SHA-256 of the UTF-8 client secret: the CDN object name."""
    return hashlib.sha256(client_secret.encode("utf-8")).hexdigest()


def state_url(cdn_base_url: str, client_secret: str, encrypted: bool) -> str:
    """``<cdn>/<sha256hex(secret)>`` plus ``.enc`` when an encryption key is configured.

    The unsuffixed object is the legacy plaintext state (protocol §2.1).
    """
    suffix = ".enc" if encrypted else ""
    return f"{cdn_base_url.rstrip('/')}/{secret_hash(client_secret)}{suffix}"


@dataclass(frozen=True)
class FetchedState:
    """One successfully downloaded and decoded ``ClientResolverState``."""

    state: bytes = field(repr=False)  # it holds every client secret of the account, in clear
    """Serialized ``ResolverState``; opaque here, fed to the WASM resolver by ``apply``."""
    account_id: str
    log_destinations: tuple[int, ...]
    """``LogDestination`` numbers: ``[0]`` primary, ``[1]`` fallback; empty means Spotify Edge."""
    etag: str | None
    body: bytes = field(default=b"", repr=False, compare=False)
    """The response body as received (still encrypted), e.g. for the on-disk state cache."""


ApplyStateFn = Callable[[FetchedState], Awaitable[bool]]
"""Decode/swap the state into the resolver; raise if it is unusable; return whether it changed."""


class SyncStatus(enum.Enum):
    NOT_READY = "NOT_READY"
    """No state has been applied yet."""
    READY = "READY"
    """The last fetch succeeded (or failures have not yet reached the STALE threshold)."""
    STALE = "STALE"
    """A state is loaded but ``stale_after_failures`` consecutive fetches have failed."""


def backoff_delay(
    consecutive_failures: int,
    *,
    poll_interval: float,
    base: float,
    jitter: float,
    rand: Callable[[], float],
) -> float:
    """Delay before the next fetch.

    After a success this is the poll interval; after ``n`` consecutive failures it is
    ``base * 2**(n-1)`` capped at the poll interval. Either way it is scaled by a uniform factor
    in ``[1 - jitter, 1 + jitter]`` so that many processes started together (a deploy) do not
    hit the CDN in lock-step.
    """
    if consecutive_failures <= 0:
        delay = poll_interval
    else:
        exponent = min(consecutive_failures - 1, _MAX_BACKOFF_EXPONENT)
        delay = min(base * 2.0**exponent, poll_interval)
    return delay * (1.0 + jitter * (2.0 * rand() - 1.0))


class _FetchFailure(ConfidenceError):
    """Internal: a failed attempt, with a message that is safe to log and a typed kind."""

    def __init__(self, message: str, kind: FailureKind) -> None:
        super().__init__(message)
        self.kind = kind


class StateSyncer:
    """Keeps the resolver state in sync with the CDN.

    Use ``fetch_once()`` for a single attempt (e.g. the initial load) and start
    ``run()`` in a task group for the polling loop. Both never raise on a failed fetch: failures
    are logged, counted and reported via ``on_error``/``on_stale``; the last good state stays.
    """

    def __init__(
        self,
        *,
        client_secret: str,
        session: _http.Transport,  # the runtime's `LightSession`, or an aiohttp session
        apply: ApplyStateFn,
        encryption_key: bytes | None = None,
        cdn_base_url: str = DEFAULT_CDN_BASE_URL,
        poll_interval: float = 30.0,
        request_timeout: float = 10.0,
        max_state_bytes: int = 64 * 1024 * 1024,
        stale_after_failures: int = 3,
        backoff_base: float = 1.0,
        jitter: float = 0.1,
        on_ready: Callable[[], None] | None = None,
        on_stale: Callable[[], None] | None = None,
        on_error: Callable[[str], None] | None = None,
        on_success: Callable[[], None] | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if not client_secret:
            raise ValueError("client_secret must not be empty")
        if encryption_key is not None and len(encryption_key) != KEY_SIZE:
            raise ValueError(f"encryption_key must be {KEY_SIZE} raw bytes")
        if poll_interval <= 0 or request_timeout <= 0 or backoff_base <= 0:
            raise ValueError("poll_interval, request_timeout and backoff_base must be > 0")
        if max_state_bytes <= 0:
            raise ValueError("max_state_bytes must be > 0")
        if stale_after_failures < 1:
            raise ValueError("stale_after_failures must be >= 1")
        if not 0.0 <= jitter < 1.0:
            raise ValueError("jitter must be in [0, 1)")

        self._session = session
        self._apply = apply
        self._key = encryption_key
        self._url = state_url(cdn_base_url, client_secret, encrypted=encryption_key is not None)
        self._poll_interval = poll_interval
        self._request_timeout = request_timeout
        self._max_state_bytes = max_state_bytes
        self._stale_after = stale_after_failures
        self._backoff_base = backoff_base
        self._jitter = jitter
        self._on_ready = on_ready
        self._on_stale = on_stale
        self._on_error = on_error
        self._on_success = on_success
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()

        # Strings that must never appear in a log line or error message, longest first so a
        # secret containing the hash (unlikely, but cheap to handle) is masked whole.
        full_hash = secret_hash(client_secret)
        self._hint = f"{full_hash[:8]}…"
        self._redactions: list[tuple[str, str]] = [(client_secret, "***"), (full_hash, self._hint)]
        if encryption_key is not None:
            hex_key = encryption_key.hex()
            self._redactions += [(hex_key, "***"), (hex_key.upper(), "***")]
        self._redactions.sort(key=lambda pair: len(pair[0]), reverse=True)

        self._status = SyncStatus.NOT_READY
        self._etag: str | None = None
        self._applied_digest: bytes | None = None
        self._consecutive_failures = 0
        self._last_error: str | None = None
        #: Why the latest failed fetch failed (typed; the runtime can switch on it).
        self.last_error_kind: FailureKind | None = None
        self.last_success_at: float | None = None  # wall clock of the latest good fetch
        self.last_failure_at: float | None = None
        # Created lazily inside the event loop (anyio primitives are loop-bound).
        self._lock: anyio.Lock | None = None
        self._ready_event: anyio.Event | None = None

    # -- read-only view -------------------------------------------------------------------

    @property
    def status(self) -> SyncStatus:
        return self._status

    @property
    def has_state(self) -> bool:
        return self._applied_digest is not None

    @property
    def etag(self) -> str | None:
        """The ETag of the last *applied* state (what the next request sends)."""
        return self._etag

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive_failures

    @property
    def last_error(self) -> str | None:
        """Message of the most recent failure, cleared on success. Safe to log or display."""
        return self._last_error

    @property
    def state_hint(self) -> str:
        """Short prefix of the state object name, for correlating logs without leaking it."""
        return self._hint

    def next_delay(self) -> float:
        return backoff_delay(
            self._consecutive_failures,
            poll_interval=self._poll_interval,
            base=self._backoff_base,
            jitter=self._jitter,
            rand=self._rng.random,
        )

    async def wait_ready(self) -> None:
        """Return once a state has been applied (immediately if one already was)."""
        if self.has_state:
            return
        if self._ready_event is None:
            self._ready_event = anyio.Event()
        await self._ready_event.wait()

    # -- the work -------------------------------------------------------------------------

    async def run(
        self,
        *,
        fetch_immediately: bool = True,
        task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
    ) -> None:
        """Poll forever; returns only by cancellation.

        ``started()`` is signalled before the first fetch so that ``tg.start(syncer.run)`` never
        blocks on the network; use ``wait_ready()`` to wait for the first state. Pass
        ``fetch_immediately=False`` when the caller already did an initial ``fetch_once()``.
        """
        task_status.started()
        if not fetch_immediately:
            await self._sleep(self.next_delay())
        while True:
            await self.fetch_once()
            await self._sleep(self.next_delay())

    async def fetch_once(self) -> bool:
        """One fetch attempt. Returns True iff a new state was applied and ``apply`` reported a
        change; False for 304, identical content, or a failure (see ``last_error``)."""
        if self._lock is None:
            self._lock = anyio.Lock()
        # Serialized so a manual refresh racing the poll loop cannot interleave ETag/digest
        # bookkeeping.
        async with self._lock:
            try:
                changed = await self._fetch_and_apply()
            except _FetchFailure as exc:
                self._record_failure(str(exc), exc.kind)
                return False
            except Exception as exc:
                # E.g. a closed session (RuntimeError) or an invalid base URL (ValueError): still
                # a failed attempt, and the loop must survive it. Cancellation is not caught.
                self._record_failure(
                    f"unexpected error: {self._describe(exc)}", FailureKind.INTERNAL
                )
                return False
            self._record_success()
            return changed

    async def _fetch_and_apply(self) -> bool:
        headers = {}
        if self._etag is not None:
            headers["If-None-Match"] = self._etag  # echoed exactly, quotes included
        status, etag, body = await self._download(headers)

        if status == 304:
            if not self.has_state:
                raise _FetchFailure(
                    "HTTP 304 but no state has been loaded", FailureKind.BAD_RESPONSE
                )
            logger.debug("Resolver state not modified (state %s)", self._hint)
            return False

        try:
            # Decrypting and hashing up to max_state_bytes is CPU work; keep it off the loop.
            plaintext, digest = await anyio.to_thread.run_sync(self._decrypt_and_hash, body)
        except StateDecryptionError as exc:
            raise _FetchFailure(
                f"could not decrypt state: {exc}", FailureKind.UNDECRYPTABLE
            ) from None

        if digest == self._applied_digest:
            # Same content under a new ETag (e.g. re-encrypted with a fresh nonce): the ETag
            # now describes content we know is good, so committing it is safe.
            self._etag = etag
            logger.debug("Resolver state unchanged (state %s); not re-applied", self._hint)
            return False

        try:
            decoded = decode_client_resolver_state(plaintext)
        except ProtoDecodeError as exc:
            raise _FetchFailure(
                f"invalid ClientResolverState: {exc}", FailureKind.INVALID_STATE
            ) from None
        if not decoded.account:
            # The reference provider refuses to become READY without an account (§2.5), and
            # flag logs for the Cloudflare destination need it.
            raise _FetchFailure(
                "invalid ClientResolverState: missing account id", FailureKind.INVALID_STATE
            )

        fetched = FetchedState(
            state=decoded.state,
            account_id=decoded.account,
            log_destinations=decoded.log_destinations,
            etag=etag,
            body=body,
        )
        try:
            changed = await self._apply(fetched)
        except Exception as exc:
            raise _FetchFailure(
                f"state rejected by apply: {self._describe(exc)}", FailureKind.INVALID_STATE
            ) from None

        # Only now is the state in use, so only now may a 304 stand for it.
        self._applied_digest = digest
        self._etag = etag
        logger.info(
            "Loaded resolver state (state %s, account=%s, %d bytes, log_destinations=%s)",
            self._hint,
            decoded.account,
            len(decoded.state),
            list(decoded.log_destinations),
        )
        return bool(changed)

    async def _download(self, headers: dict[str, str]) -> tuple[int, str | None, bytes]:
        """One GET through `_http` (whole-request deadline, body cap checked while
        streaming, no redirects, no Authorization: the URL's hash is the capability)."""
        try:
            response = await _http.attempt(
                self._session,
                "GET",
                self._url,
                timeout=self._request_timeout,
                headers=headers,
                accept=(304,),
                max_body_bytes=self._max_state_bytes,
            )
        except HttpFailure as failure:
            message = self._redact(str(failure))
            kind = failure.kind
            if kind is FailureKind.BAD_RESPONSE:  # over max_state_bytes: a state we cannot use
                message, kind = f"state {message}", FailureKind.INVALID_STATE
            raise _FetchFailure(message, kind) from None
        if response.status == 304:
            return 304, None, b""
        if response.status != 200:
            # Any other 2xx is not a state we understand.
            raise _FetchFailure(f"HTTP {response.status}", FailureKind.BAD_RESPONSE)
        return 200, response.headers.get("ETag"), response.body

    def _decrypt_and_hash(self, body: bytes) -> tuple[bytes, bytes]:
        plaintext = decrypt_state(body, self._key) if self._key is not None else body
        return plaintext, hashlib.sha256(plaintext).digest()

    # -- bookkeeping ----------------------------------------------------------------------

    def _record_success(self) -> None:
        self.last_success_at = time.time()
        self._consecutive_failures = 0
        self._last_error = None
        if self.has_state and self._status is not SyncStatus.READY:
            previous = self._status
            self._status = SyncStatus.READY
            if previous is SyncStatus.STALE:
                logger.info("Resolver state sync recovered (state %s)", self._hint)
            if self._ready_event is not None:
                self._ready_event.set()
            self._notify(self._on_ready)
        self._notify(self._on_success)  # every successful attempt, READY or not

    def _record_failure(self, message: str, kind: FailureKind) -> None:
        self.last_failure_at = time.time()
        self.last_error_kind = kind
        self._consecutive_failures += 1
        self._last_error = message
        logger.warning(
            "Resolver state fetch failed (state %s, %d consecutive failure(s)): %s",
            self._hint,
            self._consecutive_failures,
            message,
        )
        self._notify(self._on_error, message)
        if self._status is SyncStatus.READY and self._consecutive_failures >= self._stale_after:
            self._status = SyncStatus.STALE
            logger.error(
                "Resolver state is STALE after %d consecutive failed fetches (state %s); "
                "still serving the last good state",
                self._consecutive_failures,
                self._hint,
            )
            self._notify(self._on_stale)

    def _notify(self, callback: Callable[..., None] | None, *args: str) -> None:
        if callback is None:
            return
        try:
            callback(*args)
        except Exception:
            # An observer bug must not kill the sync loop.
            logger.exception("State sync status callback raised")

    def _describe(self, exc: BaseException) -> str:
        # Some aiohttp exceptions embed the request URL, which carries the secret's hash.
        return self._redact(f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__)

    def _redact(self, text: str) -> str:
        for needle, replacement in self._redactions:
            if needle:
                text = text.replace(needle, replacement)
        return text
