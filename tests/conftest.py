"""Shared pytest configuration."""

from __future__ import annotations

import pytest
import sdk_compat

# Confidence emulator fixtures (network layer): ``confidence_emulator`` (async, anyio) and
# ``confidence_emulator_sync`` (background loop for sync tests).
from confidence.testing.pytest_plugin import confidence_emulator, confidence_emulator_sync

# Before openfeature-sdk 0.10 there is no api.set_provider_and_wait: see sdk_compat.
sdk_compat.install()

__all__ = ["anyio_backend", "confidence_emulator", "confidence_emulator_sync"]


@pytest.fixture
def anyio_backend() -> str:
    """Run ``@pytest.mark.anyio`` tests on asyncio only (aiohttp is asyncio-only)."""
    return "asyncio"
