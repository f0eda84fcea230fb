"""The Confidence emulator itself: routes, records, faults, sync usage and the CLI."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest

from confidence._proto.confidence.flags.admin.v1 import resolver_pb2
from confidence._proto.confidence.flags.resolver.v1 import api_pb2
from confidence._state.crypto import decrypt_state, encrypt_state
from confidence._state.sync import secret_hash
from confidence._wasm.protowire import decode_client_resolver_state, encode_client_resolver_state
from confidence.testing.emulator import (
    ConfidenceEmulator,
    Delay,
    DropConnection,
    GarbageBody,
    Hang,
    Route,
    Status,
    TruncatedBody,
    _load_state_file,
)

SECRET = "emulator-test-secret"
PB = "application/x-protobuf"


def _auth(secret: str = SECRET) -> dict[str, str]:
    return {"Authorization": f"ClientSecret {secret}", "Content-Type": PB}


# -- state CDN ---------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_state_routes(anyio_backend: str) -> None:
    async with ConfidenceEmulator(client_secret=SECRET) as emu, aiohttp.ClientSession() as s:
        async with s.get(emu.state_url()) as resp:
            assert resp.status == 404  # nothing served yet
        emu.set_state(b"resolver-state", account_id="acct", log_destinations=(2, 1))

        async with s.get(emu.state_url(encrypted=True)) as resp:
            assert resp.status == 200
            etag = resp.headers["ETag"]
            body = await resp.read()
        assert etag == emu.current_etag() and etag.startswith('"') and not etag.startswith("W/")
        decoded = resolver_pb2.ClientResolverState.FromString(
            decrypt_state(body, emu.encryption_key)
        )
        assert (decoded.state, decoded.account, list(decoded.log_destinations)) == (
            b"resolver-state",
            "acct",
            [2, 1],
        )

        async with s.get(emu.state_url(encrypted=False)) as resp:
            plain = await resp.read()
            assert resp.headers["ETag"] == emu.current_etag(encrypted=False) != etag
        assert decode_client_resolver_state(plain).state == b"resolver-state"

        for inm in (etag, f"W/{etag}", f'"other", {etag}', "*"):
            async with s.get(emu.state_url(), headers={"If-None-Match": inm}) as resp:
                assert resp.status == 304, inm
                assert resp.headers["ETag"] == etag
        async with s.get(emu.state_url(), headers={"If-None-Match": '"stale"'}) as resp:
            assert resp.status == 200

        async with s.get(f"{emu.base_url}/{'0' * 64}.enc") as resp:
            assert resp.status == 404
        async with s.get(f"{emu.base_url}/{secret_hash(SECRET)}.json") as resp:
            assert resp.status == 404

        emu.clear_state()
        async with s.get(emu.state_url()) as resp:
            assert resp.status == 404


def test_set_state_changes_etag_and_key_forms() -> None:
    key_hex = "ab" * 32
    emu = ConfidenceEmulator(encryption_key=key_hex, state=b"s1")
    assert emu.encryption_key == bytes.fromhex(key_hex) and emu.encryption_key_hex == key_hex
    first_plain = emu.current_etag(encrypted=False)
    first_enc = emu.current_etag()
    emu.set_state(b"s1")
    assert emu.current_etag(encrypted=False) == first_plain  # same bytes, same strong ETag
    assert emu.current_etag() != first_enc  # re-encrypted with a fresh nonce
    emu.set_state(b"s2")
    assert emu.current_etag(encrypted=False) != first_plain
    with pytest.raises(ValueError):
        ConfidenceEmulator(encryption_key=b"short")
    with pytest.raises(ValueError):
        ConfidenceEmulator(encryption_key="zz")


# -- flag logs -----------------------------------------------------------------------------------


def _logs(*entries: tuple[str, str, int]) -> Any:
    request = api_pb2.WriteFlagLogsRequest()
    assigned = request.flag_assigned.add(resolve_id="rid")
    for flag, variant, count in entries:
        applied = assigned.flags.add(flag=flag, targeting_key="u")
        applied.assignment_info.variant = variant
        info = request.flag_resolve_info.add(flag=flag)
        info.variant_resolve_info.add(variant=variant, count=count)
    return request


@pytest.mark.anyio
async def test_flag_log_decoding_and_helpers(anyio_backend: str) -> None:
    async with ConfidenceEmulator(client_secret=SECRET) as emu, aiohttp.ClientSession() as s:
        url = f"{emu.api_base_url}/v1/clientFlagLogs:write"
        first = _logs(("flags/a", "flags/a/variants/on", 3), ("flags/b", "", 1))
        second = _logs(
            ("flags/a", "flags/a/variants/on", 2), ("flags/a", "flags/a/variants/off", 1)
        )
        for request in (first, second):
            async with s.post(url, data=request.SerializeToString(), headers=_auth()) as resp:
                assert resp.status == 200
                assert resp.content_type == PB
                assert await resp.read() == b""  # an empty WriteFlagLogsResponse
        ingest = api_pb2.IngestFlagLogsRequest(account_id="acct", batch=_logs(("flags/c", "v", 5)))
        async with s.post(
            f"{emu.cloudflare_base_url}/v1/flagLogs:ingest",
            data=ingest.SerializeToString(),
            headers={**_auth(), "Content-Type": "application/protobuf"},
        ) as resp:
            assert resp.status == 200

        assert emu.flag_logs == [first, second]
        assert emu.ingested == [ingest]
        assert emu.exposure_count() == 5
        assert emu.exposure_count("flags/a") == 3
        assert emu.exposure_count("a") == 3
        assert emu.exposure_count("flags/c") == 1
        assert emu.resolve_counts() == {
            "flags/a": {"flags/a/variants/on": 5, "flags/a/variants/off": 1},
            "flags/b": {"": 1},
            "flags/c": {"v": 5},
        }

        # Rejections are recorded as requests but not as flag logs.
        async with s.post(url, data=b"", headers=_auth("wrong")) as resp:
            assert resp.status == 401
        async with s.post(url, data=b"", headers={"Content-Type": PB}) as resp:
            assert resp.status == 401
        async with s.post(url, data=b"", headers={**_auth(), "Content-Type": "text/plain"}) as resp:
            assert resp.status == 415
        async with s.post(url, data=b"\x00garbage", headers=_auth()) as resp:
            assert resp.status == 400
        assert len(emu.flag_logs) == 2
        assert len(emu.requests_for(Route.FLAG_LOGS)) == 6

        emu.clear_records()
        assert emu.requests == [] and emu.flag_logs == [] and emu.exposure_count() == 0


@pytest.mark.anyio
async def test_large_flag_log_batch_is_accepted(anyio_backend: str) -> None:
    request = api_pb2.WriteFlagLogsRequest()
    for i in range(20_000):
        request.flag_assigned.add(resolve_id=f"resolve-{i:032d}").flags.add(flag="flags/big")
    body = request.SerializeToString()
    assert len(body) > 1024 * 1024  # over aiohttp's default request limit
    async with ConfidenceEmulator(client_secret=SECRET) as emu, aiohttp.ClientSession() as s:
        url = f"{emu.api_base_url}/v1/clientFlagLogs:write"
        async with s.post(url, data=io.BytesIO(body), headers=_auth()) as resp:
            assert resp.status == 200
        assert emu.exposure_count("big") == 20_000


def test_recorded_headers_are_raw(confidence_emulator_sync: ConfidenceEmulator) -> None:
    emu = confidence_emulator_sync
    req = urllib.request.Request(
        f"{emu.api_base_url}/v1/clientFlagLogs:write",
        data=b"",
        headers={
            "Authorization": f"ClientSecret {emu.client_secret}",
            "Content-Type": PB,
            "X-Custom": "1",
        },
        method="POST",
    )
    with urllib.request.urlopen(req, timeout=10) as resp:
        assert resp.status == 200
    (recorded,) = emu.requests
    names = [name for name, _ in recorded.headers]
    assert "Authorization" in names and "X-Custom" in names
    assert recorded.header("authorization") == f"ClientSecret {emu.client_secret}"
    assert recorded.header("missing") is None


# -- materialization ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_materialization_round_trip(anyio_backend: str) -> None:
    async with ConfidenceEmulator(client_secret=SECRET) as emu, aiohttp.ClientSession() as s:
        base = f"{emu.api_base_url}/v1/materialization"
        write = api_pb2.WriteOperationsRequest()
        write.store_variant_op.add(unit="u1", materialization="m1", rule="r1", variant="v1")
        async with s.post(
            f"{base}:writeMaterializedOperations",
            data=write.SerializeToString(),
            headers=_auth(),
        ) as resp:
            assert resp.status == 200
            assert api_pb2.WriteOperationsResult.FromString(await resp.read()) is not None
        emu.set_inclusion("u2", "segment-m")

        read = api_pb2.ReadOperationsRequest()
        read.ops.add().variant_read_op.CopyFrom(
            api_pb2.VariantReadOp(unit="u1", materialization="m1", rule="r1")
        )
        read.ops.add().variant_read_op.CopyFrom(
            api_pb2.VariantReadOp(unit="u9", materialization="m1", rule="r1")
        )
        read.ops.add().inclusion_read_op.CopyFrom(
            api_pb2.InclusionReadOp(unit="u2", materialization="segment-m")
        )
        read.ops.add().inclusion_read_op.CopyFrom(
            api_pb2.InclusionReadOp(unit="u3", materialization="segment-m")
        )
        read.ops.add().inclusion_read_op.CopyFrom(
            api_pb2.InclusionReadOp(unit="u1", materialization="m1")
        )
        async with s.post(
            f"{base}:readMaterializedOperations", data=read.SerializeToString(), headers=_auth()
        ) as resp:
            assert resp.status == 200
            result = api_pb2.ReadOperationsResult.FromString(await resp.read())

        assert [r.WhichOneof("result") for r in result.results] == [
            "variant_result",
            "variant_result",
            "inclusion_result",
            "inclusion_result",
            "inclusion_result",
        ]
        assert result.results[0].variant_result.variant == "v1"
        assert result.results[1].variant_result.variant == ""  # none stored
        assert result.results[1].variant_result.unit == "u9"
        assert [r.inclusion_result.is_included for r in result.results[2:]] == [True, False, True]

        assert emu.materialized_variants == {("u1", "m1", "r1"): "v1"}
        assert emu.materialization_writes == [write]
        assert emu.materialization_reads == [read]

        async with s.post(f"{base}:readMaterializedOperations", data=b"", headers=_auth("x")) as r:
            assert r.status == 401


# -- faults --------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_fault_queue_semantics(anyio_backend: str) -> None:
    async with ConfidenceEmulator(client_secret=SECRET, state=b"s") as emu:
        emu.inject(Route.STATE, Status(500), times=2)
        emu.inject("state", Status(418, body=b"teapot", headers=(("X-Why", "test"),)), times=1)
        async with aiohttp.ClientSession() as s:
            seen = []
            for _ in range(4):
                async with s.get(emu.state_url()) as resp:
                    seen.append(resp.status)
                    if resp.status == 418:
                        assert await resp.read() == b"teapot"
                        assert resp.headers["X-Why"] == "test"
            assert seen == [500, 500, 418, 200]

            emu.inject(Route.STATE, GarbageBody())  # until cleared
            for _ in range(3):
                async with s.get(emu.state_url()) as resp:
                    assert await resp.read() == GarbageBody().body
            emu.clear_faults(Route.STATE)
            async with s.get(emu.state_url()) as resp:
                assert resp.status == 200

            # Faults are per route.
            emu.inject(Route.FLAG_LOGS, Status(503))
            async with s.get(emu.state_url()) as resp:
                assert resp.status == 200
            emu.clear_faults()
        with pytest.raises(ValueError):
            emu.inject(Route.STATE, Status(500), times=0)
        with pytest.raises(ValueError):
            emu.inject("no-such-route", Status(500))


@pytest.mark.anyio
async def test_delay_then_normal_answer(anyio_backend: str) -> None:
    async with ConfidenceEmulator(state=b"s") as emu, aiohttp.ClientSession() as s:
        emu.inject(Route.STATE, Delay(0.2), times=1)
        start = anyio.current_time()
        async with s.get(emu.state_url()) as resp:
            assert resp.status == 200
        assert anyio.current_time() - start >= 0.19


@pytest.mark.anyio
async def test_dropped_connection(anyio_backend: str) -> None:
    async with ConfidenceEmulator(state=b"s") as emu, aiohttp.ClientSession() as s:
        emu.inject(Route.STATE, DropConnection())
        with pytest.raises(aiohttp.ClientError):
            async with s.get(emu.state_url()) as resp:
                await resp.read()


@pytest.mark.anyio
async def test_hang_is_released_quickly_on_shutdown(anyio_backend: str) -> None:
    emu = ConfidenceEmulator(state=b"s")
    async with aiohttp.ClientSession() as s:
        await emu.start()
        emu.inject(Route.STATE, Hang())
        errors: list[BaseException] = []

        async def client() -> None:
            try:
                async with s.get(emu.state_url()) as resp:
                    await resp.read()
            except aiohttp.ClientError as exc:
                errors.append(exc)

        async with anyio.create_task_group() as tg:
            tg.start_soon(client)
            with anyio.fail_after(10):
                while not emu.requests:
                    await anyio.sleep(0.01)
            start = anyio.current_time()
            await emu.stop()
            assert anyio.current_time() - start < 5.0
        assert errors  # the client saw the connection go away


@pytest.mark.anyio
async def test_fixture(confidence_emulator: ConfidenceEmulator) -> None:
    confidence_emulator.set_state(b"x")
    async with aiohttp.ClientSession() as s, s.get(confidence_emulator.state_url()) as resp:
        assert resp.status == 200
    assert confidence_emulator.cdn_base_url.startswith("http://127.0.0.1:")
    assert confidence_emulator.api_base_url == confidence_emulator.cdn_base_url


def test_run_in_thread_for_sync_code() -> None:
    emu = ConfidenceEmulator(client_secret=SECRET)
    with emu.run_in_thread() as running:
        assert running is emu
        running.set_state(b"sync-state", account_id="acct")
        with urllib.request.urlopen(running.state_url(encrypted=False), timeout=10) as resp:
            assert decode_client_resolver_state(resp.read()).account == "acct"
        running.inject(Route.STATE, Status(503), times=1)
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(running.state_url(), timeout=10)
        assert info.value.code == 503
        info.value.close()  # an HTTPError holds the open response
        assert len(running.requests_for(Route.STATE)) == 2
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(emu.state_url(), timeout=2)


# -- CLI -------------------------------------------------------------------------------------


def test_state_file_format_detection() -> None:
    key = bytes(range(32))
    resolver_state = _fake_resolver_state()
    client = encode_client_resolver_state(resolver_state, "acct", (2,))
    assert _load_state_file(resolver_state, "auto", key) == ("resolver-state", resolver_state)
    assert _load_state_file(client, "auto", key) == ("client-state", client)
    assert _load_state_file(encrypt_state(client, key), "auto", key) == ("client-state", client)
    assert _load_state_file(client, "resolver-state", key) == ("resolver-state", client)


def _fake_resolver_state() -> bytes:
    # Shaped like a ResolverState: flags (1), segments (2), clients (6), credentials (7).
    return (
        b"\x0a\x0cflags/xyz123"
        + b"\x12\x0bsegments/ab"
        + b"\x32\x09clients/c"
        + b"\x3a\x0fclients/c/creds"
    )


def test_cli_serves_a_state_file(tmp_path: Path) -> None:
    state_file = tmp_path / "state.pb"
    state_file.write_bytes(_fake_resolver_state())
    key_hex = "cd" * 32
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "confidence.testing.emulator",
            "--state",
            str(state_file),
            "--port",
            "0",
            "--secret",
            SECRET,
            "--encryption-key",
            key_hex,
            "--account",
            "cli-acct",
            "--log-destination",
            "2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline()
        assert first.startswith("Confidence emulator on http://127.0.0.1:"), first
        base = first.split(" on ", 1)[1].strip()
        url = f"{base}/{secret_hash(SECRET)}.enc"
        with urllib.request.urlopen(url, timeout=10) as resp:
            body = resp.read()
        decoded = decode_client_resolver_state(decrypt_state(body, bytes.fromhex(key_hex)))
        assert decoded.state == _fake_resolver_state()
        assert decoded.account == "cli-acct" and decoded.log_destinations == (2,)
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
            raise
        assert proc.stdout is not None and proc.stderr is not None
        proc.stdout.close()
        stderr = proc.stderr.read()
        proc.stderr.close()
    assert code == 0, stderr


def test_cli_rejects_bad_key(tmp_path: Path) -> None:
    state_file = tmp_path / "state.pb"
    state_file.write_bytes(b"x")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "confidence.testing.emulator",
            "--state",
            str(state_file),
            "--encryption-key",
            "not-a-key",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 1
    assert "64 hexadecimal" in result.stderr and "not-a-key" not in result.stderr


@pytest.mark.anyio
async def test_truncation_leaves_bodiless_responses_alone(anyio_backend: str) -> None:
    async with ConfidenceEmulator(state=b"s") as emu, aiohttp.ClientSession() as s:
        etag = emu.current_etag()
        assert etag is not None
        emu.inject(Route.STATE, TruncatedBody())
        async with s.get(emu.state_url(), headers={"If-None-Match": etag}) as resp:
            assert resp.status == 304
        with pytest.raises(aiohttp.ClientPayloadError):
            async with s.get(emu.state_url()) as resp:
                await resp.read()


def test_cli_logs_each_request_and_summarizes_at_exit(tmp_path: Path) -> None:
    """A provider beside `python -m confidence.testing.emulator` can see what arrived."""
    from openfeature.evaluation_context import EvaluationContext

    from confidence import ConfidenceProvider
    from tests.provider_support import sample_state

    state_file = tmp_path / "state.pb"
    state_file.write_bytes(sample_state(secret=SECRET).build_client_state())
    key_hex = "ab" * 32
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "confidence.testing.emulator",
            "--state",
            str(state_file),
            "--secret",
            SECRET,
            "--encryption-key",
            key_hex,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
        cwd=Path(__file__).resolve().parents[2],
    )
    try:
        assert proc.stdout is not None
        base = proc.stdout.readline().split(" on ", 1)[1].strip()
        provider = ConfidenceProvider(
            SECRET,
            encryption_key=key_hex,
            cdn_base_url=base,
            api_base_url=base,
            events_base_url=base,
            log_poll_interval=60.0,
        )
        provider.initialize(EvaluationContext())
        try:
            ctx = EvaluationContext("user-1", {"country": "SE"})
            for _ in range(3):
                assert provider.resolve_boolean_details("swedish.enabled", False, ctx).value is True
        finally:
            provider.shutdown()  # flushes: one flag-log request
    finally:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=20)
    assert proc.returncode == 0, err
    access = [line for line in out.splitlines() if line.startswith(("GET ", "POST "))]
    assert any(line.startswith("GET /") and " 200 " in line for line in access), out
    assert any(line.startswith("POST /v1/clientFlagLogs:write 200 ") for line in access), out
    # The access log shows only a prefix of the secret's hash. (The banner prints the full
    # state URL on purpose; whether communicate() still sees it after readline() depends on
    # how much the pipe had buffered, so it is left out of this check.)
    assert all(secret_hash(SECRET) not in line for line in access), access
    summary = out.split("summary:", 1)[1]
    assert "flag-log requests: 1 (1 accepted)" in summary, summary
    assert "exposures: 1" in summary and "resolve counts: 3" in summary, summary
    assert "state fetches: " in summary and "events: 0" in summary
