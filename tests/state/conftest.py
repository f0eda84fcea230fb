"""Fixtures for the tests of state sync, state files, the state cache and AES-GCM
(pytest injects them by name)."""

from provider_support import emulator, openfeature_api

__all__ = ["emulator", "openfeature_api"]
