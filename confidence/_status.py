"""The provider's status state machine, sans I/O: typed events in, transitions out.

`StatusMachine.feed(event)` is the only way the status changes. It runs no loop, starts no
thread, logs nothing and sleeps never: the runtime feeds it what happened (a state was
applied, a sync failed with a typed `FailureKind`, ...) and forwards the `Transition`s it
returns to its listener, which maps them to OpenFeature events. So every rule below is unit
tested without a loop (tests/provider/test_status_machine.py), as h11 tests its connection states.

Statuses (`Status`, the official provider's `get_status()` vocabulary):

- NOT_READY: no state yet (or stopped); FATAL: no state, and a failure that waiting will not
  heal (wrong secret or key, no resolver, no state source);
- READY: a state is loaded and refreshes;
- STALE: the state could not be refreshed `stale_after_failures` times in a row, or it came
  from the state cache and no sync has confirmed it yet (`serving_cached_state`);
- ERROR: the CDN serves a state we refused (undecryptable, invalid); the last good one keeps
  serving until any fetch succeeds.

Invariants: a transition is returned only for a real change (never READY twice in a row,
never FATAL twice); the first state yields `Transition(READY, first=True)` exactly once;
CONFIGURATION_CHANGED carries the flags whose content changed, sorted, and only when some did.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from confidence._http import FailureKind

__all__ = [
    "CacheServed",
    "Fatal",
    "StateApplied",
    "Status",
    "StatusMachine",
    "Stopped",
    "SyncFailed",
    "SyncRecovered",
    "SyncStale",
    "SyncSucceeded",
    "Transition",
    "TransitionKind",
]

# What a failed fetch means (typed by the syncer, never parsed from its message): before any
# state, these will not heal by waiting (FATAL); a 404 is not among them, because a new
# credential's first state may appear later (it is retried with backoff, status ERROR).
_FATAL_KINDS: Final = frozenset({FailureKind.AUTH, FailureKind.UNDECRYPTABLE})
# ... and these ones mean the CDN served a state we cannot use (not a network problem): with
# a state loaded, that is an ERROR (the last good state keeps serving) until a fetch succeeds.
_BAD_STATE_KINDS: Final = frozenset({FailureKind.UNDECRYPTABLE, FailureKind.INVALID_STATE})


class Status(enum.Enum):
    NOT_READY = "NOT_READY"
    READY = "READY"
    STALE = "STALE"
    ERROR = "ERROR"
    FATAL = "FATAL"


class TransitionKind(enum.Enum):
    READY = "READY"
    STALE = "STALE"
    ERROR = "ERROR"
    CONFIGURATION_CHANGED = "CONFIGURATION_CHANGED"


@dataclass(frozen=True, slots=True)
class Transition:
    kind: TransitionKind
    message: str | None = None
    fatal: bool = False
    flags_changed: tuple[str, ...] = ()
    first: bool = False  # READY: the very first state of this runtime


# -- events ------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StateApplied:
    """A state is in the resolver pool (from the CDN, a state_file or a forked parent)."""

    flag_digests: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class CacheServed:
    """A state from state_cache_dir is in the pool (no sync has confirmed it)."""

    flag_digests: Mapping[str, int]


@dataclass(frozen=True, slots=True)
class SyncSucceeded:
    """A fetch succeeded (a new state, already fed as StateApplied, or a 304)."""


@dataclass(frozen=True, slots=True)
class SyncRecovered:
    """The syncer is READY again: its first success, or the first after failures."""


@dataclass(frozen=True, slots=True)
class SyncFailed:
    kind: FailureKind | None
    message: str
    consecutive_failures: int


@dataclass(frozen=True, slots=True)
class SyncStale:
    """The syncer went STALE by its own count (from its own READY)."""


@dataclass(frozen=True, slots=True)
class Fatal:
    """A failure that will not heal by waiting (e.g. no resolver, an unusable state_file)."""

    message: str


@dataclass(frozen=True, slots=True)
class Stopped:
    pass


Event = (
    StateApplied | CacheServed | SyncSucceeded | SyncRecovered | SyncFailed | SyncStale | Fatal
) | Stopped


class _Phase(enum.Enum):
    STARTING = "STARTING"  # no state yet
    READY = "READY"
    STALE = "STALE"
    ERROR = "ERROR"  # the CDN served a state we refused; the last good one keeps serving
    STOPPED = "STOPPED"


def _flag_key(name: str) -> str:
    # The resolver names flags "flags/<key>"; OpenFeature users know them by key.
    return name[6:] if name.startswith("flags/") else name


_NOTHING: Final[tuple[Transition, ...]] = ()


class StatusMachine:
    """One runtime's status. Fed from one thread (the runtime's loop); read from any (each
    read is of one attribute)."""

    def __init__(self, stale_after_failures: int) -> None:
        self._stale_after = stale_after_failures
        self._phase = _Phase.STARTING
        self._digests: Mapping[str, int] | None = None
        self.fatal_error: str | None = None
        self.last_error: str | None = None
        # Serving a state_cache_dir state that no sync has confirmed yet (reason STALE).
        self.serving_cached_state = False

    # -- read-only view -------------------------------------------------------------------------

    @property
    def has_state(self) -> bool:
        return self._digests is not None and self._phase is not _Phase.STOPPED

    @property
    def is_stale(self) -> bool:
        return self._phase is _Phase.STALE

    @property
    def refusing_bad_state(self) -> bool:
        return self._phase is _Phase.ERROR

    @property
    def settled(self) -> bool:
        """A first state, or a fatal failure: whoever waits for readiness has an answer."""
        return self._digests is not None or self.fatal_error is not None

    @property
    def status(self) -> Status:
        if not self.has_state:
            return Status.FATAL if self.fatal_error is not None else Status.NOT_READY
        if self._phase is _Phase.STALE:
            return Status.STALE
        if self._phase is _Phase.ERROR:
            return Status.ERROR
        return Status.READY

    def cached_message(self) -> str:
        return f"serving a cached resolver state; Confidence unreachable: {self.last_error}"

    # -- the one way in -----------------------------------------------------------------------

    def feed(self, event: Event) -> tuple[Transition, ...]:
        """Apply `event`; return the transitions it caused, in the order to report them."""
        if isinstance(event, StateApplied):
            out = self._applied(event.flag_digests, from_cache=False)
            self.serving_cached_state = False
            return out
        if isinstance(event, CacheServed):
            self.serving_cached_state = True  # before: a first state settles as STALE
            out = self._applied(event.flag_digests, from_cache=True)
            return (*out, Transition(TransitionKind.STALE, message=self.cached_message()))
        if isinstance(event, SyncFailed):
            return self._failed(event)
        if isinstance(event, SyncSucceeded):
            # Any successful fetch ends a bad-state episode: a new good state (already
            # announced), or a 304 / the same content, i.e. the last good state again.
            if self._phase is _Phase.ERROR:
                self._phase = _Phase.READY
                return (Transition(TransitionKind.READY, message="resolver state sync recovered"),)
            return _NOTHING
        if isinstance(event, SyncRecovered):
            self.last_error = None
            if self._phase is _Phase.STALE:
                self._phase = _Phase.READY
                return (Transition(TransitionKind.READY, message="state sync recovered"),)
            return _NOTHING
        if isinstance(event, SyncStale):
            return self._stale()
        if isinstance(event, Fatal):
            return self._fatal(event.message)
        self._phase = _Phase.STOPPED  # Stopped
        return _NOTHING

    # -- rules ------------------------------------------------------------------------------

    def _applied(self, current: Mapping[str, int], *, from_cache: bool) -> tuple[Transition, ...]:
        previous, self._digests = self._digests, current
        if previous is None:
            self._phase = _Phase.STALE if from_cache else _Phase.READY
            self.fatal_error = None
            if not from_cache:  # (a cache start: the error that sent us there still holds)
                self.last_error = None
            return (Transition(TransitionKind.READY, first=True),)
        out: list[Transition] = []
        if self._phase in (_Phase.STALE, _Phase.ERROR):
            self._phase = _Phase.READY
            out.append(Transition(TransitionKind.READY))
        changed = tuple(
            sorted(
                _flag_key(name)
                for name in previous.keys() | current.keys()
                if previous.get(name) != current.get(name)
            )
        )
        if changed:
            out.append(Transition(TransitionKind.CONFIGURATION_CHANGED, flags_changed=changed))
        return tuple(out)

    def _failed(self, event: SyncFailed) -> tuple[Transition, ...]:
        message = event.message
        self.last_error = message
        out: list[Transition] = []
        if self.serving_cached_state:
            # Announced again on every failure (the provider drops repeats): the SDK only
            # believes STALE once it has processed initialize()'s READY.
            out.append(Transition(TransitionKind.STALE, message=self.cached_message()))
        if self._digests is not None and event.consecutive_failures >= self._stale_after:
            # The syncer only goes STALE from its own READY; a state that came from a
            # state_file and was never refreshed is just as stale.
            out.extend(self._stale())
        if (
            self._digests is not None
            and event.kind in _BAD_STATE_KINDS
            and self._phase in (_Phase.READY, _Phase.STALE)
        ):
            # Undecryptable, undecodable, refused by the resolver or too large: the last
            # good state keeps serving. Said once per episode.
            self._phase = _Phase.ERROR
            out.append(
                Transition(
                    TransitionKind.ERROR,
                    message=f"refused a bad resolver state (serving the last good one): {message}",
                )
            )
        if self._digests is None and event.kind in _FATAL_KINDS:
            # Wrong secret or key: say so now instead of letting initialize() time out.
            out.extend(self._fatal(message))
        return tuple(out)

    def _stale(self) -> tuple[Transition, ...]:
        if self._phase is not _Phase.READY:
            return _NOTHING
        self._phase = _Phase.STALE
        return (
            Transition(
                TransitionKind.STALE,
                message=f"resolver state could not be refreshed: {self.last_error}",
            ),
        )

    def _fatal(self, message: str) -> tuple[Transition, ...]:
        first = self.fatal_error is None
        self.fatal_error = message
        self.last_error = message
        if not first:
            return _NOTHING
        return (Transition(TransitionKind.ERROR, message=message, fatal=True),)
