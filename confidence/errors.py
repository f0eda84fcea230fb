"""The provider's exceptions, under one root: `ConfidenceError`.

Catch `ConfidenceError` for "anything this package raised on purpose"; catch a subclass to
act on one case. Each class keeps the builtin base it always had (a `ValueError` stays a
`ValueError`), so code that caught the builtin still catches it. Decide on the class (and
on a `kind` where a class has one), never on the message: messages are for people and may
be reworded. No message contains a client secret or key material.

The hierarchy (docs/errors.md, "Exceptions"; the module named is where it is raised)::

    ConfidenceError
    ├── StateError (ValueError)            a resolver state is unusable (file, cache, CDN
    │   │                                  body); alias StateFileError
    │   ├── StateDecryptionError           the key does not decrypt it;
    │   │                                  alias StateNotDecryptableError
    │   └── MissingAccountIdError          the state has no account id and none was given
    ├── ContextError (ValueError)          the evaluation context cannot be encoded as JSON
    ├── EventError (ValueError)            a tracked event cannot be expressed as an event
    ├── MaterializationError               reading or writing a materialization store failed
    │   ├── MaterializationNotSupportedError   the store does not do this operation
    │   └── RemoteMaterializationError     the remote store failed (`.kind`, `.retryable`)
    ├── HttpFailure                        internal: one request failed (`.kind`)
    ├── ResolverError                      internal: the resolver reported an error (`.kind`)
    ├── NoStateError                       internal: no state loaded yet
    └── WasmTrap                           internal: the WebAssembly guest trapped

The classes defined here are the ones several modules raise; the others live next to their
one raiser and subclass the root. This module imports nothing, so any module may use it.
"""

from __future__ import annotations

__all__ = [
    "ConfidenceError",
    "ContextError",
    "EventError",
    "MaterializationError",
    "MissingAccountIdError",
    "StateDecryptionError",
    "StateError",
    "StateFileError",
    "StateNotDecryptableError",
]


class ConfidenceError(Exception):
    """The root of every exception this package raises on purpose."""


class StateError(ConfidenceError, ValueError):
    """A resolver state cannot be used: unreadable, in no form we understand, or refused.

    The same class whether the state came from `state_file=`, the state cache or the CDN.
    """


class StateDecryptionError(StateError):
    """An encrypted state that the key does not decrypt (too short, wrong key, or corrupted)."""


class MissingAccountIdError(StateError):
    """The state carries no account id and none was given."""


#: The state file's names for the same classes (kept: the CLI and older code use them).
StateFileError = StateError
StateNotDecryptableError = StateDecryptionError


class ContextError(ConfidenceError, ValueError):
    """The evaluation context cannot be expressed as JSON (e.g. it contains a cycle)."""


class EventError(ConfidenceError, ValueError):
    """The event cannot be expressed as a Confidence event."""


class MaterializationError(ConfidenceError):
    """Reading or writing the materialization store failed.

    The resolver raises this class itself (wrapping whatever the store raised); a store
    may raise a subclass (`RemoteMaterializationError`, `MaterializationNotSupportedError`).
    """
