"""The remote materialization store against the Confidence emulator's materialization routes."""

from __future__ import annotations

import socket
import time

import aiohttp
import pytest

from confidence._proto.confidence.flags.resolver.v1 import api_pb2
from confidence.materialization import (
    AsyncRemoteMaterializationStore as RemoteMaterializationStore,
)
from confidence.materialization import (
    InclusionReadOp,
    InclusionReadResult,
    RemoteMaterializationError,
    VariantReadOp,
    VariantReadResult,
    VariantWriteOp,
)
from confidence.testing.emulator import (
    ConfidenceEmulator,
    DropConnection,
    GarbageBody,
    Hang,
    Route,
    Status,
)

pytestmark = pytest.mark.anyio

SECRET = "remote-store-test-secret-do-not-leak"
MAT = "materializations/sticky"
RULE = "flags/f/rules/r1"


def _store(emulator_async: ConfidenceEmulator, **kwargs: object) -> RemoteMaterializationStore:
    return RemoteMaterializationStore(
        SECRET,
        api_base_url=emulator_async.api_base_url,
        **kwargs,  # type: ignore[arg-type]
    )


def _assert_no_secret(exc: BaseException) -> None:
    for text in (str(exc), repr(exc), str(exc.__cause__), str(exc.__context__)):
        assert SECRET not in text


async def test_read_sends_protobuf_with_auth_and_maps_results(
    emulator_async: ConfidenceEmulator,
) -> None:
    emulator_async.set_materialized_variant("u1", MAT, RULE, "treatment")
    async with _store(emulator_async) as store:
        results = await store.read(
            [
                VariantReadOp("u1", MAT, RULE),
                InclusionReadOp("u1", MAT),
                VariantReadOp("u2", MAT, RULE),
                InclusionReadOp("u2", MAT),
            ]
        )
    assert results == [
        VariantReadResult("u1", MAT, RULE, "treatment"),
        InclusionReadResult("u1", MAT, True),
        VariantReadResult("u2", MAT, RULE, None),  # "" on the wire: no variant
        InclusionReadResult("u2", MAT, False),
    ]
    (request,) = emulator_async.requests_for(Route.MATERIALIZATION_READ)
    assert request.method == "POST"
    assert request.path == "/v1/materialization:readMaterializedOperations"
    assert request.header("Authorization") == f"ClientSecret {SECRET}"
    assert request.header("Content-Type") == "application/x-protobuf"
    sent = api_pb2.ReadOperationsRequest.FromString(request.body)
    assert [op.WhichOneof("op") for op in sent.ops] == [
        "variant_read_op",
        "inclusion_read_op",
        "variant_read_op",
        "inclusion_read_op",
    ]
    assert sent.ops[0].variant_read_op == api_pb2.VariantReadOp(
        unit="u1", materialization=MAT, rule=RULE
    )
    assert sent.ops[1].inclusion_read_op == api_pb2.InclusionReadOp(unit="u1", materialization=MAT)
    # The ops travel in field 3 (not 1), as Confidence's API declares.
    assert request.body[0] == (3 << 3) | 2


async def test_write_sends_variant_data(emulator_async: ConfidenceEmulator) -> None:
    async with _store(emulator_async) as store:
        await store.write(
            [VariantWriteOp("u1", MAT, RULE, "on"), VariantWriteOp("u2", MAT, "", "")]
        )
    (request,) = emulator_async.requests_for(Route.MATERIALIZATION_WRITE)
    assert request.path == "/v1/materialization:writeMaterializedOperations"
    assert request.header("Authorization") == f"ClientSecret {SECRET}"
    assert request.header("Content-Type") == "application/x-protobuf"
    sent = api_pb2.WriteOperationsRequest.FromString(request.body)
    assert list(sent.store_variant_op) == [
        api_pb2.VariantData(unit="u1", materialization=MAT, rule=RULE, variant="on"),
        api_pb2.VariantData(unit="u2", materialization=MAT, rule="", variant=""),
    ]
    assert emulator_async.materialized_variants[("u1", MAT, RULE)] == "on"


async def test_empty_ops_make_no_request(emulator_async: ConfidenceEmulator) -> None:
    async with _store(emulator_async) as store:
        assert await store.read([]) == []
        await store.write([])
    assert emulator_async.requests == []


async def test_hanging_server_times_out_with_a_clear_error(
    emulator_async: ConfidenceEmulator,
) -> None:
    emulator_async.inject(Route.MATERIALIZATION_READ, Hang())
    async with _store(emulator_async, read_timeout=0.2, attempts=2, backoff=0.05) as store:
        started = time.monotonic()
        with pytest.raises(RemoteMaterializationError) as info:
            await store.read([InclusionReadOp("u1", MAT)])
        elapsed = time.monotonic() - started
    # Bounded by attempts x timeout + backoff; the margin is only for a slow CI machine.
    assert elapsed < 5.0
    err = info.value
    assert "timed out after 0.2s" in str(err)
    assert "read" in str(err) and "after 2 attempts" in str(err)
    assert (err.operation, err.attempts, err.status, err.retryable) == ("read", 2, None, True)
    assert len(emulator_async.requests_for(Route.MATERIALIZATION_READ)) == 2
    _assert_no_secret(err)


async def test_write_timeout_is_its_own(emulator_async: ConfidenceEmulator) -> None:
    emulator_async.inject(Route.MATERIALIZATION_WRITE, Hang())
    async with _store(emulator_async, write_timeout=0.1, attempts=1) as store:
        with pytest.raises(RemoteMaterializationError, match=r"write failed after 1 attempt: "):
            await store.write([VariantWriteOp("u1", MAT, RULE, "on")])


async def test_transient_failures_are_retried(emulator_async: ConfidenceEmulator) -> None:
    emulator_async.set_inclusion("u1", MAT)
    emulator_async.inject(Route.MATERIALIZATION_READ, Status(503), times=1)
    emulator_async.inject(Route.MATERIALIZATION_READ, DropConnection(), times=1)
    emulator_async.inject(
        Route.MATERIALIZATION_READ, Status(429, headers=(("Retry-After", "0"),)), times=1
    )
    async with _store(emulator_async, attempts=4, backoff=0.01) as store:
        assert await store.read([InclusionReadOp("u1", MAT)]) == [
            InclusionReadResult("u1", MAT, True)
        ]
    assert len(emulator_async.requests_for(Route.MATERIALIZATION_READ)) == 4


async def test_client_errors_are_not_retried(emulator_async: ConfidenceEmulator) -> None:
    async with RemoteMaterializationStore(
        "wrong-secret-also-secret", api_base_url=emulator_async.api_base_url, attempts=3
    ) as store:
        with pytest.raises(RemoteMaterializationError) as info:
            await store.read([InclusionReadOp("u1", MAT)])
    err = info.value
    assert (err.status, err.attempts, err.retryable) == (401, 1, False)
    assert "HTTP 401" in str(err)
    assert "wrong-secret-also-secret" not in str(err) + repr(err)
    assert len(emulator_async.requests_for(Route.MATERIALIZATION_READ)) == 1


async def test_persistent_server_error_gives_up_after_attempts(
    emulator_async: ConfidenceEmulator,
) -> None:
    emulator_async.inject(Route.MATERIALIZATION_WRITE, Status(500))
    async with _store(emulator_async, attempts=3, backoff=0.01) as store:
        with pytest.raises(RemoteMaterializationError) as info:
            await store.write([VariantWriteOp("u1", MAT, RULE, "on")])
    assert (info.value.status, info.value.attempts) == (500, 3)
    assert "HTTP 500" in str(info.value) and emulator_async.api_base_url in str(info.value)
    _assert_no_secret(info.value)


async def test_garbage_response_body(emulator_async: ConfidenceEmulator) -> None:
    emulator_async.inject(Route.MATERIALIZATION_READ, GarbageBody())
    async with _store(emulator_async) as store:
        with pytest.raises(RemoteMaterializationError, match="not a ReadOperationsResult"):
            await store.read([InclusionReadOp("u1", MAT)])


async def test_unreachable_server_fails_fast(anyio_backend: str) -> None:
    with socket.socket() as s:  # a port with nothing listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    async with RemoteMaterializationStore(
        SECRET, api_base_url=f"http://127.0.0.1:{port}", attempts=2, backoff=0.01
    ) as store:
        with pytest.raises(RemoteMaterializationError, match="connection failed") as info:
            await store.read([InclusionReadOp("u1", MAT)])
    _assert_no_secret(info.value)


async def test_session_ownership(emulator_async: ConfidenceEmulator) -> None:
    async with aiohttp.ClientSession() as session:
        store = _store(emulator_async, session=session)
        await store.write([VariantWriteOp("u1", MAT, RULE, "on")])
        await store.aclose()
        assert not session.closed  # shared: the caller closes it
    own = _store(emulator_async)
    await own.write([VariantWriteOp("u1", MAT, RULE, "on")])
    await own.aclose()
    await own.aclose()  # idempotent
    with pytest.raises(RemoteMaterializationError, match="closed"):
        await own.read([InclusionReadOp("u1", MAT)])


def test_constructor_validation_never_echoes_the_secret() -> None:
    with pytest.raises(ValueError) as info:
        RemoteMaterializationStore("bad\nsecret-value")
    assert "secret-value" not in str(info.value)
    with pytest.raises(ValueError):
        RemoteMaterializationStore(SECRET, attempts=0)
    with pytest.raises(ValueError):
        RemoteMaterializationStore(SECRET, read_timeout=0)
    store = RemoteMaterializationStore(SECRET, api_base_url="https://user:pw@example.test/")
    assert SECRET not in repr(store) and "pw" not in repr(store)
    assert repr(store) == "RemoteMaterializationStore(api_base_url='https://example.test')"
