"""The one outbound HTTP layer (`confidence._http`): every client classifies, retries and
authorizes the same way, against the real emulator on 127.0.0.1."""

from __future__ import annotations

import email.utils
import random
from collections.abc import Awaitable, Callable
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web

from confidence import _http
from confidence._http import FailureKind, HttpFailure, RetryPolicy, classify_status
from confidence._logs.sender import LogSender
from confidence._logs.tracking import EventPublisher, EventQueue
from confidence._proto.confidence.flags.resolver.v1 import api_pb2
from confidence._remote_materialization import (
    RemoteMaterializationError,
    RemoteMaterializationStore,
)
from confidence._state.sync import StateSyncer
from confidence.materialization import VariantReadOp
from confidence.testing.emulator import ConfidenceEmulator, Hang, Route, Status

pytestmark = pytest.mark.anyio

SECRET = "http-layer-secret-XYZ789"
FAST = RetryPolicy(max_attempts=3, base_delay=0.0, max_delay=0.01, attempt_timeout=2.0)


# -- the rules themselves ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (200, None),
        (204, None),
        (400, FailureKind.CLIENT),
        (401, FailureKind.AUTH),
        (403, FailureKind.AUTH),
        (404, FailureKind.NOT_FOUND),
        (408, FailureKind.TIMEOUT),
        (409, FailureKind.CLIENT),
        (425, FailureKind.RATE_LIMITED),
        (429, FailureKind.RATE_LIMITED),
        (500, FailureKind.SERVER),
        (501, FailureKind.SERVER),
        (503, FailureKind.SERVER),
        (599, FailureKind.SERVER),
        (301, FailureKind.CLIENT),  # redirects are never followed
    ],
)
def test_one_status_classification(status: int, kind: FailureKind | None) -> None:
    assert classify_status(status) is kind


def test_retryable_kinds() -> None:
    retryable = {k for k in FailureKind if k.retryable}
    assert retryable == {
        FailureKind.RATE_LIMITED,
        FailureKind.TIMEOUT,
        FailureKind.NETWORK,
        FailureKind.SERVER,
    }


def test_retry_after_forms() -> None:
    assert _http.parse_retry_after("3") == 3.0
    assert _http.parse_retry_after(" 0.5 ") == 0.5
    assert _http.parse_retry_after("-4") == 0.0
    assert _http.parse_retry_after("nan") is None
    assert _http.parse_retry_after("soon") is None
    date = email.utils.formatdate(1_000_030.0, usegmt=True)
    assert _http.parse_retry_after(date, now=1_000_000.0) == 30.0


def test_backoff_is_jittered_capped_and_retry_after_is_capped() -> None:
    policy = RetryPolicy(base_delay=1.0, multiplier=2.0, max_delay=5.0, jitter=0.1)
    rng = random.Random(7)
    delays = [policy.delay(n, rng.random) for n in range(1, 6)]
    for n, delay in enumerate(delays, start=1):
        nominal = min(2.0 ** (n - 1), 5.0)
        assert nominal * 0.9 <= delay <= nominal * 1.1
    assert len(set(delays)) == len(delays)  # jittered
    assert policy.wait_after(1, rng.random, retry_after=3600.0) == 5.0
    assert policy.wait_after(1, rng.random, retry_after=0.25) == 0.25


def test_exception_mapping_masks_the_secret() -> None:
    assert (
        _http.failure_from_exception(TimeoutError(), timeout=2, secret=SECRET).kind
        is FailureKind.TIMEOUT
    )
    network = _http.failure_from_exception(
        aiohttp.ClientConnectionError(f"to {SECRET}"), timeout=2, secret=SECRET
    )
    assert network.kind is FailureKind.NETWORK and SECRET not in str(network)
    odd = _http.failure_from_exception(RuntimeError("Session is closed"), timeout=2, secret="")
    assert odd.kind is FailureKind.INTERNAL and not odd.retryable


# -- every client obeys them ------------------------------------------------------------------


def _flag_logs(emu: ConfidenceEmulator, session: aiohttp.ClientSession) -> Callable[[], Any]:
    sender = LogSender(
        client_secret=SECRET, session=session, api_base_url=emu.api_base_url, retry=FAST
    )
    body = api_pb2.WriteFlagLogsRequest().SerializeToString()
    return lambda: sender.send(body)


def _materialization(
    emu: ConfidenceEmulator, session: aiohttp.ClientSession
) -> Callable[[], Awaitable[Any]]:
    store = RemoteMaterializationStore(
        SECRET, api_base_url=emu.api_base_url, session=session, backoff=0.0, max_backoff=0.01
    )

    async def read() -> None:
        with pytest.raises(RemoteMaterializationError):
            await store.read([VariantReadOp("u", "materializations/m", "rules/r")])

    return read


def _events(emu: ConfidenceEmulator, session: aiohttp.ClientSession) -> Callable[[], Any]:
    queue = EventQueue()
    publisher = EventPublisher(
        queue,
        client_secret=SECRET,
        session=session,
        events_base_url=emu.base_url,
        interval=60.0,
        sdk_version="test",
        retry=FAST,
    )

    async def publish() -> None:
        queue.put(b'{"eventDefinition":"eventDefinitions/x","payload":{}}')
        await publisher.flush()

    return publish


CLIENTS: dict[str, tuple[Route, Callable[..., Any]]] = {
    "flag_logs": (Route.FLAG_LOGS, _flag_logs),
    "materialization": (Route.MATERIALIZATION_READ, _materialization),
    "events": (Route.EVENTS, _events),
}


@pytest.mark.parametrize("client", sorted(CLIENTS))
@pytest.mark.parametrize("status", [400, 401, 404, 408, 425, 429, 500, 503])
async def test_every_client_retries_exactly_the_retryable_statuses(
    emulator_async: ConfidenceEmulator, session: aiohttp.ClientSession, client: str, status: int
) -> None:
    route, make = CLIENTS[client]
    emulator_async.inject(route, Status(status))
    await make(emulator_async, session)()
    kind = classify_status(status)
    assert kind is not None
    expected = FAST.max_attempts if kind.retryable else 1
    assert len(emulator_async.requests_for(route)) == expected


async def test_state_fetch_reports_typed_kinds(
    emulator_async: ConfidenceEmulator, session: aiohttp.ClientSession
) -> None:
    async def apply(_fetched: Any) -> bool:
        return True

    syncer = StateSyncer(
        client_secret=SECRET,
        session=session,
        apply=apply,
        encryption_key=bytes.fromhex(emulator_async.encryption_key_hex),
        cdn_base_url=emulator_async.cdn_base_url,
        request_timeout=0.5,
    )
    for fault, kind, text in [
        (Status(404), FailureKind.NOT_FOUND, "HTTP 404"),
        (Status(403), FailureKind.AUTH, "HTTP 403"),
        (Status(503), FailureKind.SERVER, "HTTP 503"),
        (Status(204), FailureKind.BAD_RESPONSE, "HTTP 204"),
        (Hang(), FailureKind.TIMEOUT, "timed out after 0.5s"),
    ]:
        emulator_async.inject(Route.STATE, fault, times=1)
        assert await syncer.fetch_once() is False
        assert (syncer.last_error_kind, syncer.last_error) == (kind, text)
    # The CDN is never sent the Authorization header: the URL's hash is the capability.
    assert all(r.header("Authorization") is None for r in emulator_async.requests_for(Route.STATE))


async def test_authorization_goes_only_to_the_configured_url_never_to_a_redirect(
    emulator_async: ConfidenceEmulator, session: aiohttp.ClientSession
) -> None:
    seen: list[str | None] = []

    async def elsewhere(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.Response()

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", elsewhere)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        target = f"http://127.0.0.1:{port}/stolen"
        emulator_async.inject(Route.FLAG_LOGS, Status(307, headers=(("Location", target),)))
        ok = await _flag_logs(emulator_async, session)()
        assert ok is False  # a redirect is a (permanent) failure, not followed
        with pytest.raises(HttpFailure) as info:
            await _http.attempt(
                session,
                "POST",
                emulator_async.api_base_url + "/v1/clientFlagLogs:write",
                timeout=1.0,
                authorization=f"ClientSecret {SECRET}",
            )
        assert (info.value.kind, info.value.status) == (FailureKind.CLIENT, 307)
    finally:
        await runner.cleanup()
    sent = emulator_async.requests_for(Route.FLAG_LOGS)
    assert sent and sent[0].header("Authorization") == f"ClientSecret {SECRET}"
    assert seen == []  # the redirect target never saw a request, let alone the secret


async def test_the_deadline_covers_a_dripping_body(
    emulator_async: ConfidenceEmulator, session: aiohttp.ClientSession
) -> None:
    from confidence.testing.emulator import SlowBody

    emulator_async.set_state(b"\x0a\x00" * 2000, account_id="a")
    emulator_async.inject(Route.STATE, SlowBody(chunk=8, interval=0.05))
    with anyio.fail_after(5):
        with pytest.raises(HttpFailure) as info:
            await _http.attempt(session, "GET", emulator_async.state_url(), timeout=0.3)
    assert info.value.kind is FailureKind.TIMEOUT
