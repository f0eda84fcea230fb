"""Fixtures for the tests of materialization stores and resolves with them
(pytest injects them by name)."""

from materialization_support import redis_server
from provider_support import emulator

__all__ = ["emulator", "redis_server"]
