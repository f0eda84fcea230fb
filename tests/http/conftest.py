"""Fixtures for the tests of the HTTP layer and the emulator
(pytest injects them by name)."""

from provider_support import emulator

__all__ = ["emulator"]
