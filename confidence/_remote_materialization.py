"""Confidence's hosted materialization store, asyncio-native (protocol.md §5.2, REST form).

`RemoteMaterializationStore` is an `AsyncMaterializationStore`: awaited on the event loop,
one HTTP POST per batch with a protobuf body. A read sits on an evaluation's latency path,
so the defaults follow the JS provider's profile (500 ms per attempt, 3 attempts, 100 ms
backoff doubling, ±10 % jitter): a dead endpoint costs an evaluation under two seconds and
then a clear error, never a hang.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Final

import aiohttp
from google.protobuf.message import DecodeError
from yarl import URL

from confidence import _http
from confidence._http import FailureKind, HttpFailure, RetryPolicy
from confidence._logs.sender import DEFAULT_API_BASE_URL
from confidence._proto.confidence.flags.resolver.v1 import api_pb2
from confidence.materialization import (
    InclusionReadResult,
    ReadOp,
    ReadResult,
    VariantReadOp,
    VariantReadResult,
    VariantWriteOp,
)
from confidence.materialization import RemoteMaterializationError as RemoteMaterializationError

__all__ = [
    "DEFAULT_API_BASE_URL",
    "READ_PATH",
    "WRITE_PATH",
    "RemoteMaterializationError",
    "RemoteMaterializationStore",
]

logger = logging.getLogger("confidence.materialization")

READ_PATH: Final = "/v1/materialization:readMaterializedOperations"
WRITE_PATH: Final = "/v1/materialization:writeMaterializedOperations"
_CONTENT_TYPE: Final = "application/x-protobuf"


class RemoteMaterializationStore:
    """Reads and writes materializations through Confidence's REST API.

    - `read_timeout` / `write_timeout` bound each *attempt*; a call makes at most
      `attempts` attempts with `backoff` seconds (doubling, capped at `max_backoff`)
      between them, so one call never takes longer than about
      `attempts * timeout + (attempts - 1) * max_backoff`.
    - Retried (the `_http` rule shared by every client): timeouts, connection errors, HTTP
      408/425/429/5xx, honouring a `Retry-After` capped at `max_backoff`. Not retried:
      other 4xx. `RemoteMaterializationError.kind` says which (`_http.FailureKind`).
    - `session`: an `aiohttp.ClientSession` to share (the caller closes it); without one
      the store creates its own on first use, bound to that event loop, and `aclose()`
      closes it.
    """

    def __init__(
        self,
        client_secret: str,
        *,
        api_base_url: str = DEFAULT_API_BASE_URL,
        read_timeout: float = 0.5,
        write_timeout: float = 0.5,
        attempts: int = 3,
        backoff: float = 0.1,
        max_backoff: float = 1.0,
        session: aiohttp.ClientSession | None = None,
    ) -> None:
        if not client_secret or any(ord(c) < 0x20 or ord(c) == 0x7F for c in client_secret):
            # Checked here because aiohttp's own header error would quote the value.
            raise ValueError("client_secret must be a non-empty string without control characters")
        if read_timeout <= 0 or write_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if attempts < 1:
            raise ValueError("attempts must be >= 1")
        if backoff < 0 or max_backoff < backoff:
            raise ValueError("need 0 <= backoff <= max_backoff")
        self._secret = client_secret
        self._authorization = f"ClientSecret {client_secret}"
        self._headers: Final = {"Content-Type": _CONTENT_TYPE, "Accept": _CONTENT_TYPE}
        base = URL(api_base_url.rstrip("/"))
        # Shown in errors and repr: never any userinfo someone put into the URL.
        self._display_base = str(base.with_user(None))
        self._read_url = str(base) + READ_PATH
        self._write_url = str(base) + WRITE_PATH
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.attempts = attempts
        self.backoff = backoff
        self.max_backoff = max_backoff
        self._session = session
        self._owns_session = session is None
        self._closed = False

    def __repr__(self) -> str:
        return f"RemoteMaterializationStore(api_base_url={self._display_base!r})"

    # -- the store protocol -------------------------------------------------------------

    async def read(self, ops: Sequence[ReadOp]) -> list[ReadResult]:
        if not ops:
            return []
        request = api_pb2.ReadOperationsRequest()
        for op in ops:
            entry = request.ops.add()
            if isinstance(op, VariantReadOp):
                entry.variant_read_op.unit = op.unit
                entry.variant_read_op.materialization = op.materialization
                entry.variant_read_op.rule = op.rule
            else:
                entry.inclusion_read_op.unit = op.unit
                entry.inclusion_read_op.materialization = op.materialization
        body = await self._call(
            "read", self._read_url, request.SerializeToString(), self.read_timeout
        )
        try:
            result = api_pb2.ReadOperationsResult.FromString(body)
        except DecodeError:
            raise RemoteMaterializationError(
                f"materialization read: {self._display_base}{READ_PATH} answered with a body "
                "that is not a ReadOperationsResult",
                operation="read",
                status=200,
                retryable=False,
            ) from None
        out: list[ReadResult] = []
        for r in result.results:
            kind = r.WhichOneof("result")
            if kind == "variant_result":
                v = r.variant_result
                # "" on the wire means "no variant recorded".
                out.append(VariantReadResult(v.unit, v.materialization, v.rule, v.variant or None))
            elif kind == "inclusion_result":
                i = r.inclusion_result
                out.append(InclusionReadResult(i.unit, i.materialization, i.is_included))
        return out

    async def write(self, ops: Sequence[VariantWriteOp]) -> None:
        if not ops:
            return
        request = api_pb2.WriteOperationsRequest()
        for op in ops:
            request.store_variant_op.add(
                unit=op.unit, materialization=op.materialization, rule=op.rule, variant=op.variant
            )
        # The answer is an empty WriteOperationsResult: 2xx is all that matters.
        await self._call("write", self._write_url, request.SerializeToString(), self.write_timeout)

    async def aclose(self) -> None:
        """Close the session if the store created it. Idempotent."""
        self._closed = True
        session, self._session = self._session, None
        if session is not None and self._owns_session:
            await session.close()

    async def __aenter__(self) -> RemoteMaterializationStore:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    # -- transport ------------------------------------------------------------------------

    def _get_session(self) -> aiohttp.ClientSession:
        if self._closed:
            raise RemoteMaterializationError(
                "the remote materialization store is closed", operation="use", retryable=False
            )
        if self._session is None:
            # Created lazily because an aiohttp session binds to the loop it is created on.
            self._session = aiohttp.ClientSession()
        return self._session

    async def _call(self, operation: str, url: str, body: bytes, timeout: float) -> bytes:
        session = self._get_session()
        path = READ_PATH if operation == "read" else WRITE_PATH
        policy = RetryPolicy(
            max_attempts=self.attempts,
            base_delay=self.backoff,
            max_delay=self.max_backoff,
            attempt_timeout=timeout,
        )

        def note_retry(attempt: int, failure: HttpFailure, delay: float) -> None:
            logger.debug(
                "materialization %s attempt %d/%d failed: %s",
                operation,
                attempt,
                self.attempts,
                failure,
            )

        try:
            response = await _http.call(
                session,
                "POST",
                url,
                policy=policy,
                secret=self._secret,
                body=body,
                headers=self._headers,
                authorization=self._authorization,
                on_retry=note_retry,
            )
        except HttpFailure as failure:
            attempts = failure.attempts
            # A network error's text may quote request details: only its type is kept.
            reason = str(failure)
            if failure.kind is FailureKind.NETWORK:
                reason = "connection failed"
            raise RemoteMaterializationError(
                f"materialization {operation} failed after {attempts} attempt"
                f"{'s' if attempts > 1 else ''}: {reason} "
                f"(POST {self._display_base}{path})",
                operation=operation,
                status=failure.status,
                attempts=attempts,
                retryable=failure.retryable,
                kind=failure.kind,
            ) from None
        return response.body
