"""Materialization stores: sticky assignments and materialized segments.

A flag rule may read a materialization ("does this unit already have a variant for this
rule?" / "is this unit in this materialized segment?") and write one (persist the variant
a unit got). The resolver asks; a store answers. Stores may be called concurrently from
several threads (sync protocol) or tasks (async protocol): implementations must be
thread-safe / task-safe.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from confidence.errors import MaterializationError

if TYPE_CHECKING:
    from confidence._http import FailureKind
    from confidence._remote_materialization import (
        RemoteMaterializationStore as AsyncRemoteMaterializationStore,
    )
    from confidence._remote_sync import (
        RemoteMaterializationStore as RemoteMaterializationStore,
    )

__all__ = [
    "AsyncMaterializationStore",
    "AsyncRemoteMaterializationStore",
    "InMemoryMaterializationStore",
    "InclusionReadOp",
    "InclusionReadResult",
    "MaterializationError",
    "MaterializationNotSupportedError",
    "MaterializationStore",
    "ReadOp",
    "ReadResult",
    "RemoteMaterializationError",
    "RemoteMaterializationStore",
    "UnsupportedMaterializationStore",
    "VariantReadOp",
    "VariantReadResult",
    "VariantWriteOp",
]


# The op and result types are frozen (immutable, hashable), unlike the official provider's
# mutable dataclasses: a store builds new results instead of filling them in place, and
# nothing it returns can change under the resolver (docs/migration.md).


@dataclass(frozen=True, slots=True)
class VariantReadOp:
    """Which variant did `unit` get for `rule` in `materialization`?"""

    unit: str
    materialization: str
    rule: str


@dataclass(frozen=True, slots=True)
class InclusionReadOp:
    """Is `unit` in `materialization` (with any rule)?"""

    unit: str
    materialization: str


@dataclass(frozen=True, slots=True)
class VariantReadResult:
    unit: str
    materialization: str
    rule: str
    variant: str | None = None  # None: no assignment recorded


@dataclass(frozen=True, slots=True)
class InclusionReadResult:
    unit: str
    materialization: str
    included: bool


@dataclass(frozen=True, slots=True)
class VariantWriteOp:
    unit: str
    materialization: str
    rule: str
    variant: str


ReadOp = VariantReadOp | InclusionReadOp
ReadResult = VariantReadResult | InclusionReadResult


class MaterializationNotSupportedError(MaterializationError):
    """The store does not do this operation (`UnsupportedMaterializationStore`)."""

    def __init__(self, message: str = "materialization operation not supported") -> None:
        super().__init__(message)
        self.message = message


class RemoteMaterializationError(MaterializationError):
    """The remote store could not be reached, timed out, or refused the request.

    The message names the operation, the endpoint and what went wrong; it never contains
    the client secret. `kind` says why (`None`: not an HTTP failure, e.g. the store is
    closed); decide on it and on `retryable`, never on the message.
    """

    def __init__(
        self,
        message: str,
        *,
        operation: str,
        status: int | None = None,
        attempts: int = 1,
        retryable: bool = True,
        kind: FailureKind | None = None,
    ) -> None:
        super().__init__(message)
        self.kind = kind
        self.operation = operation  # "read" or "write"
        self.status = status  # the last HTTP status, if there was an answer
        self.attempts = attempts
        self.retryable = retryable  # whether asking again later may succeed


@runtime_checkable
class MaterializationStore(Protocol):
    """A synchronous store. Called from many threads at once: must be thread-safe.

    On the async path a sync store runs in a worker thread, so it never blocks the loop.
    """

    def read(self, ops: list[ReadOp]) -> list[ReadResult]: ...

    def write(self, ops: list[VariantWriteOp]) -> None: ...


@runtime_checkable
class AsyncMaterializationStore(Protocol):
    """An asyncio-native store, awaited on the event loop without a thread hop."""

    async def read(self, ops: list[ReadOp]) -> list[ReadResult]: ...

    async def write(self, ops: list[VariantWriteOp]) -> None: ...


class UnsupportedMaterializationStore:
    """Refuses every operation (what a provider without a store behaves like)."""

    def read(self, ops: list[ReadOp]) -> list[ReadResult]:
        raise MaterializationNotSupportedError("materialization read not supported")

    def write(self, ops: list[VariantWriteOp]) -> None:
        raise MaterializationNotSupportedError("materialization write not supported")


class InMemoryMaterializationStore:
    """A thread-safe in-process store (tests, single-process apps).

    A unit is "in" a materialization when it has any record there: an inclusion record
    (rule "") or a variant for some rule.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (unit, materialization) -> {rule: variant}; rule "" marks bare inclusion
        self._records: dict[tuple[str, str], dict[str, str]] = {}

    def include(self, unit: str, materialization: str) -> None:
        with self._lock:
            self._records.setdefault((unit, materialization), {}).setdefault("", "")

    def set_variant(self, unit: str, materialization: str, rule: str, variant: str) -> None:
        with self._lock:
            self._records.setdefault((unit, materialization), {})[rule] = variant

    def read(self, ops: Sequence[ReadOp]) -> list[ReadResult]:
        results: list[ReadResult] = []
        with self._lock:
            for op in ops:
                rules = self._records.get((op.unit, op.materialization))
                if isinstance(op, VariantReadOp):
                    variant = rules.get(op.rule) if rules else None
                    results.append(
                        VariantReadResult(op.unit, op.materialization, op.rule, variant or None)
                    )
                else:
                    results.append(
                        InclusionReadResult(op.unit, op.materialization, bool(rules is not None))
                    )
        return results

    def write(self, ops: Sequence[VariantWriteOp]) -> None:
        with self._lock:
            for op in ops:
                self._records.setdefault((op.unit, op.materialization), {})[op.rule] = op.variant

    def snapshot(self) -> dict[tuple[str, str], dict[str, str]]:
        with self._lock:
            return {key: dict(rules) for key, rules in self._records.items()}


def __getattr__(name: str) -> Any:  # Any: module __getattr__ (PEP 562) returns a class
    # Only the two remote stores stay lazy: their module loads aiohttp and the protobuf
    # runtime (~290 ms of `python -X importtime`, against ~15 ms for this module), which a
    # provider with its own store, or none, never needs. Everything else here is plain.
    if name == "AsyncRemoteMaterializationStore":
        from confidence import _remote_materialization

        return _remote_materialization.RemoteMaterializationStore
    if name == "RemoteMaterializationStore":
        # The official provider's name and sync API (read/write/close).
        from confidence import _remote_sync

        return _remote_sync.RemoteMaterializationStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
