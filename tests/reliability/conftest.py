"""Fixtures for the tests of failure regimes: exits, forks, bad input, bad networks, load
(pytest injects them by name)."""

from provider_support import emulator, openfeature_api

__all__ = ["emulator", "openfeature_api"]
