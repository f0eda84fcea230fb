"""The resolve core shared by the provider and the conformance runner.

One request in, one `Resolved` out: borrow an instance, resolve; when the resolver needs
materializations, read them from the store (one batched round trip), resolve again with
the records, and hand the writes to the store. The sync twin runs on the calling thread;
the async twin runs inline on the event loop and awaits async stores natively.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import anyio.to_thread

from confidence._wasm.abi import (
    MaterializationMode,
    MaterializationRecord,
    Resolved,
    ResolvedFlag,
    ResolveRequest,
    Suspended,
    answer_from_doc,
    call_prefix,
)
from confidence._wasm.pool import NoStateError, ResolverPool
from confidence.errors import MaterializationError

if TYPE_CHECKING:
    from confidence.materialization import ReadOp, ReadResult, VariantWriteOp

__all__ = ["FlagResolver", "MaterializationError", "NoStateError"]

WriteSink = Callable[[list["VariantWriteOp"]], None]
#: One flag's answer: a `ResolvedFlag`, or the guest's JSON row with the same fields in
#: the same order (`_abi.answer_from_doc`); either indexes alike.
FlagRow = ResolvedFlag | list[Any]
#: Prefixes the one-flag hot path keeps (a provider asks for a handful of flags).
_MAX_PREFIXES = 1024


def read_ops(reads: Iterable[MaterializationRecord]) -> list[ReadOp]:
    """Reads the resolver asked for, as store operations.

    A variant read also asks whether the unit is in the materialization at all: a unit in
    the materialization without a variant for this rule still matches (resolve.md §8).
    """
    # (Imported here: only a provider with a store gets here; the module costs ~2 ms.)
    from confidence.materialization import InclusionReadOp, VariantReadOp

    ops: dict[ReadOp, None] = {}
    for r in reads:
        if r.rule:
            ops[VariantReadOp(r.unit, r.materialization, r.rule)] = None
        ops[InclusionReadOp(r.unit, r.materialization)] = None
    return list(ops)


def records_from_results(results: Iterable[ReadResult]) -> tuple[MaterializationRecord, ...]:
    # Absence means "no assignment" / "not included": only positive answers become records.
    from confidence.materialization import InclusionReadResult, VariantReadResult

    records: list[MaterializationRecord] = []
    for res in results:
        if isinstance(res, VariantReadResult):
            if res.variant:
                records.append(
                    MaterializationRecord(res.unit, res.materialization, res.rule, res.variant)
                )
        elif isinstance(res, InclusionReadResult) and res.included:
            records.append(MaterializationRecord(res.unit, res.materialization, "", ""))
    return tuple(records)


def write_ops(writes: Sequence[MaterializationRecord]) -> list[VariantWriteOp]:
    from confidence.materialization import VariantWriteOp

    return [VariantWriteOp(w.unit, w.materialization, w.rule, w.variant) for w in writes]


class FlagResolver:
    def __init__(
        self,
        pool: ResolverPool,
        store: Any | None = None,
        *,
        write_sink: WriteSink | None = None,
        native_store: Any | None = None,
    ) -> None:
        self.pool = pool
        self.store: Any = store
        # An async store bound to one event loop (e.g. the runtime's aiohttp session):
        # async evaluations on that loop await it directly, with no thread hop; `store` is
        # its sync face for every other caller.
        self._native_store = native_store
        self._async_store = store is not None and inspect.iscoroutinefunction(
            getattr(store, "read", None)
        )
        # Where writes go; by default straight to the store. The runtime installs a queue
        # so writes leave the caller's latency path.
        self._write_sink = write_sink
        self._mode = (
            MaterializationMode.UNSUPPORTED if store is None else MaterializationMode.DISCOVERY
        )
        # (flag, client secret, apply) -> the encoded call minus context and clock.
        self._prefixes: dict[tuple[str, str, bool], bytes] = {}

    @property
    def mode(self) -> MaterializationMode:
        return self._mode

    # -- sync ------------------------------------------------------------------------------

    def resolve(self, request: ResolveRequest) -> Resolved:
        mode = self._initial_mode(request)
        if mode is not request.materialization_mode:
            request = replace(request, materialization_mode=mode)
        return self._settle(request, self._resolve_once(request))

    def _settle(self, request: ResolveRequest, result: Resolved | Suspended) -> Resolved:
        """Finish a first answer: serve its reads and resolve again, then queue its writes."""
        if isinstance(result, Suspended):
            records = self._read_sync(result.reads)
            result = self._resolve_once(self._complete(request, records))
            if isinstance(result, Suspended):
                raise MaterializationError("resolver suspended twice for one request")
        if result.writes:
            self._write_sync(result.writes)
        return result

    def resolve_flag(
        self, flag: str, context_json: bytes, client_secret: str, apply: bool
    ) -> Resolved:
        """`resolve()` of one flag without a `ResolveRequest` on the common path (the
        provider's hot path); a trap, a suspension or writes take the general path."""
        pool = self.pool
        mode = self._mode
        result: Resolved | Suspended | None = None
        slot = pool.acquire()
        with slot as instance:  # (a trap drops the instance: see _pool._Slot)
            result = instance.resolve_flag(flag, client_secret, apply, mode, context_json)
        if slot.trapped:
            result = None
        elif type(result) is Resolved and not result.writes:
            return result
        request = _one_flag_request(flag, context_json, client_secret, apply, mode)
        if result is None:
            # The trapped instance is gone; one retry on a fresh one (as _resolve_once).
            with pool.borrow() as instance:
                result = instance.resolve(request)
        return self._settle(request, result)

    def explain(self, request: ResolveRequest) -> dict[str, Any]:
        """The resolver's explain document for `request`'s one flag. Reads the
        materialization store like a resolve (reads have no effect) but never writes: the
        writes a resolve would make are in the document."""
        request = replace(request, materialization_mode=self._initial_mode(request))
        with self.pool.borrow() as instance:
            result = instance.explain(request)
        if isinstance(result, Suspended):
            records = self._read_sync(result.reads)
            with self.pool.borrow() as instance:
                result = instance.explain(self._complete(request, records))
            if isinstance(result, Suspended):
                raise MaterializationError("resolver suspended twice for one request")
        return result

    def resolve_flag_row(
        self, flag: str, context_json: bytes, client_secret: str, apply: bool
    ) -> tuple[Sequence[FlagRow], str]:
        """`resolve_flag()` answered as (the flag rows, at most one; the resolve id): the
        provider's sync hot path, which reads the guest's JSON rows as they are (no
        `Resolved` is built). A row is indexed as a `ResolvedFlag` (reason at 3), so the
        resolve analytics read either. A trap, a suspension or writes take the general path,
        as in `resolve_flag()`."""
        key = (flag, client_secret, apply)
        prefix = self._prefixes.get(key)
        if prefix is None:
            prefix = self._cache_prefix(key)
        pool = self.pool
        doc = pool.resolve_doc(prefix, context_json)
        if doc is not None:
            rows = doc.get("f")
            if rows is not None and not doc["w"]:
                return rows, doc["r"]
        request = _one_flag_request(flag, context_json, client_secret, apply, self._mode)
        if doc is None:
            # The trapped instance is gone; one retry on a fresh one (as _resolve_once).
            with pool.borrow() as instance:
                result = instance.resolve(request)
        else:
            result = answer_from_doc(doc)
        resolved = self._settle(request, result)
        return resolved.flags, resolved.resolve_id

    def _cache_prefix(self, key: tuple[str, str, bool]) -> bytes:
        if len(self._prefixes) >= _MAX_PREFIXES:
            self._prefixes.clear()  # (flag keys come from callers: keep the cache bounded)
        flag, client_secret, apply = key
        prefix = self._prefixes[key] = call_prefix(
            _one_flag_request(flag, b"", client_secret, apply, self._mode)
        )
        return prefix

    def _resolve_once(self, request: ResolveRequest) -> Resolved | Suspended:
        # (The slot as context manager, not `with pool.borrow()`: a generator-based one
        # costs ~2 µs per evaluation; see _pool._Slot.)
        pool = self.pool
        result: Resolved | Suspended | None = None
        slot = pool.acquire()
        with slot as instance:
            result = instance.resolve(request)
        if slot.trapped or result is None:
            # The trapped instance is gone; one retry on a fresh instance, since a trap can
            # be an instance fault (e.g. memory) rather than this request's.
            with pool.borrow() as instance:
                return instance.resolve(request)
        return result

    def _read_sync(
        self, reads: Sequence[MaterializationRecord]
    ) -> tuple[MaterializationRecord, ...]:
        if self._async_store:
            raise MaterializationError(
                "an async materialization store can only be used from the async API"
            )
        try:
            results = self.store.read(read_ops(reads))
        except Exception as exc:
            raise MaterializationError(f"failed to read materializations: {exc}") from exc
        return records_from_results(results)

    def _write_sync(self, writes: Sequence[MaterializationRecord]) -> None:
        ops = write_ops(writes)
        if self._write_sink is not None:
            self._write_sink(ops)
            return
        if self._async_store:
            raise MaterializationError("async store writes need the runtime's write queue")
        try:
            self.store.write(ops)
        except Exception as exc:
            raise MaterializationError(f"failed to write materializations: {exc}") from exc

    # -- async -----------------------------------------------------------------------------

    async def resolve_async(self, request: ResolveRequest) -> Resolved:
        mode = self._initial_mode(request)
        if mode is not request.materialization_mode:
            request = replace(request, materialization_mode=mode)
        return await self._settle_async(request, await self._resolve_once_async(request))

    async def _settle_async(
        self, request: ResolveRequest, result: Resolved | Suspended
    ) -> Resolved:
        """`_settle` for the async path: reads awaited, writes queued."""
        if isinstance(result, Suspended):
            records = await self._read_async(result.reads)
            result = await self._resolve_once_async(self._complete(request, records))
            if isinstance(result, Suspended):
                raise MaterializationError("resolver suspended twice for one request")
        if result.writes:
            await self._write_async(result.writes)
        return result

    async def resolve_flag_async(
        self, flag: str, context_json: bytes, client_secret: str, apply: bool
    ) -> Resolved:
        """`resolve_async()` of one flag without a `ResolveRequest` on the common path (an
        idle instance, no materializations); everything else takes the general path."""
        pool = self.pool
        mode = self._mode
        slot = pool.try_acquire()
        if slot is not None:
            result: Resolved | Suspended | None = None
            with slot as instance:
                result = instance.resolve_flag(flag, client_secret, apply, mode, context_json)
            if not slot.trapped and result is not None:
                if type(result) is Resolved and not result.writes:
                    return result
                request = _one_flag_request(flag, context_json, client_secret, apply, mode)
                return await self._settle_async(request, result)
        # Every instance busy (wait in a worker thread), or a trap (retry on a fresh one).
        return await self.resolve_async(
            _one_flag_request(flag, context_json, client_secret, apply, mode)
        )

    async def _resolve_once_async(self, request: ResolveRequest) -> Resolved | Suspended:
        # Inline on the loop when an instance is free (no thread hop: ~µs); only when
        # every instance is busy in other threads do we wait in a worker thread.
        slot = self.pool.try_acquire()
        if slot is None:
            return await anyio.to_thread.run_sync(self._resolve_once, request)
        result: Resolved | Suspended | None = None
        with slot as instance:
            result = instance.resolve(request)
        if slot.trapped or result is None:
            return await anyio.to_thread.run_sync(self._resolve_once, request)
        return result

    async def _read_async(
        self, reads: Sequence[MaterializationRecord]
    ) -> tuple[MaterializationRecord, ...]:
        ops = read_ops(reads)
        try:
            native = self._native_for_this_loop()
            if native is not None:
                results = await native.read(ops)
            elif self._async_store:
                results = await self.store.read(ops)
            else:
                results = await anyio.to_thread.run_sync(self.store.read, ops)
        except Exception as exc:
            raise MaterializationError(f"failed to read materializations: {exc}") from exc
        return records_from_results(results)

    async def _write_async(self, writes: Sequence[MaterializationRecord]) -> None:
        ops = write_ops(writes)
        if self._write_sink is not None:
            self._write_sink(ops)
            return
        try:
            if self._async_store:
                await self.store.write(ops)
            else:
                await anyio.to_thread.run_sync(self.store.write, ops)
        except Exception as exc:
            raise MaterializationError(f"failed to write materializations: {exc}") from exc

    # -- helpers ---------------------------------------------------------------------------

    def _native_for_this_loop(self) -> Any | None:
        native = self._native_store
        if native is None:
            return None
        loop = getattr(native, "loop", None)
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            return None
        return native.store if loop is running else None

    def _initial_mode(self, request: ResolveRequest) -> MaterializationMode:
        if request.materialization_mode == MaterializationMode.COMPLETE:
            return MaterializationMode.COMPLETE  # the caller supplied every record
        return self._mode

    @staticmethod
    def _complete(
        request: ResolveRequest, records: tuple[MaterializationRecord, ...]
    ) -> ResolveRequest:
        return replace(
            request,
            materialization_mode=MaterializationMode.COMPLETE,
            materializations=request.materializations + records,
        )


def _one_flag_request(
    flag: str, context_json: bytes, client_secret: str, apply: bool, mode: MaterializationMode
) -> ResolveRequest:
    """The general path's request for what the one-flag fast paths resolve."""
    return ResolveRequest(
        flags=(flag,),
        context_json=context_json,
        client_secret=client_secret,
        apply=apply,
        materialization_mode=mode,
    )
