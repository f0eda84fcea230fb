"""Shared pytest configuration."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import TYPE_CHECKING

import pytest
import sdk_compat

# Confidence emulator fixtures (network layer): ``confidence_emulator`` (async, anyio) and
# ``confidence_emulator_sync`` (background loop for sync tests).
from confidence.testing.emulator import ConfidenceEmulator
from confidence.testing.pytest_plugin import confidence_emulator, confidence_emulator_sync

if TYPE_CHECKING:
    import aiohttp

# Before openfeature-sdk 0.10 there is no api.set_provider_and_wait: see sdk_compat.
sdk_compat.install()

__all__ = [
    "anyio_backend",
    "confidence_emulator",
    "confidence_emulator_sync",
    "emulator_async",
    "session",
]


@pytest.fixture
def anyio_backend() -> str:
    """Run ``@pytest.mark.anyio`` tests on asyncio only (aiohttp is asyncio-only)."""
    return "asyncio"


# -- network-layer fixtures, shared by the test_net_*, HTTP-layer and store tests -------------
# (`emulator`, the provider tests' sync emulator serving `sample_state()`, is exposed by each
# folder's conftest.py from provider_support.)


@pytest.fixture
async def emulator_async(
    anyio_backend: str, request: pytest.FixtureRequest
) -> AsyncIterator[ConfidenceEmulator]:
    """An emulator on 127.0.0.1 that accepts the requesting module's `SECRET`."""
    async with ConfidenceEmulator(client_secret=request.module.SECRET) as emu:
        yield emu


@pytest.fixture
async def session(anyio_backend: str) -> AsyncIterator[aiohttp.ClientSession]:
    """An aiohttp session, closed after the test."""
    import aiohttp

    async with aiohttp.ClientSession() as s:
        yield s
