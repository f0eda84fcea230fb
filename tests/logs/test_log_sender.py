"""Flag-log delivery against the real emulator (protocol §3.5, §3.6)."""

from __future__ import annotations

import email.utils
import logging
import time
import warnings
from typing import Any

import aiohttp
import anyio
import pytest

from confidence._logs.sender import (
    LOG_DESTINATION_CLOUDFLARE,
    LOG_DESTINATION_SPOTIFY_EDGE,
    LogSender,
    RetryPolicy,
    parse_retry_after,
)
from confidence._proto.confidence.flags.resolver.v1 import api_pb2
from confidence.testing.emulator import (
    ConfidenceEmulator,
    DropConnection,
    Hang,
    Route,
    Status,
    TruncatedBody,
)

pytestmark = pytest.mark.anyio

SECRET = "log-sender-secret-ABC123"
FAST = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=0.05, attempt_timeout=2.0)


def _batch(flag: str = "flags/a", variant: str = "flags/a/variants/on") -> Any:
    request = api_pb2.WriteFlagLogsRequest()
    assigned = request.flag_assigned.add(resolve_id="r1")
    assigned.flags.add(flag=flag, targeting_key="user-1").assignment_info.variant = variant
    info = request.flag_resolve_info.add(flag=flag)
    info.variant_resolve_info.add(variant=variant, count=2)
    request.telemetry_data.resolver_version = "test"
    return request


class RecordingSleep:
    """Injected sleep: records delays and returns at once (keeps retry tests instant)."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await anyio.sleep(0)


def make_sender(
    emu: ConfidenceEmulator, session: aiohttp.ClientSession, **kwargs: Any
) -> LogSender:
    kwargs.setdefault("retry", FAST)
    return LogSender(
        client_secret=kwargs.pop("client_secret", SECRET),
        session=session,
        api_base_url=emu.api_base_url,
        cloudflare_base_url=emu.cloudflare_base_url,
        **kwargs,
    )


# -- success -----------------------------------------------------------------------------------


async def test_send_to_edge(
    emulator_async: ConfidenceEmulator, session: aiohttp.ClientSession
) -> None:
    batch = _batch()
    sender = make_sender(emulator_async, session)
    assert sender.destinations == (LOG_DESTINATION_SPOTIFY_EDGE,)

    assert await sender.send(batch.SerializeToString()) is True

    (request,) = emulator_async.requests_for(Route.FLAG_LOGS)
    assert request.method == "POST" and request.path == "/v1/clientFlagLogs:write"
    assert request.header("Authorization") == f"ClientSecret {SECRET}"
    assert request.header("Content-Type") == "application/x-protobuf"
    assert emulator_async.flag_logs == [batch]
    assert emulator_async.exposure_count() == 1
    assert emulator_async.resolve_counts() == {"flags/a": {"flags/a/variants/on": 2}}
    assert emulator_async.requests_for(Route.INGEST) == []


async def test_cloudflare_wrapping(
    emulator_async: ConfidenceEmulator, session: aiohttp.ClientSession
) -> None:
    batch = _batch()
    sender = make_sender(emulator_async, session)
    sender.set_routing("acct-42", [LOG_DESTINATION_CLOUDFLARE])

    assert await sender.send(batch.SerializeToString()) is True

    (request,) = emulator_async.requests_for(Route.INGEST)
    assert request.path == "/v1/flagLogs:ingest"
    assert request.header("Authorization") == f"ClientSecret {SECRET}"
    assert request.header("Content-Type") == "application/protobuf"
    (ingested,) = emulator_async.ingested
    assert ingested.account_id == "acct-42"
    assert ingested.batch == batch
    assert emulator_async.flag_logs == []
    assert emulator_async.all_flag_log_batches() == [batch]


async def test_routing_follows_latest_state(
    emulator_async: ConfidenceEmulator, session: aiohttp.ClientSession
) -> None:
    sender = make_sender(emulator_async, session, account_id="a", log_destinations=[2])
    await sender.send(b"")
    sender.set_routing("a", [])  # an empty list means Spotify Edge again
    await sender.send(b"")
    sender.set_routing("a", [7])  # unknown values go to Edge too
    await sender.send(b"")
    assert len(emulator_async.requests_for(Route.INGEST)) == 1
    assert len(emulator_async.requests_for(Route.FLAG_LOGS)) == 2


# -- retries ------------------------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503, 504, 408, 429])
async def test_retries_on_retryable_status_then_success(
    emulator_async: ConfidenceEmulator, session: aiohttp.ClientSession, status: int
) -> None:
    emulator_async.inject(Route.FLAG_LOGS, Status(status), times=2)
    sleep = RecordingSleep()
    sender = make_sender(emulator_async, session, sleep=sleep)

    assert await sender.send(_batch().SerializeToString()) is True

    assert len(emulator_async.requests_for(Route.FLAG_LOGS)) == 3
    assert len(emulator_async.flag_logs) == 1
    assert len(sleep.delays) == 2


async def test_backoff_grows_with_jitter_and_cap() -> None:
    policy = RetryPolicy(base_delay=0.5, multiplier=2.0, max_delay=3.0, jitter=0.1)
    nominal = [0.5, 1.0, 2.0, 3.0, 3.0]
    for retry, expected in enumerate(nominal, start=1):
        assert policy.delay(retry, lambda: 0.5) == pytest.approx(expected)
        assert policy.delay(retry, lambda: 0.0) == pytest.approx(expected * 0.9)
        assert policy.delay(retry, lambda: 0.999999) == pytest.approx(expected * 1.1, rel=1e-5)


async def test_retry_delays_used_between_attempts(
    emulator_async: ConfidenceEmulator, session: aiohttp.ClientSession
) -> None:
    emulator_async.inject(Route.FLAG_LOGS, Status(503))
    sleep = RecordingSleep()
    policy = RetryPolicy(max_attempts=4, base_delay=1.0, max_delay=10.0, jitter=0.1)
    sender = make_sender(emulator_async, session, retry=policy, sleep=sleep)

    assert await sender.send(b"") is False

    assert len(emulator_async.requests_for(Route.FLAG_LOGS)) == 4
    assert len(sleep.delays) == 3  # no sleep after the last attempt
    for delay, nominal in zip(sleep.delays, [1.0, 2.0, 4.0], strict=True):
        assert nominal * 0.9 <= delay <= nominal * 1.1


async def test_retry_after_seconds_is_honoured_and_capped(
    emulator_async: ConfidenceEmulator, session: aiohttp.ClientSession
) -> None:
    emulator_async.inject(Route.FLAG_LOGS, Status(429, headers=(("Retry-After", "3"),)), times=1)
    emulator_async.inject(Route.FLAG_LOGS, Status(503, headers=(("Retry-After", "120"),)), times=1)
    sleep = RecordingSleep()
    policy = RetryPolicy(max_attempts=3, base_delay=0.01, max_delay=10.0)
    sender = make_sender(emulator_async, session, retry=policy, sleep=sleep)

    assert await sender.send(b"") is True
    assert sleep.delays == [3.0, 10.0]


@pytest.mark.parametrize("status", [400, 401, 403, 404, 413])
async def test_no_retry_on_other_4xx(
    emulator_async: ConfidenceEmulator, session: aiohttp.ClientSession, status: int
) -> None:
    emulator_async.inject(Route.FLAG_LOGS, Status(status))
    sleep = RecordingSleep()
    sender = make_sender(emulator_async, session, sleep=sleep)
    assert await sender.send(b"") is False
    assert len(emulator_async.requests_for(Route.FLAG_LOGS)) == 1
    assert sleep.delays == []


async def test_wrong_secret_is_rejected_without_retry(
    emulator_async: ConfidenceEmulator, session: aiohttp.ClientSession
) -> None:
    sender = make_sender(emulator_async, session, client_secret="not-the-secret")
    assert await sender.send(b"") is False
    assert len(emulator_async.requests_for(Route.FLAG_LOGS)) == 1
    assert emulator_async.flag_logs == []


async def test_attempts_are_bounded(
    emulator_async: ConfidenceEmulator, session: aiohttp.ClientSession
) -> None:
    emulator_async.inject(Route.FLAG_LOGS, Status(500))
    sender = make_sender(emulator_async, session)
    assert await sender.send(b"") is False
    assert len(emulator_async.requests_for(Route.FLAG_LOGS)) == FAST.max_attempts


async def test_per_attempt_timeout_then_success(
    emulator_async: ConfidenceEmulator, session: aiohttp.ClientSession
) -> None:
    emulator_async.inject(Route.FLAG_LOGS, Hang(), times=1)
    policy = RetryPolicy(max_attempts=2, base_delay=0.01, attempt_timeout=1.0)
    sender = make_sender(emulator_async, session, retry=policy)
    start = anyio.current_time()
    assert await sender.send(_batch().SerializeToString()) is True
    assert anyio.current_time() - start < 5.0
    assert len(emulator_async.requests_for(Route.FLAG_LOGS)) == 2
    assert len(emulator_async.flag_logs) == 1


async def test_timeouts_exhaust_attempts(
    emulator_async: ConfidenceEmulator, session: aiohttp.ClientSession
) -> None:
    emulator_async.inject(Route.FLAG_LOGS, Hang())
    policy = RetryPolicy(max_attempts=2, base_delay=0.01, attempt_timeout=0.2)
    sender = make_sender(emulator_async, session, retry=policy)
    assert await sender.send(b"") is False
    assert len(emulator_async.requests_for(Route.FLAG_LOGS)) == 2


@pytest.mark.parametrize("fault", [DropConnection(), TruncatedBody()])
async def test_connection_errors_are_retried(
    emulator_async: ConfidenceEmulator, session: aiohttp.ClientSession, fault: Any
) -> None:
    emulator_async.inject(Route.FLAG_LOGS, fault, times=1)
    sender = make_sender(emulator_async, session)
    assert await sender.send(_batch().SerializeToString()) is True
    assert len(emulator_async.requests_for(Route.FLAG_LOGS)) == 2


async def test_connection_refused_is_a_failure(session: aiohttp.ClientSession) -> None:
    async with ConfidenceEmulator() as emu:
        base = emu.api_base_url
    sender = LogSender(client_secret=SECRET, session=session, api_base_url=base, retry=FAST)
    assert await sender.send(b"") is False


# -- primary / fallback --------------------------------------------------------------------------


async def test_fallback_when_primary_fails(
    emulator_async: ConfidenceEmulator, session: aiohttp.ClientSession
) -> None:
    emulator_async.inject(Route.INGEST, Status(500))
    sender = make_sender(emulator_async, session)
    sender.set_routing("acct", [LOG_DESTINATION_CLOUDFLARE, LOG_DESTINATION_SPOTIFY_EDGE])
    batch = _batch()

    assert await sender.send(batch.SerializeToString()) is True

    assert len(emulator_async.requests_for(Route.INGEST)) == FAST.max_attempts
    assert emulator_async.flag_logs == [batch]


async def test_fallback_after_permanent_primary_failure(
    emulator_async: ConfidenceEmulator, session: aiohttp.ClientSession
) -> None:
    emulator_async.inject(Route.FLAG_LOGS, Status(400))
    sender = make_sender(emulator_async, session)
    sender.set_routing("acct", [LOG_DESTINATION_SPOTIFY_EDGE, LOG_DESTINATION_CLOUDFLARE])
    assert await sender.send(b"") is True
    assert len(emulator_async.requests_for(Route.FLAG_LOGS)) == 1
    assert len(emulator_async.ingested) == 1


async def test_no_fallback_when_primary_succeeds_and_extra_entries_ignored(
    emulator_async: ConfidenceEmulator, session: aiohttp.ClientSession
) -> None:
    sender = make_sender(emulator_async, session)
    sender.set_routing("acct", [2, 1, 2, 1])
    assert sender.destinations == (2, 1)
    assert await sender.send(b"") is True
    assert len(emulator_async.ingested) == 1 and emulator_async.requests_for(Route.FLAG_LOGS) == []


async def test_both_destinations_failing(
    emulator_async: ConfidenceEmulator, session: aiohttp.ClientSession
) -> None:
    emulator_async.inject(Route.INGEST, Status(503))
    emulator_async.inject(Route.FLAG_LOGS, Status(503))
    sender = make_sender(emulator_async, session)
    sender.set_routing("acct", [2, 1])
    assert await sender.send(b"") is False


# -- Retry-After parsing ----------------------------------------------------------------------


def test_parse_retry_after() -> None:
    now = time.time()
    assert parse_retry_after(None) is None
    assert parse_retry_after("5") == 5.0
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-3") == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after("nan") is None
    http_date = email.utils.formatdate(now + 30, usegmt=True)
    assert parse_retry_after(http_date, now=now) == pytest.approx(30, abs=1.5)
    past = email.utils.formatdate(now - 30, usegmt=True)
    assert parse_retry_after(past, now=now) == 0.0


# -- secrets ------------------------------------------------------------------------------------


async def test_secret_only_in_authorization_header_and_never_logged(
    emulator_async: ConfidenceEmulator,
    session: aiohttp.ClientSession,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    sender = make_sender(
        emulator_async,
        session,
        retry=RetryPolicy(max_attempts=2, base_delay=0.01, attempt_timeout=0.3),
    )
    await sender.send(_batch().SerializeToString())
    for fault in (Status(503), Status(400), Hang(), DropConnection()):
        emulator_async.inject(Route.FLAG_LOGS, fault)
        await sender.send(b"")
        emulator_async.clear_faults()
    sender.set_routing("acct", [2])
    emulator_async.inject(Route.INGEST, Status(500))
    await sender.send(b"")
    refused = LogSender(
        client_secret=SECRET, session=session, api_base_url="http://127.0.0.1:9", retry=FAST
    )
    await refused.send(b"")

    assert "failed" in caplog.text
    assert SECRET not in caplog.text
    for request in emulator_async.requests:
        assert SECRET not in request.path
        assert SECRET.encode() not in request.body
        carrying = [name for name, value in request.headers if SECRET in value]
        assert carrying == ["Authorization"]


async def test_closed_session_is_a_failure_not_a_crash(emulator_async: ConfidenceEmulator) -> None:
    session = aiohttp.ClientSession()
    await session.close()
    sleep = RecordingSleep()
    sender = make_sender(emulator_async, session, sleep=sleep)
    assert await sender.send(b"") is False
    assert sleep.delays == []  # not retried


async def test_large_batches_are_sent_without_warnings(
    emulator_async: ConfidenceEmulator, session: aiohttp.ClientSession
) -> None:
    request = api_pb2.WriteFlagLogsRequest()
    for i in range(20_000):
        request.flag_assigned.add(resolve_id=f"resolve-{i:032d}").flags.add(flag="flags/big")
    body = request.SerializeToString()
    assert len(body) > 1024 * 1024
    emulator_async.inject(Route.FLAG_LOGS, Status(503), times=1)  # the retry must resend the body
    sender = make_sender(emulator_async, session)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert await sender.send(body) is True
    assert [len(r.body) for r in emulator_async.requests_for(Route.FLAG_LOGS)] == [len(body)] * 2
    assert emulator_async.exposure_count("big") == 20_000
