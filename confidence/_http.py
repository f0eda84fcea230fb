"""The one outbound HTTP layer: every request the provider makes goes through here.

Four clients use it: the state fetch (`_state.sync`, GET from the CDN), flag logs
(`_logs.sender`), tracked events (`_logs.tracking`) and the remote materialization store
(`_remote_materialization`). They share, so that they cannot disagree:

- **one status classification** (`classify_status`): 2xx is success; 401/403 `AUTH`, 404
  `NOT_FOUND`, 408 `TIMEOUT`, 425/429 `RATE_LIMITED`, 5xx `SERVER`, any other status `CLIENT`;
- **one exception mapping** (`failure_from_exception`): timeouts `TIMEOUT`, connection and
  protocol errors `NETWORK`, anything unexpected `INTERNAL` (a closed session, an invalid URL:
  asking again cannot help);
- **one retry rule**: `FailureKind.retryable` is true for `RATE_LIMITED`, `TIMEOUT`, `NETWORK`
  and `SERVER`, false for the rest;
- **one `Retry-After` parser** (delta-seconds or HTTP-date) and **one backoff with jitter**
  (`RetryPolicy`); a server's `Retry-After` is honoured but capped at `max_delay`, so a server
  cannot park a caller indefinitely;
- **one per-request deadline** (`anyio.fail_after` around connect, send, headers and body, so
  a server dripping its body cannot outlive it) and an optional body size cap;
- **one rule for the `Authorization` header**: callers never put it in their headers; they
  pass `authorization=` and the layer adds it only to the URL the caller built from its own
  configuration. Redirects are never followed (a redirect would carry the header, or a
  secret in the body, to a host nobody chose), and the CDN fetch sends none at all.

Failures are `HttpFailure` with a `kind` (`FailureKind`), so callers switch on the kind, never
on message text. Messages are safe to log: the client secret is masked, and the text of
aiohttp's exceptions (which can quote request details) is reduced to the exception type.

**Two transports, one policy.** `attempt` and `call` take any `Transport`: an
`aiohttp.ClientSession` (flag logs, events, the remote store) or `_http_light.LightSession`,
a minimal HTTP/1.1 GET client the runtime uses for the state fetch so that READY does not
wait for aiohttp's import (~50 ms). Everything above — classification, deadline, body cap,
exception mapping, no redirects, the Authorization rule — is applied here, once, for both;
a transport only moves bytes. This module imports neither aiohttp nor multidict: a session
passed in is already loaded, and an aiohttp exception can only exist once aiohttp is.
"""

from __future__ import annotations

import asyncio
import enum
import io
import logging
import math
import random
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator, Mapping
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import Final, Protocol
from urllib.parse import urlsplit

import anyio

from confidence.errors import ConfidenceError

logger = logging.getLogger("confidence.http")

__all__ = [
    "FailureKind",
    "HttpFailure",
    "HttpResponse",
    "RetryPolicy",
    "Transport",
    "TransportResponse",
    "attempt",
    "call",
    "classify_status",
    "failure_from_exception",
    "parse_retry_after",
]

#: Raw bytes bodies above this make aiohttp warn (ResourceWarning); larger ones are streamed.
_RAW_BODY_LIMIT: Final = 1024 * 1024


class FailureKind(enum.Enum):
    """Why a request failed. Also the vocabulary of typed sync failures (`_state.sync`)."""

    AUTH = "auth"  # 401, 403: wrong or revoked credentials
    NOT_FOUND = "not_found"  # 404: e.g. no state for this client secret
    RATE_LIMITED = "rate_limited"  # 425, 429
    TIMEOUT = "timeout"  # the request's deadline passed, or 408
    NETWORK = "network"  # DNS, connect, reset, disconnect, truncated body
    SERVER = "server"  # 5xx
    CLIENT = "client"  # any other non-2xx: the request itself is wrong
    BAD_RESPONSE = "bad_response"  # an answer we cannot use (too large, unexpected status)
    INTERNAL = "internal"  # an unexpected exception (closed session, invalid URL, ...)
    # Beyond HTTP, for the state sync's typed failures (the body arrived, but is unusable):
    UNDECRYPTABLE = "undecryptable"  # wrong encryption key, or a corrupt body
    INVALID_STATE = "invalid_state"  # not a ClientResolverState, or refused by the resolver

    @property
    def retryable(self) -> bool:
        """Whether asking again (after a backoff) may succeed."""
        return self in _RETRYABLE_KINDS


_RETRYABLE_KINDS: Final = frozenset(
    {FailureKind.RATE_LIMITED, FailureKind.TIMEOUT, FailureKind.NETWORK, FailureKind.SERVER}
)


def classify_status(status: int) -> FailureKind | None:
    """None for 2xx; otherwise the kind of failure the status means."""
    if 200 <= status < 300:
        return None
    if status in (401, 403):
        return FailureKind.AUTH
    if status == 404:
        return FailureKind.NOT_FOUND
    if status == 408:
        return FailureKind.TIMEOUT
    if status in (425, 429):
        return FailureKind.RATE_LIMITED
    if status >= 500:
        return FailureKind.SERVER
    return FailureKind.CLIENT


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or HTTP-date), or None."""
    if value is None:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            import email.utils  # (rare: an HTTP-date Retry-After; the package costs ~1 ms)

            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        if when.tzinfo is None:
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


class HttpFailure(ConfidenceError):
    """One request (or the last of its attempts) failed. `str()` is safe to log."""

    def __init__(
        self,
        kind: FailureKind,
        message: str,
        *,
        status: int | None = None,
        retry_after: float | None = None,
        attempts: int = 1,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.status = status  # the HTTP status, when there was an answer
        self.retry_after = retry_after  # seconds, from the answer's Retry-After
        self.attempts = attempts

    @property
    def retryable(self) -> bool:
        return self.kind.retryable


def status_failure(status: int, retry_after: str | None = None) -> HttpFailure | None:
    """The failure a non-2xx status means (None for 2xx)."""
    kind = classify_status(status)
    if kind is None:
        return None
    return HttpFailure(
        kind, f"HTTP {status}", status=status, retry_after=parse_retry_after(retry_after)
    )


def failure_from_exception(exc: BaseException, *, timeout: float, secret: str) -> HttpFailure:
    """Map an exception raised while requesting to a typed failure."""
    if isinstance(exc, HttpFailure):
        return exc
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return HttpFailure(FailureKind.TIMEOUT, f"timed out after {timeout:g}s")
    # (An aiohttp exception exists only once aiohttp is imported: no import for the light
    # transport, whose errors are OSErrors.)
    aiohttp = sys.modules.get("aiohttp")
    if aiohttp is not None:
        if isinstance(exc, aiohttp.ClientResponseError):  # a session with raise_for_status
            failure = status_failure(exc.status)
            if failure is not None:
                return failure
        if isinstance(exc, aiohttp.ClientError):
            return HttpFailure(FailureKind.NETWORK, f"network error: {describe(exc, secret)}")
    if isinstance(exc, OSError):  # (the light transport's HttpProtocolError is one)
        return HttpFailure(FailureKind.NETWORK, f"network error: {describe(exc, secret)}")
    return HttpFailure(FailureKind.INTERNAL, f"unexpected error: {describe(exc, secret)}")


def describe(exc: BaseException, secret: str) -> str:
    """`exc` as one line for a log message, with `secret` masked."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text.replace(secret, "***") if secret else text


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded attempts with exponential backoff and jitter; one per client."""

    max_attempts: int = 3
    base_delay: float = 0.5
    multiplier: float = 2.0
    max_delay: float = 10.0
    """Also caps ``Retry-After`` so a server cannot park a caller indefinitely."""
    jitter: float = 0.1
    attempt_timeout: float = 5.0
    """Whole-attempt deadline (connect, send, response), enforced with ``anyio.fail_after``."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        if self.base_delay < 0 or self.max_delay < 0 or self.multiplier < 1:
            raise ValueError("delays must be >= 0 and multiplier >= 1")
        if not 0.0 <= self.jitter < 1.0:
            raise ValueError("jitter must be in [0, 1)")
        if self.attempt_timeout <= 0:
            raise ValueError("attempt_timeout must be > 0")

    def delay(self, retry_number: int, rand: Callable[[], float]) -> float:
        """Backoff before retry ``retry_number`` (1 = first retry), jittered, capped."""
        exponent = min(retry_number - 1, 62)
        delay = min(self.base_delay * self.multiplier**exponent, self.max_delay)
        return delay * (1.0 + self.jitter * (2.0 * rand() - 1.0))

    def wait_after(
        self, attempt: int, rand: Callable[[], float], retry_after: float | None
    ) -> float:
        """How long to wait after failed attempt `attempt`: the backoff, or the server's
        Retry-After capped at `max_delay`."""
        delay = self.delay(attempt, rand)  # (drawn either way: seeded jitter stays in step)
        return delay if retry_after is None else min(retry_after, self.max_delay)


class _Body(Protocol):
    def iter_chunked(self, n: int) -> AsyncIterator[bytes]: ...


class TransportResponse(Protocol):
    """What `attempt` reads of a response (aiohttp's `ClientResponse` is one)."""

    @property
    def status(self) -> int: ...

    @property
    def headers(self) -> Mapping[str, str]: ...

    @property
    def content_length(self) -> int | None: ...

    @property
    def content(self) -> _Body: ...

    async def read(self) -> bytes: ...


class Transport(Protocol):
    """What `attempt` asks of a session: one request, as an async context manager that
    releases the connection on exit (`aiohttp.ClientSession` and `LightSession` are ones).
    `allow_redirects` is always False (see the module docstring)."""

    def request(
        self,
        method: str,
        url: str,
        *,
        data: bytes | io.BytesIO | None = ...,
        headers: Mapping[str, str] | None = ...,
        allow_redirects: bool = ...,
    ) -> AbstractAsyncContextManager[TransportResponse]: ...


class Headers(Mapping[str, str]):
    """A response's headers, case-insensitive as HTTP (a repeated header: the last one)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, str]) -> None:
        self._items = {name.lower(): value for name, value in items.items()}

    def __getitem__(self, name: str) -> str:
        return self._items[name.lower()]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: Mapping[str, str] = field(repr=False)
    body: bytes = field(repr=False)


def _request_body(body: bytes | None) -> bytes | io.BytesIO | None:
    # A fresh BytesIO per attempt: a consumed one cannot be resent.
    if body is not None and len(body) > _RAW_BODY_LIMIT:
        return io.BytesIO(body)
    return body


async def attempt(
    session: Transport,
    method: str,
    url: str,
    *,
    timeout: float,
    secret: str = "",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    authorization: str | None = None,
    accept: Collection[int] = (),
    max_body_bytes: int | None = None,
) -> HttpResponse:
    """One request, bounded by `timeout` as a whole; raises `HttpFailure`.

    `accept`: non-2xx statuses the caller handles itself (e.g. 304), returned, not raised.
    `authorization`: the Authorization header value, added here and only here.
    `max_body_bytes`: a larger answer is `BAD_RESPONSE`, checked while reading (a server
    cannot make us buffer more than that).
    """
    send_headers = dict(headers or {})
    if authorization is not None:
        send_headers["Authorization"] = authorization
    try:
        with anyio.fail_after(timeout):
            async with session.request(
                method,
                url,
                data=_request_body(body),
                headers=send_headers,
                allow_redirects=False,
            ) as resp:
                status = resp.status
                response_headers = Headers(resp.headers)
                if classify_status(status) is not None and status not in accept:
                    # Drained so the connection can be reused; the body is not needed.
                    await resp.read()
                    failure = status_failure(status, resp.headers.get("Retry-After"))
                    assert failure is not None
                    raise failure
                payload = await _read(resp, max_body_bytes)
    except HttpFailure:
        raise
    except Exception as exc:  # (cancellation is a BaseException: it propagates)
        raise failure_from_exception(exc, timeout=timeout, secret=secret) from None
    return HttpResponse(status, response_headers, payload)


async def _read(resp: TransportResponse, limit: int | None) -> bytes:
    if limit is None:
        return await resp.read()
    declared = resp.content_length
    if declared is not None and declared > limit:
        raise HttpFailure(
            FailureKind.BAD_RESPONSE, f"body is {declared} bytes, over the {limit}-byte limit"
        )
    buf = bytearray()
    async for chunk in resp.content.iter_chunked(64 * 1024):
        buf += chunk
        if len(buf) > limit:
            raise HttpFailure(
                FailureKind.BAD_RESPONSE,
                f"body is more than {len(buf)} bytes, over the {limit}-byte limit",
            )
    return bytes(buf)


async def call(
    session: Transport,
    method: str,
    url: str,
    *,
    policy: RetryPolicy,
    secret: str = "",
    body: bytes | None = None,
    headers: Mapping[str, str] | None = None,
    authorization: str | None = None,
    accept: Collection[int] = (),
    max_body_bytes: int | None = None,
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    rng: random.Random | None = None,
    on_retry: Callable[[int, HttpFailure, float], None] | None = None,
) -> HttpResponse:
    """`attempt` up to `policy.max_attempts` times while the failure is retryable.

    Raises the last `HttpFailure` (with `attempts` set). `on_retry(attempt, failure, delay)`
    is called before each wait, for the caller's logging.
    """
    rand = (rng or random).random
    for number in range(1, policy.max_attempts + 1):
        try:
            return await attempt(
                session,
                method,
                url,
                timeout=policy.attempt_timeout,
                secret=secret,
                body=body,
                headers=headers,
                authorization=authorization,
                accept=accept,
                max_body_bytes=max_body_bytes,
            )
        except HttpFailure as failure:
            failure.attempts = number
            if not failure.retryable or number == policy.max_attempts:
                raise
            delay = policy.wait_after(number, rand, failure.retry_after)
            # The host only: a path can carry a capability (the CDN's state hash).
            logger.debug(
                "HTTP %s to %s: attempt %d failed (%s); retrying in %.2fs",
                method,
                urlsplit(url).netloc,
                number,
                failure,
                delay,
            )
            if on_retry is not None:
                on_retry(number, failure, delay)
            await sleep(delay)
    raise AssertionError("unreachable")  # pragma: no cover
