"""Test support: the Confidence emulator, pytest fixtures and state builders."""
