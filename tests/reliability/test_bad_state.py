"""Reliability: bad states from the CDN (issue #6).

Whatever the CDN serves after a good state — garbage, a cut protobuf, a state encrypted with
another key, a state the resolver refuses, one too large for the body cap or for the
resolver's memory cap — the provider refuses it: one ERROR log line, one PROVIDER_ERROR event
(code GENERAL; evaluations go on), the last good state keeps serving, nothing crashes, and the
next good fetch brings READY back. A state that is valid but has dangling references is not
"bad": Confidence's own semantics apply (see test_dangling_references_follow_the_reference_rules).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent
from openfeature.exception import ErrorCode
from openfeature.flag_evaluation import Reason
from openfeature.provider import ProviderStatus
from provider_support import (
    ACCOUNT,
    SECRET,
    EventRecorder,
    make_provider,
    recording_events,
    requires_wasm,
    sample_state,
    settle_events,
    variant,
    wait_until,
)

from confidence._state.crypto import encrypt_state
from confidence._wasm.protowire import encode_client_resolver_state
from confidence.testing.emulator import ConfidenceEmulator, GarbageBody, Route
from confidence.testing.state_builder import StateBuilder, rollout

pytestmark = [requires_wasm, pytest.mark.usefixtures("openfeature_api")]

USER = EvaluationContext("user-1")
MiB = 1024 * 1024


def _color() -> str:
    return api.get_client().get_string_value("feature.color", "none", USER)


def _good_client_state() -> bytes:
    return encode_client_resolver_state(sample_state(color="red").build(), ACCOUNT, ())


def _huge_value_state(size: int) -> bytes:
    """A valid state whose one flag carries a `size`-byte string."""
    return (
        sample_state()
        .flag(
            "flags/huge",
            variants={variant("huge", "big"): {"blob": "x" * size}},
            rules=[rollout("segments/everyone", {variant("huge", "big"): 100})],
        )
        .build()
    )


# How each bad state is served. `inject` ones go away by themselves (times=3): the CDN then
# answers the old ETag with a 304, i.e. confirms the last good state. The others replace the
# served state until the test serves a good one.
def _garbage(emu: ConfidenceEmulator) -> None:
    emu.inject(Route.STATE, GarbageBody(), times=3)


def _wrong_key(emu: ConfidenceEmulator) -> None:
    body = encrypt_state(_good_client_state(), os.urandom(32))  # e.g. a rotated key
    emu.inject(Route.STATE, GarbageBody(body=body), times=3)


def _truncated_wrapper(emu: ConfidenceEmulator) -> None:
    good = _good_client_state()
    emu.set_client_state(good[: len(good) // 2])  # cut inside the state field


def _truncated_resolver_state(emu: ConfidenceEmulator) -> None:
    emu.set_state(sample_state(color="red").build()[:-7])  # a valid wrapper, a cut state


def _missing_account(emu: ConfidenceEmulator) -> None:
    emu.set_state(sample_state(color="red").build(), account_id="")


def _body_of_200_mib(emu: ConfidenceEmulator) -> None:
    # Refused from its Content-Length, before any of it is read (default limit: 64 MiB).
    emu.inject(Route.STATE, GarbageBody(body=bytes(200 * MiB)), times=3)


BAD_STATES: list[tuple[str, Callable[[ConfidenceEmulator], None], str, bool]] = [
    # (id, serve it, expected in the message, goes away by itself)
    ("garbage-bytes", _garbage, "could not decrypt state", True),
    ("wrong-encryption-key", _wrong_key, "could not decrypt state", True),
    ("truncated-client-state", _truncated_wrapper, "invalid ClientResolverState", False),
    ("truncated-resolver-state", _truncated_resolver_state, "state rejected by apply", False),
    ("missing-account", _missing_account, "missing account id", False),
    ("200-MiB-body", _body_of_200_mib, "over the 67108864-byte limit", True),
]


def _errors(events: EventRecorder) -> list[EventDetails]:
    return events.of(ProviderEvent.PROVIDER_ERROR)


@pytest.mark.parametrize(
    ("name", "serve", "expected", "transient"), BAD_STATES, ids=[b[0] for b in BAD_STATES]
)
def test_bad_state_is_refused_with_an_error_and_the_last_good_state_serves(
    emulator: ConfidenceEmulator,
    caplog: pytest.LogCaptureFixture,
    name: str,
    serve: Callable[[ConfidenceEmulator], None],
    expected: str,
    transient: bool,
) -> None:
    caplog.set_level(logging.INFO, logger="confidence")
    provider = make_provider(emulator, state_poll_interval=0.1)
    with recording_events() as events:
        api.set_provider_and_wait(provider)
        client = api.get_client()
        runtime = provider._runtime
        assert runtime is not None
        etag = runtime._syncer.etag

        serve(emulator)
        error = events.wait_for(ProviderEvent.PROVIDER_ERROR)[0]
        assert expected in (error.message or "")
        assert error.error_code == ErrorCode.GENERAL
        assert SECRET not in (error.message or "")
        assert emulator.encryption_key_hex not in (error.message or "")
        # Status ERROR, but evaluations go on, from the last good state.
        assert client.get_provider_status() is ProviderStatus.ERROR
        details = client.get_string_details("feature.color", "none", USER)
        assert (details.value, details.error_code) == ("blue", None)
        assert runtime._syncer.etag == etag  # the bad state's ETag is never kept

        if transient:
            # The CDN goes back to the good state: a 304 on the old ETag confirms it.
            events.wait_for(ProviderEvent.PROVIDER_READY, count=2)
            assert _color() == "blue"
        else:
            emulator.set_state(sample_state(color="green").build())
            events.wait_for(ProviderEvent.PROVIDER_READY, count=2)
            wait_until(lambda: _color() == "green")
            # Delivered after the recovery READY's handlers have returned (docs/errors.md).
            events.wait_for(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)
        assert client.get_provider_status() is ProviderStatus.READY
        settle_events()
        assert len(_errors(events)) == 1  # once per episode, not once per poll
        assert provider._runtime is runtime and not runtime.finished  # never a crash

    # One ERROR line for the episode (the sync loop may add its own STALE line when the bad
    # state is served long enough; each failed poll is a WARNING).
    refused = [r for r in caplog.records if "Refused a bad resolver state" in r.getMessage()]
    assert len(refused) == 1
    assert refused[0].levelno == logging.ERROR and expected in refused[0].getMessage()


def test_max_state_bytes_is_a_provider_option(emulator: ConfidenceEmulator) -> None:
    """A limit below the real state's size refuses it: at start-up, nothing to serve."""
    provider = make_provider(emulator, max_state_bytes=200, init_timeout=1.0)
    with recording_events():
        details = None
        try:
            api.set_provider_and_wait(provider)
        except Exception as exc:
            details = str(exc)
    assert details is not None and "over the 200-byte limit" in details
    assert provider.is_ready is False


def test_state_too_large_for_the_resolver_memory_cap_is_refused(
    emulator: ConfidenceEmulator,
) -> None:
    """The new state traps a fresh instance (out of guest memory) while it loads: refused,
    and the instances serving the last good state are untouched."""
    provider = make_provider(emulator, state_poll_interval=0.1, resolver_memory_limit=24 * MiB)
    with recording_events() as events:
        api.set_provider_and_wait(provider)
        emulator.set_state(_huge_value_state(20 * MiB))
        error = events.wait_for(ProviderEvent.PROVIDER_ERROR, timeout=20)[0]
        assert "state rejected by apply" in (error.message or "")
        for _ in range(20):
            assert _color() == "blue"
        emulator.set_state(sample_state(color="red").build())
        wait_until(lambda: _color() == "red", timeout=20)
        events.wait_for(ProviderEvent.PROVIDER_READY, count=2)


def test_dangling_references_follow_the_reference_rules(emulator: ConfidenceEmulator) -> None:
    """A rule whose segment is missing is skipped (as in the conformance suite's
    `missing-segment-flag`), a rule that assigns a variant the flag lacks makes that one flag
    an error, a flag enabled for a client the state lacks is simply not for us; everything
    else keeps working. So such a state is applied, not refused."""
    dangling = (
        StateBuilder(account=ACCOUNT)
        .client(SECRET)
        .segment("segments/everyone")
        .flag(
            "flags/feature",
            variants={variant("feature", "red"): {"color": "red"}},
            rules=[rollout("segments/everyone", {variant("feature", "red"): 100})],
        )
        .flag(
            "flags/no-segment",
            variants={variant("no-segment", "on"): {"enabled": True}},
            rules=[
                rollout("segments/deleted", {variant("no-segment", "on"): 100}),
                rollout("segments/everyone", {variant("no-segment", "on"): 100}),
            ],
        )
        .flag(
            "flags/no-variant",
            variants={variant("no-variant", "on"): {"enabled": True}},
            rules=[rollout("segments/everyone", {variant("no-variant", "deleted"): 100})],
        )
        .flag(
            "flags/other-client",
            variants={variant("other-client", "on"): {"enabled": True}},
            rules=[rollout("segments/everyone", {variant("other-client", "on"): 100})],
            clients=["clients/not-in-this-state"],
        )
    )
    provider = make_provider(emulator, state_poll_interval=0.1)
    with recording_events() as events:
        api.set_provider_and_wait(provider)
        emulator.set_state(dangling.build())
        events.wait_for(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)
        client = api.get_client()
        assert _color() == "red"
        skipped = client.get_boolean_details("no-segment.enabled", False, USER)
        assert (skipped.value, skipped.reason, skipped.error_code) == (
            True,
            Reason.TARGETING_MATCH,
            None,
        )
        broken = client.get_boolean_details("no-variant.enabled", False, USER)
        assert (broken.value, broken.reason, broken.error_code) == (
            False,
            Reason.ERROR,
            ErrorCode.GENERAL,
        )
        foreign = client.get_boolean_details("other-client.enabled", False, USER)
        assert (foreign.value, foreign.error_code) == (False, ErrorCode.FLAG_NOT_FOUND)
        assert _errors(events) == []
        assert client.get_provider_status() is ProviderStatus.READY


def test_bad_state_before_the_first_good_one_is_not_ready_then_recovers(
    emulator: ConfidenceEmulator,
) -> None:
    emulator.set_state(sample_state().build()[:-7])
    provider = make_provider(emulator, state_poll_interval=0.1, init_timeout=1.0)
    with pytest.raises(Exception, match="state rejected by apply"):
        api.set_provider_and_wait(provider)
    details = api.get_client().get_string_details("feature.color", "none", USER)
    assert details.error_code == ErrorCode.PROVIDER_NOT_READY
    emulator.set_state(sample_state().build())
    wait_until(lambda: _color() == "blue")
