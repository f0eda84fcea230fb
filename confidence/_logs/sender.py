"""Delivery of flag logs (``WriteFlagLogsRequest`` bytes produced by the WASM resolver).

Routing (protocol §3.6): the state's ``log_destinations`` name a primary (``[0]``) and an
optional fallback (``[1]``); an empty list means Spotify Edge. ``CLOUDFLARE (2)`` goes to the
Cloudflare ingest worker wrapped in ``IngestFlagLogsRequest{account_id, batch}``; any other value
goes to ``{api_base_url}/v1/clientFlagLogs:write`` (the REST form of the gRPC Edge endpoint).
Unlike the reference provider, routing follows the *latest* state, not the first one.

Transport: `_http` (one status classification, retry rule, Retry-After parser, backoff with
jitter and per-attempt deadline for every client). Each delivery makes a bounded number of
attempts, so one ``send`` has a known worst-case duration and the caller can decide whether
to re-queue the batch.

The client secret travels only in the ``Authorization`` header and is never logged.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Final

import anyio

from .. import _http
from .._http import HttpFailure, RetryPolicy, parse_retry_after
from .._wasm.protowire import encode_ingest_flag_logs_request

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
    "RetryPolicy",
    "parse_retry_after",
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

        def note_retry(attempt: int, failure: HttpFailure, delay: float) -> None:
            logger.debug(
                "Flag log delivery to %s attempt %d failed (%s); retrying in %.3fs",
                name,
                attempt,
                failure,
                delay,
            )

        try:
            await _http.call(
                self._session,
                "POST",
                url,
                policy=self._retry,
                secret=self._secret,
                body=body,
                headers={"Content-Type": content_type},
                authorization=self._auth,
                sleep=self._sleep,
                rng=self._rng,
                on_retry=note_retry,
            )
        except HttpFailure as failure:
            if failure.retryable:
                logger.warning(
                    "Flag log delivery to %s (%s) failed after %d attempt(s): %s",
                    name,
                    role,
                    failure.attempts,
                    failure,
                )
            else:
                # Permanent for this batch (e.g. 400, 401, a closed session): the caller
                # still gets a plain False and keeps the batch.
                logger.warning(
                    "Flag log delivery to %s (%s) failed permanently: %s", name, role, failure
                )
            return False
        return True
