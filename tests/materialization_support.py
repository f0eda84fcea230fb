"""Shared helpers for the materialization tests: a real redis-server, uniform store access.

Fixtures here are imported by the test modules that use them (not via conftest.py).
"""

from __future__ import annotations

import inspect
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from confidence.materialization import (
    InMemoryMaterializationStore,
    ReadOp,
    ReadResult,
    VariantWriteOp,
)

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"
SUITE = SHARED / "conformance"


def wasm_available() -> bool:
    return (REPO / "resolver.wasm").is_file() or (REPO / "confidence" / "resolver.wasm").is_file()


requires_wasm = pytest.mark.skipif(
    not wasm_available(), reason="resolver.wasm is not built yet (run `nox -s wasm`)"
)
requires_suite = pytest.mark.skipif(
    not (SUITE / "cases.json").is_file(),
    reason="../shared/conformance is not present (it ships only with the team's workspace and CI)",
)


# -- redis-server ----------------------------------------------------------------------------


@dataclass(frozen=True)
class RedisServer:
    host: str
    port: int

    @property
    def url(self) -> str:
        return f"redis://{self.host}:{self.port}/0"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _wait_for_redis(proc: subprocess.Popen[bytes], port: int, timeout: float) -> bool:
    import redis

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return False
        try:
            client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=0.5)
            try:
                if client.ping():
                    return True
            finally:
                client.close()
        except (redis.ConnectionError, redis.TimeoutError):
            time.sleep(0.05)
    return False


def _die_with_parent() -> None:
    """In the child, before exec: on Linux, get SIGTERM when pytest dies, so a killed test
    run leaves no redis-server behind."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """A throwaway redis-server on 127.0.0.1 (random port, no persistence) for the session."""
    pytest.importorskip("redis", reason="redis-py is not installed (the `redis` extra)")
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.skip("redis-server is not on PATH (Debian: apt-get install -y redis-server)")
    workdir = tmp_path_factory.mktemp("redis")
    last_output = b""
    for _ in range(3):  # a free port can be taken between probing and binding: retry
        port = _free_port()
        proc = subprocess.Popen(
            [
                exe,
                "--port",
                str(port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
                "--daemonize",
                "no",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            preexec_fn=_die_with_parent,
        )
        if _wait_for_redis(proc, port, timeout=10.0):
            break
        proc.kill()
        last_output = proc.communicate(timeout=5)[0]
    else:
        pytest.fail(f"redis-server did not start: {last_output.decode(errors='replace')[-2000:]}")
    try:
        yield RedisServer("127.0.0.1", port)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)
        if proc.stdout is not None:
            proc.stdout.close()


def unique_prefix() -> str:
    return f"test:{uuid.uuid4().hex}:"


# -- any store, awaited uniformly ------------------------------------------------------------


class StoreHandle:
    """Drives a sync or an async store from async tests, the way FlagResolver does."""

    def __init__(self, kind: str, store: Any) -> None:
        self.kind = kind
        self.store = store
        self.is_async = inspect.iscoroutinefunction(getattr(store, "read", None))

    async def read(self, ops: Sequence[ReadOp]) -> list[ReadResult]:
        if self.is_async:
            results: list[ReadResult] = await self.store.read(list(ops))
            return results
        import anyio.to_thread

        return await anyio.to_thread.run_sync(self.store.read, list(ops))

    async def write(self, ops: Sequence[VariantWriteOp]) -> None:
        if self.is_async:
            await self.store.write(list(ops))
        else:
            import anyio.to_thread

            await anyio.to_thread.run_sync(self.store.write, list(ops))


STORE_KINDS = ("memory", "redis", "redis-async", "remote")


@asynccontextmanager
async def open_store(kind: str, request: pytest.FixtureRequest) -> AsyncIterator[StoreHandle]:
    """An empty store of `kind`, closed on exit."""
    if kind == "memory":
        yield StoreHandle(kind, InMemoryMaterializationStore())
    elif kind in ("redis", "redis-async"):
        server: RedisServer = request.getfixturevalue("redis_server")
        from confidence.redis_store import AsyncRedisMaterializationStore, RedisMaterializationStore

        if kind == "redis":
            sync_store = RedisMaterializationStore(url=server.url, prefix=unique_prefix())
            try:
                yield StoreHandle(kind, sync_store)
            finally:
                sync_store.close()
        else:
            async_store = AsyncRedisMaterializationStore(url=server.url, prefix=unique_prefix())
            try:
                yield StoreHandle(kind, async_store)
            finally:
                await async_store.aclose()
    elif kind == "remote":
        from confidence.materialization import (
            AsyncRemoteMaterializationStore as RemoteMaterializationStore,
        )
        from confidence.testing.emulator import ConfidenceEmulator

        async with (
            ConfidenceEmulator() as emulator,
            RemoteMaterializationStore(
                emulator.client_secret,
                api_base_url=emulator.api_base_url,
                read_timeout=5.0,
                write_timeout=5.0,
            ) as remote,
        ):
            handle = StoreHandle(kind, remote)
            handle.emulator = emulator  # type: ignore[attr-defined]
            yield handle
    else:  # pragma: no cover
        raise ValueError(kind)
