"""Fixtures for the tests of what users run: CLI, demo, docs snippets, examples, packaging
(pytest injects them by name)."""

