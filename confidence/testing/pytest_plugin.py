"""pytest fixtures for the Confidence emulator.

Not registered as a ``pytest11`` entry point (so installing the package never changes anyone's
test session); import the fixtures from a ``conftest.py``::

    from confidence.testing.pytest_plugin import confidence_emulator, confidence_emulator_sync

``confidence_emulator`` is async and needs anyio's pytest plugin (``@pytest.mark.anyio`` plus an
``anyio_backend`` fixture); ``confidence_emulator_sync`` runs the server on a background event
loop for plain sync tests. Both start with no state served: call ``set_state(...)`` first.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import pytest

from .emulator import ConfidenceEmulator

__all__ = ["confidence_emulator", "confidence_emulator_sync"]


@pytest.fixture
async def confidence_emulator(anyio_backend: str) -> AsyncIterator[ConfidenceEmulator]:
    """A started emulator on 127.0.0.1 (ephemeral port) in the test's event loop."""
    # Requesting ``anyio_backend`` is what makes anyio's plugin run this async fixture.
    async with ConfidenceEmulator() as emulator:
        yield emulator


@pytest.fixture
def confidence_emulator_sync() -> Iterator[ConfidenceEmulator]:
    """A started emulator served from a background event loop (anyio blocking portal)."""
    with ConfidenceEmulator().run_in_thread() as emulator:
        yield emulator
