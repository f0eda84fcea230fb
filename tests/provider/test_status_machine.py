"""The status state machine (`confidence._status`), driven without a loop, a thread or I/O.

Each test feeds typed events and checks the transitions returned and the status after, like
h11's connection-state tests. (The end-to-end regime, a real runtime against the emulator,
is in test_reliability_state.py, test_state_cache.py and test_event_order.py.)
"""

from __future__ import annotations

import pytest

from confidence._http import FailureKind
from confidence._status import (
    CacheServed,
    Fatal,
    StateApplied,
    Status,
    StatusMachine,
    Stopped,
    SyncFailed,
    SyncRecovered,
    SyncStale,
    SyncSucceeded,
    Transition,
    TransitionKind,
)

READY = TransitionKind.READY
STALE = TransitionKind.STALE
ERROR = TransitionKind.ERROR
CHANGED = TransitionKind.CONFIGURATION_CHANGED

STATE = {"flags/a": 1, "flags/b": 2}


def kinds(transitions: tuple[Transition, ...]) -> list[TransitionKind]:
    return [t.kind for t in transitions]


def failed(kind: FailureKind | None, n: int, message: str = "boom") -> SyncFailed:
    return SyncFailed(kind=kind, message=message, consecutive_failures=n)


def loaded(stale_after: int = 3) -> StatusMachine:
    machine = StatusMachine(stale_after)
    machine.feed(StateApplied(STATE))
    return machine


def test_starts_not_ready_and_unsettled() -> None:
    machine = StatusMachine(3)
    assert machine.status is Status.NOT_READY
    assert not machine.has_state and not machine.settled and not machine.serving_cached_state


def test_first_state_is_one_first_ready_and_clears_errors() -> None:
    machine = StatusMachine(3)
    assert machine.feed(failed(FailureKind.NETWORK, 1)) == ()
    assert machine.last_error == "boom"
    out = machine.feed(StateApplied(STATE))
    assert out == (Transition(READY, first=True),)
    assert machine.status is Status.READY and machine.settled
    assert machine.last_error is None and machine.fatal_error is None


def test_a_new_state_reports_only_the_flags_whose_content_changed_sorted_by_key() -> None:
    machine = loaded()
    assert machine.feed(StateApplied(dict(STATE))) == ()  # same content: nothing
    out = machine.feed(StateApplied({"flags/b": 3, "flags/c": 1}))
    assert out == (Transition(CHANGED, flags_changed=("a", "b", "c")),)


def test_stale_after_n_consecutive_failures_then_recovery() -> None:
    machine = loaded(stale_after=2)
    assert machine.feed(failed(FailureKind.TIMEOUT, 1, "timed out")) == ()
    out = machine.feed(failed(FailureKind.TIMEOUT, 2, "timed out"))
    assert out == (Transition(STALE, message="resolver state could not be refreshed: timed out"),)
    assert machine.status is Status.STALE
    # The syncer's own STALE at the same count is no second transition.
    assert machine.feed(SyncStale()) == ()
    assert machine.feed(failed(FailureKind.TIMEOUT, 3)) == ()
    out = machine.feed(SyncRecovered())
    assert out == (Transition(READY, message="state sync recovered"),)
    assert machine.status is Status.READY and machine.last_error is None


def test_a_new_state_while_stale_is_ready_then_configuration_changed() -> None:
    machine = loaded(stale_after=1)
    machine.feed(failed(FailureKind.SERVER, 1))
    out = machine.feed(StateApplied({"flags/a": 9}))
    assert kinds(out) == [READY, CHANGED]
    assert out[1].flags_changed == ("a", "b")


def test_syncer_stale_is_honoured_only_from_ready() -> None:
    machine = StatusMachine(3)
    assert machine.feed(SyncStale()) == ()  # no state: nothing is stale
    machine.feed(StateApplied(STATE))
    assert kinds(machine.feed(SyncStale())) == [STALE]


@pytest.mark.parametrize("kind", [FailureKind.UNDECRYPTABLE, FailureKind.INVALID_STATE])
def test_a_refused_state_is_error_once_per_episode_until_any_fetch_succeeds(
    kind: FailureKind,
) -> None:
    machine = loaded()
    out = machine.feed(failed(kind, 1, "bad body"))
    assert out == (
        Transition(
            ERROR, message="refused a bad resolver state (serving the last good one): bad body"
        ),
    )
    assert not out[0].fatal
    assert machine.status is Status.ERROR and machine.has_state
    assert machine.feed(failed(kind, 2)) == ()  # said once per episode
    out = machine.feed(SyncSucceeded())
    assert out == (Transition(READY, message="resolver state sync recovered"),)
    assert machine.feed(SyncSucceeded()) == ()


def test_stale_then_refused_state_is_stale_then_error() -> None:
    # The order the runtime reports them in, from one failure.
    machine = loaded(stale_after=1)
    assert kinds(machine.feed(failed(FailureKind.INVALID_STATE, 1))) == [STALE, ERROR]
    assert machine.status is Status.ERROR


@pytest.mark.parametrize("kind", [FailureKind.AUTH, FailureKind.UNDECRYPTABLE])
def test_bad_credentials_before_any_state_are_fatal_once(kind: FailureKind) -> None:
    machine = StatusMachine(3)
    out = machine.feed(failed(kind, 1, "HTTP 401"))
    assert out == (Transition(ERROR, message="HTTP 401", fatal=True),)
    assert machine.status is Status.FATAL and machine.settled
    assert machine.fatal_error == "HTTP 401"
    assert machine.feed(failed(kind, 2, "HTTP 401")) == ()


@pytest.mark.parametrize(
    "kind", [FailureKind.NOT_FOUND, FailureKind.NETWORK, FailureKind.TIMEOUT, None]
)
def test_failures_that_may_heal_are_never_fatal(kind: FailureKind | None) -> None:
    machine = StatusMachine(1)
    for n in range(1, 5):
        assert machine.feed(failed(kind, n)) == ()
    assert machine.status is Status.NOT_READY and not machine.settled


def test_auth_failure_with_a_state_loaded_is_only_staleness() -> None:
    machine = loaded(stale_after=1)
    assert kinds(machine.feed(failed(FailureKind.AUTH, 1))) == [STALE]
    assert machine.fatal_error is None


def test_fatal_is_reported_once_and_a_later_state_clears_it() -> None:
    machine = StatusMachine(3)
    assert machine.feed(Fatal("no resolver")) == (
        Transition(ERROR, message="no resolver", fatal=True),
    )
    assert machine.feed(Fatal("again")) == ()
    assert machine.fatal_error == "again" and machine.status is Status.FATAL
    assert kinds(machine.feed(StateApplied(STATE))) == [READY]
    assert machine.fatal_error is None and machine.status is Status.READY


def test_cold_start_from_the_cache_is_stale_until_a_fetched_state() -> None:
    machine = StatusMachine(3)
    machine.feed(failed(FailureKind.NETWORK, 1, "connection refused"))
    out = machine.feed(CacheServed(STATE))
    message = "serving a cached resolver state; Confidence unreachable: connection refused"
    assert out == (Transition(READY, first=True), Transition(STALE, message=message))
    assert machine.status is Status.STALE and machine.serving_cached_state
    # Every failure re-announces STALE (the provider drops repeats).
    assert machine.feed(failed(FailureKind.NETWORK, 2, "connection refused")) == (
        Transition(STALE, message=message),
    )
    out = machine.feed(StateApplied(STATE))  # same content, fetched: READY, no change
    assert out == (Transition(READY),)
    assert not machine.serving_cached_state and machine.status is Status.READY


def test_stopped_has_no_state() -> None:
    machine = loaded()
    assert machine.feed(Stopped()) == ()
    assert not machine.has_state and machine.status is Status.NOT_READY
