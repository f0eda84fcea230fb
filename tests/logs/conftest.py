"""Fixtures for the tests of the log pipeline: flag logs, exposures, delivery, events, spool
(pytest injects them by name)."""

from provider_support import emulator, openfeature_api

__all__ = ["emulator", "openfeature_api"]
