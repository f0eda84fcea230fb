"""Fixtures for the tests of the OpenFeature provider: lifecycle, events, evaluation, compatibility
(pytest injects them by name)."""

from provider_support import emulator, openfeature_api

__all__ = ["emulator", "openfeature_api"]
