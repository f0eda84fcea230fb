"""Confidence's hosted materialization store over HTTP (protocol.md §5.2, REST form).

`use_remote_materialization_store=True` uses this. The HTTP work always runs on the runtime's
event loop with the runtime's aiohttp session; the store's methods are *sync* so that both
resolve paths can use it:
- sync resolves (any non-loop thread) hand the request to the loop and wait for it;
- async resolves call it through `FlagResolver`'s worker-thread path, which does the same.
A sync resolve on the loop thread itself cannot wait for the loop, so it fails with a clear
error (use the async API there).
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any, Final

import aiohttp
import anyio

from confidence._proto.confidence.flags.resolver.v1 import api_pb2
from confidence.materialization import (
    InclusionReadResult,
    ReadOp,
    ReadResult,
    VariantReadOp,
    VariantReadResult,
    VariantWriteOp,
)

__all__ = ["RemoteMaterializationStore"]

READ_PATH: Final = "/v1/materialization:readMaterializedOperations"
WRITE_PATH: Final = "/v1/materialization:writeMaterializedOperations"
_CONTENT_TYPE: Final = "application/x-protobuf"


class RemoteStoreError(Exception):
    """The remote store could not be reached or refused the request."""


class RemoteMaterializationStore:
    def __init__(
        self,
        *,
        client_secret: str,
        session: aiohttp.ClientSession,
        api_base_url: str,
        loop: asyncio.AbstractEventLoop,
        read_timeout: float = 2.0,
        write_timeout: float = 5.0,
    ) -> None:
        self._headers = {
            "Authorization": f"ClientSecret {client_secret}",
            "Content-Type": _CONTENT_TYPE,
        }
        self._session = session
        base = api_base_url.rstrip("/")
        self._read_url = base + READ_PATH
        self._write_url = base + WRITE_PATH
        self._loop = loop
        self._loop_thread = threading.get_ident()  # built on the loop thread
        self._read_timeout = read_timeout
        self._write_timeout = write_timeout

    def __repr__(self) -> str:
        return f"RemoteMaterializationStore(url={self._read_url.rsplit('/v1/', 1)[0]!r})"

    # -- sync facade ---------------------------------------------------------------------------

    def read(self, ops: list[ReadOp]) -> list[ReadResult]:
        if not ops:
            return []
        results: list[ReadResult] = self._run(self.read_async(ops), self._read_timeout)
        return results

    def write(self, ops: list[VariantWriteOp]) -> None:
        if ops:
            self._run(self.write_async(ops), self._write_timeout)

    def _run(self, coro: Any, timeout: float) -> Any:
        if threading.get_ident() == self._loop_thread:
            coro.close()
            raise RemoteStoreError(
                "the remote materialization store cannot be used from a sync evaluation on "
                "the event loop thread; use the async API (get_*_details_async)"
            )
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(timeout + 1.0)
        except TimeoutError:
            future.cancel()
            raise RemoteStoreError("remote materialization store timed out") from None

    # -- async core ----------------------------------------------------------------------------

    async def read_async(self, ops: list[ReadOp]) -> list[ReadResult]:
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
        body = await self._post(self._read_url, request.SerializeToString(), self._read_timeout)
        result = api_pb2.ReadOperationsResult.FromString(body)
        out: list[ReadResult] = []
        for r in result.results:
            kind = r.WhichOneof("result")
            if kind == "variant_result":
                v = r.variant_result
                out.append(VariantReadResult(v.unit, v.materialization, v.rule, v.variant or None))
            elif kind == "inclusion_result":
                i = r.inclusion_result
                out.append(InclusionReadResult(i.unit, i.materialization, i.is_included))
        return out

    async def write_async(self, ops: list[VariantWriteOp]) -> None:
        request = api_pb2.WriteOperationsRequest()
        for op in ops:
            request.store_variant_op.add(
                unit=op.unit, materialization=op.materialization, rule=op.rule, variant=op.variant
            )
        await self._post(self._write_url, request.SerializeToString(), self._write_timeout)

    async def _post(self, url: str, body: bytes, timeout: float) -> bytes:
        try:
            with anyio.fail_after(timeout):
                async with self._session.post(
                    url, data=body, headers=self._headers, allow_redirects=False
                ) as resp:
                    payload = await resp.read()
                    status = resp.status
        except TimeoutError:
            raise RemoteStoreError(
                f"remote materialization store timed out after {timeout:g}s"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise RemoteStoreError(
                f"remote materialization store unreachable: {type(exc).__name__}"
            ) from None
        if not 200 <= status < 300:
            raise RemoteStoreError(f"remote materialization store answered HTTP {status}")
        return payload
