"""Let sync evaluations use an async materialization store (e.g. the remote one).

`FlagResolver` can only await an async store on the async path; the sync path (the
OpenFeature SDK's sync client, i.e. most evaluations) would fail. This adapter gives an
async store a *sync* face whose calls run on the runtime's event loop:

- a sync evaluation on any non-loop thread submits the coroutine to the loop and waits;
- an async evaluation on the runtime's own loop awaits the store directly (no thread
  hop); on any other loop it goes through the same sync face in a worker thread;
- a sync evaluation *on* the loop thread cannot wait for its own loop: it fails with a
  clear message instead of deadlocking.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar, cast

from confidence.materialization import (
    AsyncMaterializationStore,
    ReadOp,
    ReadResult,
    VariantWriteOp,
)

_T = TypeVar("_T")

__all__ = ["LoopBoundStore"]


class LoopBoundStore:
    def __init__(
        self,
        store: object,
        loop: asyncio.AbstractEventLoop,
        *,
        timeout: float = 30.0,
    ) -> None:
        # (`object`: the runtime holds the user's store untyped; it hands over only a store
        # whose `read` is a coroutine function, i.e. an AsyncMaterializationStore.)
        self._store = cast(AsyncMaterializationStore, store)
        self._loop = loop
        self._loop_thread = threading.get_ident()  # built on the runtime's loop thread
        self._timeout = timeout  # a backstop only; the store bounds its own calls

    def __repr__(self) -> str:
        return f"LoopBoundStore({self._store!r})"

    @property
    def store(self) -> AsyncMaterializationStore:
        """The async store itself (awaited directly by evaluations on `loop`)."""
        return self._store

    @property
    def loop(self) -> asyncio.AbstractEventLoop:
        return self._loop

    def read(self, ops: list[ReadOp]) -> list[ReadResult]:
        return self._run(self._store.read(ops))

    def write(self, ops: list[VariantWriteOp]) -> None:
        self._run(self._store.write(ops))

    def _run(self, coro: Coroutine[Any, Any, _T]) -> _T:  # (Any: what a coroutine is sent)
        if threading.get_ident() == self._loop_thread:
            coro.close()
            raise RuntimeError(
                "an async materialization store cannot serve a sync evaluation on the event "
                "loop thread; use the async API there (get_*_details_async)"
            )
        future = asyncio.run_coroutine_threadsafe(coro, self._loop)
        try:
            return future.result(self._timeout)
        except concurrent.futures.TimeoutError:  # not the builtin TimeoutError on 3.10
            future.cancel()
            raise TimeoutError("materialization store call timed out") from None
