"""State sync against the real emulator over 127.0.0.1 with real aiohttp (protocol §2)."""

from __future__ import annotations

import hashlib
import logging
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from confidence._http_light import LightSession
from confidence._state.sync import (
    FailureKind,
    FetchedState,
    StateSyncer,
    SyncStatus,
    backoff_delay,
    secret_hash,
    state_url,
)
from confidence.testing.emulator import (
    ConfidenceEmulator,
    DropConnection,
    GarbageBody,
    Hang,
    Route,
    Status,
    TruncatedBody,
)

Session = aiohttp.ClientSession | LightSession

pytestmark = pytest.mark.anyio

SECRET = "sync-test-client-secret-XYZ"
STATE_V1 = b"\x0a\x04v1v1"  # any bytes: `apply` is injected, nothing decodes the ResolverState
STATE_V2 = b"\x0a\x04v2v2"


class Applier:
    """Stand-in for the runtime's apply step: records states; can be told to reject them."""

    def __init__(self) -> None:
        self.applied: list[FetchedState] = []
        self.reject: str | None = None

    async def __call__(self, state: FetchedState) -> bool:
        if self.reject is not None:
            raise ValueError(self.reject)
        changed = not self.applied or self.applied[-1].state != state.state
        self.applied.append(state)
        return changed


class SteppedSleep:
    """Injected ``sleep`` that records each requested delay and waits for the test to release
    it, so loop tests are driven step by step instead of by wall-clock time."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self._permits = anyio.Semaphore(0)

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        await self._permits.acquire()

    def release(self, n: int = 1) -> None:
        for _ in range(n):
            self._permits.release()

    async def wait_for(self, count: int) -> None:
        with anyio.fail_after(20):
            while len(self.delays) < count:
                await anyio.sleep(0.005)


@pytest.fixture(params=["aiohttp", "light"])
async def session(anyio_backend: str, request: pytest.FixtureRequest) -> AsyncIterator[Session]:
    """Both HTTP stacks the syncer runs on: an aiohttp session (what tests and older
    callers pass) and the runtime's own `LightSession` (confidence/_http_light.py)."""
    if request.param == "light":
        yield LightSession()
        return
    async with aiohttp.ClientSession() as s:
        yield s


def make_syncer(
    emu: ConfidenceEmulator,
    session: Session,
    applier: Applier,
    *,
    encrypted: bool = True,
    **kwargs: Any,
) -> StateSyncer:
    kwargs.setdefault("request_timeout", 5.0)
    return StateSyncer(
        client_secret=kwargs.pop("client_secret", SECRET),
        session=session,
        apply=applier,
        encryption_key=kwargs.pop("encryption_key", emu.encryption_key if encrypted else None),
        cdn_base_url=emu.cdn_base_url,
        **kwargs,
    )


# -- URL scheme -------------------------------------------------------------------------------


def test_state_url_scheme() -> None:
    digest = hashlib.sha256(SECRET.encode()).hexdigest()
    assert secret_hash(SECRET) == digest
    assert state_url("https://cdn.example", SECRET, encrypted=True) == (
        f"https://cdn.example/{digest}.enc"
    )
    assert state_url("https://cdn.example/", SECRET, encrypted=False) == (
        f"https://cdn.example/{digest}"
    )
    # A known vector: sha256("abc").
    assert secret_hash("abc") == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )


async def test_requests_hit_the_hashed_url(
    emulator_async: ConfidenceEmulator, session: Session
) -> None:
    emulator_async.set_state(STATE_V1)
    await make_syncer(emulator_async, session, Applier()).fetch_once()
    await make_syncer(emulator_async, session, Applier(), encrypted=False).fetch_once()
    paths = [r.path for r in emulator_async.requests_for(Route.STATE)]
    assert paths == [f"/{secret_hash(SECRET)}.enc", f"/{secret_hash(SECRET)}"]
    # The CDN request carries no credentials at all (§1): the hash is the capability.
    for request in emulator_async.requests_for(Route.STATE):
        assert request.header("Authorization") is None


# -- happy paths --------------------------------------------------------------------------------


@pytest.mark.parametrize("encrypted", [True, False])
async def test_fetch_decodes_and_applies(
    emulator_async: ConfidenceEmulator, session: Session, encrypted: bool
) -> None:
    emulator_async.set_state(STATE_V1, account_id="acct-1", log_destinations=(2, 1))
    applier = Applier()
    ready: list[str] = []
    syncer = make_syncer(
        emulator_async,
        session,
        applier,
        encrypted=encrypted,
        on_ready=lambda: ready.append("ready"),
    )
    assert syncer.status is SyncStatus.NOT_READY and not syncer.has_state

    assert await syncer.fetch_once() is True

    assert _status(syncer) is SyncStatus.READY
    assert applier.applied == [
        FetchedState(
            state=STATE_V1,
            account_id="acct-1",
            log_destinations=(2, 1),
            etag=emulator_async.current_etag(encrypted=encrypted),
        )
    ]
    assert syncer.etag == emulator_async.current_etag(encrypted=encrypted)
    assert syncer.has_state
    assert ready == ["ready"]


async def test_etag_is_echoed_and_304_means_no_change(
    emulator_async: ConfidenceEmulator, session: Session
) -> None:
    emulator_async.set_state(STATE_V1)
    applier = Applier()
    syncer = make_syncer(emulator_async, session, applier)
    assert await syncer.fetch_once() is True
    etag = syncer.etag
    assert etag is not None and etag.startswith('"') and etag.endswith('"')

    assert await syncer.fetch_once() is False
    assert await syncer.fetch_once() is False

    first, *later = emulator_async.requests_for(Route.STATE)
    assert first.header("If-None-Match") is None
    assert [r.header("If-None-Match") for r in later] == [etag, etag]  # exact, quotes included
    assert len(applier.applied) == 1
    assert syncer.consecutive_failures == 0


async def test_new_state_after_set_state(
    emulator_async: ConfidenceEmulator, session: Session
) -> None:
    emulator_async.set_state(STATE_V1, account_id="a1")
    applier = Applier()
    syncer = make_syncer(emulator_async, session, applier)
    await syncer.fetch_once()
    old_etag = syncer.etag

    emulator_async.set_state(STATE_V2, account_id="a2", log_destinations=(2,))
    assert await syncer.fetch_once() is True
    assert applier.applied[-1].state == STATE_V2
    assert applier.applied[-1].account_id == "a2"
    assert applier.applied[-1].log_destinations == (2,)
    assert syncer.etag == emulator_async.current_etag() != old_etag


async def test_identical_content_under_new_etag_is_not_reapplied(
    emulator_async: ConfidenceEmulator, session: Session
) -> None:
    emulator_async.set_state(STATE_V1)
    applier = Applier()
    syncer = make_syncer(emulator_async, session, applier)
    await syncer.fetch_once()
    first_etag = syncer.etag

    emulator_async.set_state(STATE_V1)  # re-encrypted with a fresh nonce: new bytes, new ETag
    assert emulator_async.current_etag() != first_etag
    assert await syncer.fetch_once() is False
    assert len(applier.applied) == 1
    # The new ETag describes known-good content, so it is adopted (the next poll is a 304).
    assert syncer.etag == emulator_async.current_etag()
    await syncer.fetch_once()
    assert emulator_async.requests_for(Route.STATE)[-1].header("If-None-Match") == syncer.etag


# -- bad bodies keep the last good state and do not keep the ETag -------------------------------


async def _loaded(
    emu: ConfidenceEmulator, session: Session, **kwargs: Any
) -> tuple[StateSyncer, Applier]:
    emu.set_state(STATE_V1)
    applier = Applier()
    syncer = make_syncer(emu, session, applier, **kwargs)
    assert await syncer.fetch_once() is True
    return syncer, applier


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (GarbageBody(), "could not decrypt"),
        (TruncatedBody(), "network error"),
        (TruncatedBody(fraction=0.0), "network error"),
    ],
)
async def test_bad_body_faults(
    emulator_async: ConfidenceEmulator,
    session: Session,
    fault: GarbageBody | TruncatedBody,
    expected: str,
) -> None:
    syncer, applier = await _loaded(emulator_async, session)
    good_etag = syncer.etag
    emulator_async.set_state(STATE_V2)
    emulator_async.inject(Route.STATE, fault, times=1)

    assert await syncer.fetch_once() is False
    assert expected in (syncer.last_error or "")
    assert syncer.etag == good_etag
    assert [s.state for s in applier.applied] == [STATE_V1]

    # The next poll still asks for the full new state and gets it.
    assert await syncer.fetch_once() is True
    assert applier.applied[-1].state == STATE_V2


async def test_garbage_plain_body_is_a_parse_failure(
    emulator_async: ConfidenceEmulator, session: Session
) -> None:
    syncer, applier = await _loaded(emulator_async, session, encrypted=False)
    emulator_async.inject(Route.STATE, GarbageBody(), times=1)
    assert await syncer.fetch_once() is False
    assert "invalid ClientResolverState" in (syncer.last_error or "")
    assert len(applier.applied) == 1


async def test_undecodable_but_correctly_encrypted_state_keeps_old_etag(
    emulator_async: ConfidenceEmulator, session: Session
) -> None:
    syncer, applier = await _loaded(emulator_async, session)
    good_etag = syncer.etag
    emulator_async.set_client_state(
        b"\x00not a ClientResolverState"
    )  # valid ciphertext, bad content

    assert await syncer.fetch_once() is False
    assert "invalid ClientResolverState" in (syncer.last_error or "")
    assert syncer.etag == good_etag
    # Had the ETag been stored before parsing (the 0.11 bug), this would now be a 304 forever.
    assert await syncer.fetch_once() is False
    assert emulator_async.requests_for(Route.STATE)[-1].header("If-None-Match") == good_etag
    assert syncer.consecutive_failures == 2
    assert len(applier.applied) == 1


async def test_state_without_account_is_rejected(
    emulator_async: ConfidenceEmulator, session: Session
) -> None:
    emulator_async.set_state(STATE_V1, account_id="")
    applier = Applier()
    syncer = make_syncer(emulator_async, session, applier)
    assert await syncer.fetch_once() is False
    assert "missing account" in (syncer.last_error or "")
    assert applier.applied == [] and syncer.etag is None


async def test_wrong_key_fails_and_keeps_no_etag(
    emulator_async: ConfidenceEmulator, session: Session
) -> None:
    emulator_async.set_state(STATE_V1)
    applier = Applier()
    syncer = make_syncer(emulator_async, session, applier, encryption_key=bytes(32))
    assert await syncer.fetch_once() is False
    assert "wrong encryption key" in (syncer.last_error or "")
    assert syncer.etag is None and not syncer.has_state and applier.applied == []
    assert syncer.status is SyncStatus.NOT_READY


async def test_apply_raising_keeps_last_state_and_etag(
    emulator_async: ConfidenceEmulator, session: Session
) -> None:
    syncer, applier = await _loaded(emulator_async, session)
    good_etag = syncer.etag
    emulator_async.set_state(STATE_V2)
    applier.reject = "resolver rejected the state"

    assert await syncer.fetch_once() is False
    assert "resolver rejected the state" in (syncer.last_error or "")
    assert syncer.etag == good_etag and syncer.status is SyncStatus.READY

    applier.reject = None  # e.g. a fixed resolver: the same served state is now accepted
    assert await syncer.fetch_once() is True
    assert applier.applied[-1].state == STATE_V2
    assert syncer.etag == emulator_async.current_etag()


# -- transport failures -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "expected"),
    [
        (Status(500), "HTTP 500"),
        (Status(503), "HTTP 503"),
        (Status(404), "HTTP 404"),
        (Status(403), "HTTP 403"),
        (Status(204), "HTTP 204"),  # a 2xx other than 200 is not a state
        (DropConnection(), "network error"),
        (Hang(), "timed out"),
    ],
)
async def test_transport_failures_are_counted_and_keep_state(
    emulator_async: ConfidenceEmulator,
    session: Session,
    fault: Any,
    expected: str,
) -> None:
    errors: list[str] = []
    syncer, applier = await _loaded(
        emulator_async, session, request_timeout=1.0, on_error=errors.append
    )
    good_etag = syncer.etag
    emulator_async.set_state(STATE_V2)
    emulator_async.inject(Route.STATE, fault)  # until cleared

    assert await syncer.fetch_once() is False
    assert await syncer.fetch_once() is False
    assert syncer.consecutive_failures == 2
    assert expected in (syncer.last_error or "")
    assert len(errors) == 2 and expected in errors[0]
    assert syncer.etag == good_etag and [s.state for s in applier.applied] == [STATE_V1]

    emulator_async.clear_faults()
    assert await syncer.fetch_once() is True
    assert syncer.consecutive_failures == 0 and syncer.last_error is None


async def test_unknown_secret_is_404(emulator_async: ConfidenceEmulator, session: Session) -> None:
    emulator_async.set_state(STATE_V1)
    syncer = make_syncer(emulator_async, session, Applier(), client_secret="some-other-secret")
    assert await syncer.fetch_once() is False
    assert syncer.last_error == "HTTP 404"
    assert syncer.last_error_kind is FailureKind.NOT_FOUND  # retried, not fatal


async def test_connection_refused_is_a_failure(session: Session) -> None:
    # Bind and release a port so that nothing is listening on it.
    async with ConfidenceEmulator() as emu:
        base = emu.cdn_base_url
    syncer = StateSyncer(client_secret=SECRET, session=session, apply=Applier(), cdn_base_url=base)
    assert await syncer.fetch_once() is False
    assert "network error" in (syncer.last_error or "")


async def test_hang_is_bounded_by_request_timeout(
    emulator_async: ConfidenceEmulator, session: Session
) -> None:
    emulator_async.set_state(STATE_V1)
    emulator_async.inject(Route.STATE, Hang())
    syncer = make_syncer(emulator_async, session, Applier(), request_timeout=0.3)
    start = anyio.current_time()
    assert await syncer.fetch_once() is False
    # Generous upper bound: a loaded CI machine may be slow, but never 10x slow here.
    assert anyio.current_time() - start < 5.0
    assert syncer.last_error == "timed out after 0.3s"


async def test_304_without_loaded_state_is_a_failure(session: Session) -> None:
    async def always_304(request: web.Request) -> web.Response:
        return web.Response(status=304)

    async with _adhoc_server(always_304) as base:
        syncer = StateSyncer(
            client_secret=SECRET, session=session, apply=Applier(), cdn_base_url=base
        )
        assert await syncer.fetch_once() is False
        assert "304" in (syncer.last_error or "")


# -- body size limit --------------------------------------------------------------------------


async def test_body_over_limit_is_refused(
    emulator_async: ConfidenceEmulator, session: Session
) -> None:
    emulator_async.set_state(b"x" * 5000)
    applier = Applier()
    syncer = make_syncer(emulator_async, session, applier, max_state_bytes=1000)
    assert await syncer.fetch_once() is False
    assert "over the 1000-byte limit" in (syncer.last_error or "")
    assert applier.applied == []


async def test_body_at_limit_is_accepted(
    emulator_async: ConfidenceEmulator, session: Session
) -> None:
    emulator_async.set_state(b"x" * 100, account_id="a")
    syncer = make_syncer(emulator_async, session, Applier(), encrypted=False, max_state_bytes=1)
    await syncer.fetch_once()
    size_needed = int((syncer.last_error or "").split()[3])  # "state body is N bytes, ..."
    syncer = make_syncer(
        emulator_async, session, Applier(), encrypted=False, max_state_bytes=size_needed
    )
    assert await syncer.fetch_once() is True


async def test_limit_is_enforced_while_streaming_without_content_length(
    session: Session,
) -> None:
    sent: list[int] = []

    async def chunked(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse()
        resp.enable_chunked_encoding()  # no Content-Length
        await resp.prepare(request)
        try:
            for _ in range(64):
                await resp.write(b"y" * 16384)
                sent.append(16384)
        except (ConnectionError, RuntimeError):
            pass
        return resp

    async with _adhoc_server(chunked) as base:
        syncer = StateSyncer(
            client_secret=SECRET,
            session=session,
            apply=Applier(),
            cdn_base_url=base,
            max_state_bytes=100_000,
        )
        assert await syncer.fetch_once() is False
        assert "more than" in (syncer.last_error or "")
        assert "100000-byte limit" in (syncer.last_error or "")


# -- backoff ----------------------------------------------------------------------------------


def test_backoff_growth_and_cap_without_jitter() -> None:
    delays = [
        backoff_delay(n, poll_interval=30.0, base=1.0, jitter=0.0, rand=random.random)
        for n in range(0, 9)
    ]
    assert delays == [30.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]


def test_backoff_jitter_extremes() -> None:
    low = backoff_delay(3, poll_interval=30.0, base=1.0, jitter=0.1, rand=lambda: 0.0)
    high = backoff_delay(3, poll_interval=30.0, base=1.0, jitter=0.1, rand=lambda: 1.0)
    assert low == pytest.approx(3.6) and high == pytest.approx(4.4)


def test_backoff_huge_failure_count_stays_finite() -> None:
    delay = backoff_delay(10_000, poll_interval=30.0, base=1.0, jitter=0.1, rand=lambda: 0.5)
    assert delay == pytest.approx(30.0)


@given(
    failures=st.integers(min_value=0, max_value=200),
    poll=st.floats(min_value=0.01, max_value=3600),
    base=st.floats(min_value=0.001, max_value=100),
    r=st.floats(min_value=0.0, max_value=1.0, exclude_max=True),
)
def test_backoff_bounds_property(failures: int, poll: float, base: float, r: float) -> None:
    nominal = poll if failures == 0 else min(base * 2.0 ** min(failures - 1, 62), poll)
    delay = backoff_delay(failures, poll_interval=poll, base=base, jitter=0.1, rand=lambda: r)
    assert nominal * 0.9 - 1e-9 <= delay <= nominal * 1.1 + 1e-9
    assert delay <= poll * 1.1 + 1e-9


async def test_run_loop_backs_off_then_returns_to_poll_interval(
    emulator_async: ConfidenceEmulator, session: Session
) -> None:
    emulator_async.inject(Route.STATE, Status(503))
    sleep = SteppedSleep()
    syncer = make_syncer(
        emulator_async, session, Applier(), poll_interval=30.0, backoff_base=1.0, sleep=sleep
    )
    async with anyio.create_task_group() as tg:
        await tg.start(syncer.run)
        for step in range(1, 7):
            await sleep.wait_for(step)
            sleep.release()
        await sleep.wait_for(7)
        failure_delays = sleep.delays[:6]
        for n, delay in enumerate(failure_delays, start=1):
            nominal = min(2.0 ** (n - 1), 30.0)
            assert nominal * 0.9 <= delay <= nominal * 1.1, (n, delay)
        # Jitter actually varies (not a fixed factor).
        assert len({round(d / min(2.0**i, 30.0), 6) for i, d in enumerate(failure_delays)}) > 1

        emulator_async.clear_faults()
        emulator_async.set_state(STATE_V1)
        sleep.release()
        await sleep.wait_for(8)
        assert 27.0 <= sleep.delays[7] <= 33.0
        assert syncer.status is SyncStatus.READY
        tg.cancel_scope.cancel()


async def test_run_without_immediate_fetch_sleeps_first(
    emulator_async: ConfidenceEmulator, session: Session
) -> None:
    emulator_async.set_state(STATE_V1)
    sleep = SteppedSleep()
    syncer = make_syncer(emulator_async, session, Applier(), poll_interval=5.0, sleep=sleep)
    async with anyio.create_task_group() as tg:
        tg.start_soon(lambda: syncer.run(fetch_immediately=False))
        await sleep.wait_for(1)
        assert emulator_async.requests_for(Route.STATE) == []
        assert 4.5 <= sleep.delays[0] <= 5.5
        sleep.release()
        await sleep.wait_for(2)
        assert len(emulator_async.requests_for(Route.STATE)) == 1
        tg.cancel_scope.cancel()


# -- STALE / READY transitions ------------------------------------------------------------------


async def test_stale_after_n_failures_then_ready_on_recovery(
    emulator_async: ConfidenceEmulator,
    session: Session,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger="confidence")
    events: list[str] = []
    emulator_async.set_state(STATE_V1)
    sleep = SteppedSleep()
    applier = Applier()
    syncer = make_syncer(
        emulator_async,
        session,
        applier,
        stale_after_failures=3,
        sleep=sleep,
        on_ready=lambda: events.append("ready"),
        on_stale=lambda: events.append("stale"),
        on_error=lambda message: events.append("error"),
    )
    async with anyio.create_task_group() as tg:
        await tg.start(syncer.run)
        await sleep.wait_for(1)
        assert events == ["ready"] and syncer.status is SyncStatus.READY

        emulator_async.inject(Route.STATE, Status(502))
        for step in range(2, 4):  # failures 1 and 2: still READY
            sleep.release()
            await sleep.wait_for(step)
        assert syncer.status is SyncStatus.READY
        assert events == ["ready", "error", "error"]

        sleep.release()  # failure 3: STALE, signalled once
        await sleep.wait_for(4)
        assert _status(syncer) is SyncStatus.STALE
        assert events == ["ready", "error", "error", "error", "stale"]

        for step in range(5, 7):  # more failures: no second STALE
            sleep.release()
            await sleep.wait_for(step)
        assert events.count("stale") == 1
        assert len(applier.applied) == 1  # still serving the last good state

        emulator_async.clear_faults()
        sleep.release()  # 304 on the old ETag is a success: READY again
        await sleep.wait_for(7)
        assert syncer.status is SyncStatus.READY
        assert events[-1] == "ready" and events.count("ready") == 2
        tg.cancel_scope.cancel()

    stale_logs = [r for r in caplog.records if "STALE" in r.getMessage()]
    assert len(stale_logs) == 1 and stale_logs[0].levelno == logging.ERROR
    assert any("recovered" in r.getMessage() for r in caplog.records)


async def test_never_loaded_does_not_go_stale(
    emulator_async: ConfidenceEmulator, session: Session
) -> None:
    events: list[str] = []
    emulator_async.inject(Route.STATE, Status(500))
    syncer = make_syncer(
        emulator_async,
        session,
        Applier(),
        stale_after_failures=1,
        on_stale=lambda: events.append("stale"),
        on_error=lambda m: events.append(m),
    )
    for _ in range(3):
        await syncer.fetch_once()
    assert syncer.status is SyncStatus.NOT_READY
    assert events == ["HTTP 500"] * 3


async def test_wait_ready_returns_after_first_state(
    emulator_async: ConfidenceEmulator, session: Session
) -> None:
    emulator_async.inject(Route.STATE, Status(500), times=2)
    emulator_async.set_state(STATE_V1)
    syncer = make_syncer(emulator_async, session, Applier(), poll_interval=0.05, backoff_base=0.01)
    async with anyio.create_task_group() as tg:
        await tg.start(syncer.run)
        with anyio.fail_after(10):
            await syncer.wait_ready()
        assert syncer.has_state and syncer.status is SyncStatus.READY
        assert len(emulator_async.requests_for(Route.STATE)) >= 3
        await syncer.wait_ready()  # returns immediately once loaded
        tg.cancel_scope.cancel()


async def test_callback_errors_do_not_break_the_sync(
    emulator_async: ConfidenceEmulator,
    session: Session,
    caplog: pytest.LogCaptureFixture,
) -> None:
    def boom(*_: object) -> None:
        raise RuntimeError("observer bug")

    emulator_async.set_state(STATE_V1)
    syncer = make_syncer(emulator_async, session, Applier(), on_ready=boom, on_error=boom)
    assert await syncer.fetch_once() is True
    emulator_async.inject(Route.STATE, Status(500), times=1)
    assert await syncer.fetch_once() is False
    assert syncer.status is SyncStatus.READY
    assert "callback raised" in caplog.text


# -- cancellation -------------------------------------------------------------------------------


async def test_run_cancels_cleanly_mid_request(
    emulator_async: ConfidenceEmulator, session: Session
) -> None:
    emulator_async.set_state(STATE_V1)
    emulator_async.inject(Route.STATE, Hang())
    syncer = make_syncer(emulator_async, session, Applier(), request_timeout=60.0)
    start = anyio.current_time()
    with anyio.move_on_after(0.3):
        await syncer.run()
    assert anyio.current_time() - start < 5.0
    assert syncer.consecutive_failures == 0  # a cancellation is not a failure
    assert syncer.status is SyncStatus.NOT_READY


async def test_concurrent_fetches_are_serialized(
    emulator_async: ConfidenceEmulator, session: Session
) -> None:
    emulator_async.set_state(STATE_V1)
    applier = Applier()
    syncer = make_syncer(emulator_async, session, applier)
    results: list[bool] = []

    async def one() -> None:
        results.append(await syncer.fetch_once())

    async with anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(one)
    assert sorted(results) == [False, False, False, False, True]
    assert len(applier.applied) == 1


# -- secrets never logged ---------------------------------------------------------------------


async def test_secrets_never_appear_in_logs(
    emulator_async: ConfidenceEmulator,
    session: Session,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    key_hex = emulator_async.encryption_key.hex()
    full_hash = secret_hash(SECRET)
    emulator_async.set_state(STATE_V1)
    applier = Applier()
    syncer = make_syncer(
        emulator_async, session, applier, request_timeout=1.0, stale_after_failures=2
    )
    await syncer.fetch_once()
    await syncer.fetch_once()  # 304
    for fault in (Status(500), Status(404), DropConnection(), Hang(), GarbageBody()):
        emulator_async.inject(Route.STATE, fault)
        emulator_async.set_state(STATE_V2)
        await syncer.fetch_once()
        emulator_async.clear_faults()
    applier.reject = f"cannot use state for {SECRET} with key {key_hex} at {full_hash}"
    emulator_async.set_state(b"\x0a\x02v3")
    await syncer.fetch_once()
    wrong_key = make_syncer(emulator_async, session, Applier(), encryption_key=bytes(32))
    await wrong_key.fetch_once()
    refused = StateSyncer(
        client_secret=SECRET, session=session, apply=Applier(), cdn_base_url="http://127.0.0.1:9"
    )
    await refused.fetch_once()

    text = caplog.text
    assert "state rejected by apply" in text
    assert syncer.last_error is not None and "cannot use state for ***" in syncer.last_error
    assert len(caplog.records) >= 8
    for leaked in (SECRET, key_hex, key_hex.upper(), full_hash, emulator_async.state_url()):
        assert leaked not in text
    assert full_hash[:8] in text  # the short hint is there for correlation


# -- helpers ----------------------------------------------------------------------------------


def _status(syncer: StateSyncer) -> SyncStatus:
    # A call, so mypy does not carry a narrowed property type across awaits.
    return syncer.status


class _adhoc_server:
    """A one-route aiohttp server on 127.0.0.1 for responses the emulator does not model."""

    def __init__(self, handler: Any) -> None:
        self._handler = handler
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> str:
        app = web.Application()
        app.router.add_get("/{name}", self._handler)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        return f"http://127.0.0.1:{self._runner.addresses[0][1]}"

    async def __aexit__(self, *exc: object) -> None:
        assert self._runner is not None
        await self._runner.cleanup()


async def test_unexpected_errors_are_failures_not_crashes(
    emulator_async: ConfidenceEmulator,
) -> None:
    emulator_async.set_state(STATE_V1)
    session = aiohttp.ClientSession()
    await session.close()  # using a closed session raises RuntimeError inside aiohttp
    errors: list[str] = []
    syncer = make_syncer(emulator_async, session, Applier(), on_error=errors.append)
    assert await syncer.fetch_once() is False
    assert syncer.consecutive_failures == 1
    assert errors and errors[0].startswith("unexpected error: RuntimeError")
