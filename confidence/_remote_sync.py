"""`RemoteMaterializationStore`: the hosted store with the official provider's sync API.

The official provider's `RemoteMaterializationStore(client_secret, channel=None)` is a
synchronous store (`read`, `write`, `close`) over gRPC. This one keeps that shape and runs
the asyncio-native `AsyncRemoteMaterializationStore` (REST, protocol.md §5.2) on a private
event-loop thread, started on first use and stopped by `close()`:

- calls block the calling thread only, never an event loop of the caller's (the store's
  loop is its own), so it can serve the provider's sync and async paths alike (the provider
  runs sync stores in a worker thread on its async path);
- it is thread-safe: every call is a coroutine on the one private loop;
- the same retry/timeout profile and errors (`RemoteMaterializationError`) as the async one.

With `use_remote_materialization_store=True` the provider does not use this class: it runs
the async store on its own loop and session.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from contextlib import AbstractContextManager

from anyio.from_thread import BlockingPortal, start_blocking_portal

from confidence._logs.sender import DEFAULT_API_BASE_URL
from confidence._remote_materialization import (
    RemoteMaterializationError,
)
from confidence._remote_materialization import (
    RemoteMaterializationStore as AsyncRemoteMaterializationStore,
)
from confidence.materialization import ReadOp, ReadResult, VariantWriteOp

__all__ = ["RemoteMaterializationStore"]


class RemoteMaterializationStore:
    """Confidence's hosted materialization store, synchronous (`read`, `write`, `close`).

    `RemoteMaterializationStore(client_secret)` works as with the official provider. The
    keyword options are those of `AsyncRemoteMaterializationStore` (without `session`,
    which belongs to one event loop). `channel` (a gRPC channel there) has no meaning
    here: no gRPC is used; pass `api_base_url=` to choose the endpoint.
    """

    def __init__(
        self,
        client_secret: str,
        channel: object | None = None,
        *,
        api_base_url: str = DEFAULT_API_BASE_URL,
        read_timeout: float = 0.5,
        write_timeout: float = 0.5,
        attempts: int = 3,
        backoff: float = 0.1,
        max_backoff: float = 1.0,
    ) -> None:
        if channel is not None:
            raise TypeError(
                "RemoteMaterializationStore does not take a gRPC channel (no gRPC is used "
                "here): the store calls Confidence's REST API at api_base_url="
            )
        # Validates the arguments now, as the official constructor does; no I/O yet.
        self._inner = AsyncRemoteMaterializationStore(
            client_secret,
            api_base_url=api_base_url,
            read_timeout=read_timeout,
            write_timeout=write_timeout,
            attempts=attempts,
            backoff=backoff,
            max_backoff=max_backoff,
        )
        self._lock = threading.Lock()
        self._portal_cm: AbstractContextManager[BlockingPortal] | None = None
        self._portal: BlockingPortal | None = None
        self._closed = False

    def __repr__(self) -> str:
        return repr(self._inner)

    def _get_portal(self) -> BlockingPortal:
        with self._lock:
            if self._closed:
                raise RemoteMaterializationError(
                    "the remote materialization store is closed",
                    operation="use",
                    retryable=False,
                )
            if self._portal is None:
                cm = start_blocking_portal()
                self._portal = cm.__enter__()
                self._portal_cm = cm
            return self._portal

    def read(self, ops: Sequence[ReadOp]) -> list[ReadResult]:
        if not ops:
            return []
        return self._get_portal().call(self._inner.read, list(ops))

    def write(self, ops: Sequence[VariantWriteOp]) -> None:
        if not ops:
            return
        self._get_portal().call(self._inner.write, list(ops))

    def close(self) -> None:
        """Close the HTTP session and stop the store's loop thread. Idempotent."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            portal, cm = self._portal, self._portal_cm
            self._portal = self._portal_cm = None
        if portal is not None and cm is not None:
            try:
                portal.call(self._inner.aclose)
            finally:
                cm.__exit__(None, None, None)

    def __enter__(self) -> RemoteMaterializationStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
