"""Resolver conformance runner: `python -m confidence.conformance STATE_JSON CASES_JSON`."""
