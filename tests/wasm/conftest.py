"""Fixtures for the tests of the resolver host (engine, ABI, pool, resolve core, conformance)
(pytest injects them by name)."""

from provider_support import emulator, openfeature_api

__all__ = ["emulator", "openfeature_api"]
