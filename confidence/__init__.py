"""Confidence feature flags for OpenFeature, resolved locally in a WebAssembly resolver."""

from confidence._version import __version__
from confidence.materialization import (
    AsyncMaterializationStore,
    MaterializationNotSupportedError,
    MaterializationStore,
    UnsupportedMaterializationStore,
)
from confidence.provider import ConfidenceProvider

__all__ = [
    "AsyncMaterializationStore",
    "ConfidenceProvider",
    "MaterializationNotSupportedError",
    "MaterializationStore",
    "UnsupportedMaterializationStore",
    "__version__",
]
