"""Delivery of flag logs (``WriteFlagLogsRequest`` bytes produced by the WASM resolver).

Routing (protocol §3.6): the state's ``log_destinations`` name a primary (``[0]``) and an
optional fallback (``[1]``); an empty list means Spotify Edge. ``CLOUDFLARE (2)`` goes to the
Cloudflare ingest worker wrapped in ``IngestFlagLogsRequest{account_id, batch}``; any other value
goes to ``{api_base_url}/v1/clientFlagLogs:write`` (the REST form of the gRPC Edge endpoint).
Unlike the reference provider, routing follows the *latest* state, not the first one.

Retries (the JS/Rust providers' policy, §3.5): exponential backoff with jitter on 5xx, 408, 429
(honouring ``Retry-After``), timeouts and connection errors; other 4xx are permanent. Each
attempt has its own deadline and the number of attempts is bounded, so one ``send`` has a known
worst-case duration and the caller can decide whether to re-queue the batch.

The client secret travels only in the ``Authorization`` header and is never logged.
"""

from __future__ import annotations

import asyncio
import io
import logging
import math
import random
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Final

import anyio

from ._protowire import encode_ingest_flag_logs_request

if TYPE_CHECKING:
    import aiohttp

__all__ = [
    "CLOUDFLARE_INGEST_PATH",
    "DEFAULT_API_BASE_URL",
    "DEFAULT_CLOUDFLARE_BASE_URL",
    "FLAG_LOGS_PATH",
    "LOG_DESTINATION_CLOUDFLARE",
    "LOG_DESTINATION_SPOTIFY_EDGE",
    "LogSender",
    "Permanent",
    "RetryPolicy",
    "Retryable",
    "check_status",
    "describe_error",
    "parse_retry_after",
    "post_body",
    "retry_delay",
]

logger = logging.getLogger("confidence.log_sender")

DEFAULT_API_BASE_URL: Final = "https://resolver.confidence.dev"
DEFAULT_CLOUDFLARE_BASE_URL: Final = "https://epx-flags-logs.experimentation-platform.workers.dev"
FLAG_LOGS_PATH: Final = "/v1/clientFlagLogs:write"
CLOUDFLARE_INGEST_PATH: Final = "/v1/flagLogs:ingest"

LOG_DESTINATION_SPOTIFY_EDGE: Final = 1
LOG_DESTINATION_CLOUDFLARE: Final = 2

# Edge's REST gateway is documented with x-protobuf; the Cloudflare worker is what the reference
# Python provider sends with application/protobuf (§1 E3).
_EDGE_CONTENT_TYPE = "application/x-protobuf"
_CLOUDFLARE_CONTENT_TYPE = "application/protobuf"

_RETRYABLE_STATUSES = frozenset({408, 429})
_RAW_BODY_LIMIT = 1024 * 1024


@dataclass(frozen=True)
class RetryPolicy:
    """Bounded retry schedule for one delivery to one destination."""

    max_attempts: int = 3
    base_delay: float = 0.5
    multiplier: float = 2.0
    max_delay: float = 10.0
    """Also caps ``Retry-After`` so a server cannot park a flush indefinitely."""
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


# -- one HTTP POST attempt's outcome, shared with the event publisher (_tracking) -----------


class Retryable(Exception):
    """The attempt failed in a way another attempt may not (network, 5xx, 408, 429)."""

    def __init__(self, message: str, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class Permanent(Exception):
    """The server refused the request; resending it will not help."""


def check_status(status: int, retry_after: str | None) -> None:
    """Raise for a non-2xx status: Retryable for 5xx, 408 and 429 (with Retry-After)."""
    if 200 <= status < 300:
        return
    if status >= 500 or status in _RETRYABLE_STATUSES:
        raise Retryable(f"HTTP {status}", parse_retry_after(retry_after))
    raise Permanent(f"HTTP {status}")


def post_body(body: bytes) -> bytes | io.BytesIO:
    """The request body for aiohttp: raw bytes warn (ResourceWarning) above 1 MiB, so larger
    bodies are streamed, from a fresh BytesIO per attempt (a consumed one can't be resent)."""
    return io.BytesIO(body) if len(body) > _RAW_BODY_LIMIT else body


def describe_error(exc: BaseException, secret: str) -> str:
    """`exc` as one line for a log message, with `secret` masked."""
    text = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
    return text.replace(secret, "***")


def retry_delay(
    policy: RetryPolicy, attempt: int, rand: Callable[[], float], retry_after: float | None
) -> float:
    """How long to wait after failed attempt `attempt`: the policy's backoff, or the server's
    Retry-After capped at the policy's max_delay."""
    delay = policy.delay(attempt, rand)  # (drawn either way: seeded jitter stays in step)
    return delay if retry_after is None else min(retry_after, policy.max_delay)


class LogSender:
    """Sends serialized ``WriteFlagLogsRequest`` batches to the configured destinations.

    Call ``set_routing`` whenever a new state is applied; ``send`` returns whether the batch was
    delivered (to the primary or, failing that, the fallback) so the caller can re-queue it.
    """

    def __init__(
        self,
        *,
        client_secret: str,
        session: aiohttp.ClientSession,
        api_base_url: str = DEFAULT_API_BASE_URL,
        cloudflare_base_url: str = DEFAULT_CLOUDFLARE_BASE_URL,
        retry: RetryPolicy | None = None,
        account_id: str = "",
        log_destinations: Sequence[int] = (),
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if not client_secret:
            raise ValueError("client_secret must not be empty")
        self._secret = client_secret
        self._auth = f"ClientSecret {client_secret}"
        self._session = session
        self._edge_url = api_base_url.rstrip("/") + FLAG_LOGS_PATH
        self._cloudflare_url = cloudflare_base_url.rstrip("/") + CLOUDFLARE_INGEST_PATH
        self._retry = retry if retry is not None else RetryPolicy()
        self._sleep = sleep
        self._rng = rng if rng is not None else random.Random()
        self._account_id = account_id
        self._destinations: tuple[int, ...] = tuple(log_destinations)

    @property
    def destinations(self) -> tuple[int, ...]:
        """Effective ``(primary[, fallback])``; entries beyond two are ignored (§3.6)."""
        return self._destinations[:2] or (LOG_DESTINATION_SPOTIFY_EDGE,)

    def set_routing(self, account_id: str, log_destinations: Sequence[int]) -> None:
        """Adopt the account and destinations of the most recently applied state."""
        self._account_id = account_id
        self._destinations = tuple(log_destinations)

    async def send(self, request: bytes) -> bool:
        """Deliver one serialized ``WriteFlagLogsRequest``; True on success anywhere."""
        destinations = self.destinations
        for index, destination in enumerate(destinations):
            role = "primary" if index == 0 else "fallback"
            if await self._deliver(destination, request, role):
                return True
        return False

    async def _deliver(self, destination: int, request: bytes, role: str) -> bool:
        if destination == LOG_DESTINATION_CLOUDFLARE:
            name = "cloudflare"
            url = self._cloudflare_url
            body = encode_ingest_flag_logs_request(self._account_id, request)
            content_type = _CLOUDFLARE_CONTENT_TYPE
        else:
            # 0, 1 and unknown future values all mean Edge, as in the reference provider.
            name = "edge"
            url = self._edge_url
            body = request
            content_type = _EDGE_CONTENT_TYPE
        headers = {"Authorization": self._auth, "Content-Type": content_type}

        policy = self._retry
        for attempt in range(1, policy.max_attempts + 1):
            try:
                await self._attempt(url, body, headers)
                if attempt > 1:
                    logger.info("Flag logs delivered to %s after %d attempts", name, attempt)
                return True
            except Permanent as exc:
                logger.warning(
                    "Flag log delivery to %s (%s) failed permanently: %s", name, role, exc
                )
                return False
            except Retryable as exc:
                if attempt == policy.max_attempts:
                    logger.warning(
                        "Flag log delivery to %s (%s) failed after %d attempt(s): %s",
                        name,
                        role,
                        attempt,
                        exc,
                    )
                    return False
                delay = retry_delay(policy, attempt, self._rng.random, exc.retry_after)
                logger.debug(
                    "Flag log delivery to %s attempt %d failed (%s); retrying in %.3fs",
                    name,
                    attempt,
                    exc,
                    delay,
                )
                await self._sleep(delay)
        return False  # pragma: no cover - the loop always returns

    async def _attempt(self, url: str, body: bytes, headers: dict[str, str]) -> None:
        import aiohttp  # (loaded: the session is one)

        data = post_body(body)  # (batches reach ~4 MiB)
        try:
            with anyio.fail_after(self._retry.attempt_timeout):
                # No redirects: following one would resend the Authorization header somewhere
                # we did not choose, and the endpoints never legitimately redirect.
                async with self._session.post(
                    url, data=data, headers=headers, allow_redirects=False
                ) as resp:
                    status = resp.status
                    retry_after = resp.headers.get("Retry-After")
                    # Drain so the connection can be reused; the response message is empty.
                    await resp.read()
        except (TimeoutError, asyncio.TimeoutError):
            raise Retryable(f"timed out after {self._retry.attempt_timeout:g}s") from None
        except aiohttp.ClientError as exc:
            raise Retryable(f"network error: {self._describe(exc)}") from None
        except OSError as exc:
            raise Retryable(f"network error: {self._describe(exc)}") from None
        except Exception as exc:
            # A closed session, an invalid URL...: retrying will not help, but the caller still
            # gets a plain False (and can re-queue) instead of an exception from a flush task.
            raise Permanent(f"unexpected error: {self._describe(exc)}") from None

        check_status(status, retry_after)

    def _describe(self, exc: BaseException) -> str:
        return describe_error(exc, self._secret)
