"""Confidence feature flags for OpenFeature, resolved locally in a WebAssembly resolver."""

import logging as _logging

from confidence._stats import EventStats, LatencySummary, ProviderStats
from confidence._version import __version__
from confidence.materialization import (
    AsyncMaterializationStore,
    MaterializationNotSupportedError,
    MaterializationStore,
    UnsupportedMaterializationStore,
)
from confidence.provider import ConfidenceProvider

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
    "UnsupportedMaterializationStore",
    "__version__",
]
