"""Confidence feature flags for OpenFeature, resolved locally in a WebAssembly resolver."""

from __future__ import annotations

import logging as _logging
from typing import TYPE_CHECKING, Any

from confidence._version import __version__

if TYPE_CHECKING:
    from confidence._remote_sync import RemoteMaterializationStore
    from confidence._stats import EventStats, LatencySummary, ProviderStats, SnapshotConfig
    from confidence.errors import (
        ConfidenceError,
        ContextError,
        EventError,
        MaterializationError,
        StateDecryptionError,
        StateError,
    )
    from confidence.materialization import (
        AsyncMaterializationStore,
        MaterializationNotSupportedError,
        MaterializationStore,
        RemoteMaterializationError,
        UnsupportedMaterializationStore,
    )
    from confidence.provider import ConfidenceProvider

# A library never configures logging: without this, Python's "last resort" handler would
# print our WARNINGs to stderr in apps that set up no logging at all.
_logging.getLogger("confidence").addHandler(_logging.NullHandler())

__all__ = [
    "AsyncMaterializationStore",
    "ConfidenceError",
    "ConfidenceProvider",
    "ContextError",
    "EventError",
    "EventStats",
    "LatencySummary",
    "MaterializationError",
    "MaterializationNotSupportedError",
    "MaterializationStore",
    "ProviderStats",
    "RemoteMaterializationError",
    "RemoteMaterializationStore",
    "SnapshotConfig",
    "StateDecryptionError",
    "StateError",
    "UnsupportedMaterializationStore",
    "__version__",
]

#: Where each public name lives. Loaded on first use (PEP 562), so that `import confidence`
#: costs nothing for the CLI, the testing helpers or the conformance runner; and a submodule
#: import (`confidence.testing...`) does not drag the provider in.
_EXPORTS: dict[str, str] = {
    "ConfidenceProvider": "confidence.provider",
    "EventStats": "confidence._stats",
    "LatencySummary": "confidence._stats",
    "ProviderStats": "confidence._stats",
    "SnapshotConfig": "confidence._stats",
    "RemoteMaterializationStore": "confidence._remote_sync",
    "AsyncMaterializationStore": "confidence.materialization",
    "MaterializationNotSupportedError": "confidence.materialization",
    "MaterializationStore": "confidence.materialization",
    "UnsupportedMaterializationStore": "confidence.materialization",
    "RemoteMaterializationError": "confidence.materialization",
    # The exceptions (docs/errors.md, "Exceptions"); confidence.errors imports nothing.
    "ConfidenceError": "confidence.errors",
    "ContextError": "confidence.errors",
    "EventError": "confidence.errors",
    "MaterializationError": "confidence.errors",
    "StateDecryptionError": "confidence.errors",
    "StateError": "confidence.errors",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'confidence' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # next time: a plain module attribute
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
