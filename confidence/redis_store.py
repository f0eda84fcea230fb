"""Materialization stores on Redis (the `redis` extra: `confidence-openfeature-provider[redis]`).

Layout: one hash per (unit, materialization), fields rule → variant; the field "" (empty
rule, empty variant) marks bare inclusion in a materialized segment. A unit is "in" a
materialization when its hash exists (has any field): the same semantics as
`InMemoryMaterializationStore`. Keys::

    <prefix><materialization, with "%" and ":" percent-escaped>:<unit>

so a unit may contain any character and keys never collide.

- One round trip per read batch (a pipeline of HGETALL, one per distinct key) and per write
  batch (a MULTI/EXEC of HSETs).
- Concurrent writers, in any number of processes, never lose each other's writes: every
  write is a single-field HSET, atomic in Redis; nothing is read-modified-written. The same
  (unit, materialization, rule) written twice keeps the last value, as in memory.
- TTL: each write sets the key's expiry, and each read that finds the key renews it (in the
  same pipeline), so an assignment lives `ttl` after its last use. Confidence's hosted store
  keeps records 90 days, renewed on access: that is the default; `ttl=None` keeps records
  forever.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Final, TypeVar

try:
    import redis
    import redis.asyncio as redis_asyncio
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "confidence.redis_store needs redis-py: "
        "pip install 'confidence-openfeature-provider[redis]'"
    ) from exc

from confidence.materialization import (
    InclusionReadResult,
    ReadOp,
    ReadResult,
    VariantReadOp,
    VariantReadResult,
    VariantWriteOp,
)

__all__ = [
    "DEFAULT_PREFIX",
    "DEFAULT_TTL",
    "AsyncRedisMaterializationStore",
    "RedisMaterializationStore",
]

DEFAULT_PREFIX: Final = "confidence:materialization:"
DEFAULT_TTL: Final = timedelta(days=90)


class _Layout:
    """Keys, TTL and the mapping between ops and Redis replies (shared by both stores)."""

    __slots__ = ("prefix", "ttl_seconds")

    def __init__(self, prefix: str, ttl: timedelta | float | None) -> None:
        if ttl is None:
            self.ttl_seconds: int | None = None
        else:
            seconds = ttl.total_seconds() if isinstance(ttl, timedelta) else float(ttl)
            if seconds < 1:
                raise ValueError("ttl must be at least one second (or None for no expiry)")
            self.ttl_seconds = int(seconds)
        self.prefix = prefix

    def key(self, unit: str, materialization: str) -> str:
        escaped = materialization.replace("%", "%25").replace(":", "%3A")
        return f"{self.prefix}{escaped}:{unit}"

    def read_keys(self, ops: Sequence[ReadOp]) -> list[tuple[str, str]]:
        """The distinct (unit, materialization) pairs the ops touch, in first-seen order."""
        return list(dict.fromkeys((op.unit, op.materialization) for op in ops))

    def results(
        self, ops: Sequence[ReadOp], hashes: dict[tuple[str, str], dict[str, str]]
    ) -> list[ReadResult]:
        results: list[ReadResult] = []
        for op in ops:
            rules = hashes.get((op.unit, op.materialization))
            if isinstance(op, VariantReadOp):
                variant = rules.get(op.rule) if rules else None
                # An empty variant is how "in, but no variant" is stored: not an assignment.
                results.append(
                    VariantReadResult(op.unit, op.materialization, op.rule, variant or None)
                )
            else:
                results.append(InclusionReadResult(op.unit, op.materialization, bool(rules)))
        return results


def _decode(value: object) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _decode_hash(raw: Mapping[Any, Any] | None) -> dict[str, str]:  # (bytes or str)
    return {_decode(k): _decode(v) for k, v in (raw or {}).items()}


_Client = TypeVar("_Client")


def _client_from(
    client: _Client | None, url: str | None, factory: Callable[[str], _Client]
) -> tuple[_Client, bool]:
    if (client is None) == (url is None):
        raise ValueError("pass exactly one of client= or url=")
    if client is not None:
        return client, False
    assert url is not None  # (checked above: exactly one was given)
    return factory(url), True


class RedisMaterializationStore:
    """A `MaterializationStore` (sync) on redis-py. Thread-safe (redis-py pools connections).

    Pass either a `redis.Redis` client (which you close) or a `url` (the store creates and
    `close()` closes the client). Any client works: `decode_responses` on or off.
    """

    def __init__(
        self,
        client: redis.Redis | None = None,
        *,
        url: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        ttl: timedelta | float | None = DEFAULT_TTL,
    ) -> None:
        self._layout = _Layout(prefix, ttl)
        self._client, self._owns_client = _client_from(client, url, redis.Redis.from_url)

    def __repr__(self) -> str:
        return (
            f"RedisMaterializationStore(prefix={self._layout.prefix!r}, "
            f"ttl_seconds={self._layout.ttl_seconds})"
        )

    def read(self, ops: Sequence[ReadOp]) -> list[ReadResult]:
        if not ops:
            return []
        layout = self._layout
        pairs = layout.read_keys(ops)
        # No MULTI: each HGETALL is atomic on its own and reads need no isolation.
        with self._client.pipeline(transaction=False) as pipe:
            for unit, materialization in pairs:
                key = layout.key(unit, materialization)
                pipe.hgetall(key)
                if layout.ttl_seconds is not None:
                    pipe.expire(key, layout.ttl_seconds)  # renew on access; no-op if absent
            replies = pipe.execute()
        return layout.results(ops, _hashes(pairs, replies, layout.ttl_seconds is not None))

    def write(self, ops: Sequence[VariantWriteOp]) -> None:
        if not ops:
            return
        layout = self._layout
        # MULTI/EXEC so a key never exists without its expiry, even if we die mid-batch.
        with self._client.pipeline(transaction=True) as pipe:
            for key, field, value in _write_commands(layout, ops):
                pipe.hset(key, field, value)
            if layout.ttl_seconds is not None:
                for key in dict.fromkeys(layout.key(op.unit, op.materialization) for op in ops):
                    pipe.expire(key, layout.ttl_seconds)
            pipe.execute()

    def close(self) -> None:
        """Close the client if the store created it."""
        if self._owns_client:
            self._client.close()


class AsyncRedisMaterializationStore:
    """An `AsyncMaterializationStore` on `redis.asyncio`, awaited on the event loop.

    Pass either a `redis.asyncio.Redis` client (which you close) or a `url` (the store
    creates the client and `aclose()` closes it).
    """

    def __init__(
        self,
        client: redis_asyncio.Redis | None = None,
        *,
        url: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        ttl: timedelta | float | None = DEFAULT_TTL,
    ) -> None:
        self._layout = _Layout(prefix, ttl)
        self._client, self._owns_client = _client_from(client, url, redis_asyncio.Redis.from_url)

    def __repr__(self) -> str:
        return (
            f"AsyncRedisMaterializationStore(prefix={self._layout.prefix!r}, "
            f"ttl_seconds={self._layout.ttl_seconds})"
        )

    async def read(self, ops: Sequence[ReadOp]) -> list[ReadResult]:
        if not ops:
            return []
        layout = self._layout
        pairs = layout.read_keys(ops)
        async with self._client.pipeline(transaction=False) as pipe:
            for unit, materialization in pairs:
                key = layout.key(unit, materialization)
                pipe.hgetall(key)
                if layout.ttl_seconds is not None:
                    pipe.expire(key, layout.ttl_seconds)
            replies = await pipe.execute()
        return layout.results(ops, _hashes(pairs, replies, layout.ttl_seconds is not None))

    async def write(self, ops: Sequence[VariantWriteOp]) -> None:
        if not ops:
            return
        layout = self._layout
        async with self._client.pipeline(transaction=True) as pipe:
            for key, field, value in _write_commands(layout, ops):
                pipe.hset(key, field, value)
            if layout.ttl_seconds is not None:
                for key in dict.fromkeys(layout.key(op.unit, op.materialization) for op in ops):
                    pipe.expire(key, layout.ttl_seconds)
            await pipe.execute()

    async def aclose(self) -> None:
        """Close the client if the store created it."""
        if self._owns_client:
            await self._client.aclose()


def _hashes(
    pairs: list[tuple[str, str]],
    replies: list[Any],
    with_expire: bool,  # Any: redis replies
) -> dict[tuple[str, str], dict[str, str]]:
    step = 2 if with_expire else 1
    return {pair: _decode_hash(replies[i * step]) for i, pair in enumerate(pairs)}


def _write_commands(layout: _Layout, ops: Sequence[VariantWriteOp]) -> list[tuple[str, str, str]]:
    return [(layout.key(op.unit, op.materialization), op.rule, op.variant) for op in ops]
