"""Confidence feature flags for OpenFeature, resolved locally in a WebAssembly resolver."""

import logging as _logging
from typing import TYPE_CHECKING, Any

from confidence._stats import EventStats, LatencySummary, ProviderStats, SnapshotConfig
from confidence._version import __version__
from confidence.materialization import (
    AsyncMaterializationStore,
    MaterializationNotSupportedError,
    MaterializationStore,
    UnsupportedMaterializationStore,
)
from confidence.provider import ConfidenceProvider

if TYPE_CHECKING:
    from confidence._remote_sync import RemoteMaterializationStore as RemoteMaterializationStore

# A library never configures logging: without this, Python's "last resort" handler would
# print our WARNINGs to stderr in apps that set up no logging at all.
_logging.getLogger("confidence").addHandler(_logging.NullHandler())

__all__ = [
    "AsyncMaterializationStore",
    "ConfidenceProvider",
    "EventStats",
    "LatencySummary",
    "MaterializationNotSupportedError",
    "MaterializationStore",
    "ProviderStats",
    "RemoteMaterializationStore",
    "SnapshotConfig",
    "UnsupportedMaterializationStore",
    "__version__",
]


def __getattr__(name: str) -> Any:
    # Loaded on first use: it pulls in the HTTP stack, which `import confidence` need not.
    if name == "RemoteMaterializationStore":
        from confidence._remote_sync import RemoteMaterializationStore

        return RemoteMaterializationStore
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
