"""A worker script with Confidence flags: evaluate for a batch of jobs, flush, exit.

    export CONFIDENCE_CLIENT_SECRET=...       # required
    export CONFIDENCE_ENCRYPTION_KEY=...      # 64 hex characters, for the encrypted state
    python examples/worker.py alice:SE bob:US carol

Each argument is a job for one user (`user` or `user:country`); the worker prints one JSON
line per job. `CONFIDENCE_CDN_BASE_URL` / `CONFIDENCE_API_BASE_URL` point it at another
endpoint, such as the Confidence emulator (`python -m confidence.testing.emulator`).

A short-lived process must call `api.shutdown()` before it exits: exposure logs are sent
every `log_poll_interval` (10 s) and at shutdown, so a script that skips it loses them.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import OpenFeatureError

from confidence import ConfidenceProvider


def provider_from_env() -> ConfidenceProvider:
    """A provider configured from CONFIDENCE_* environment variables."""
    options: dict[str, Any] = {}
    for option, variable in (
        ("encryption_key", "CONFIDENCE_ENCRYPTION_KEY"),
        ("cdn_base_url", "CONFIDENCE_CDN_BASE_URL"),
        ("api_base_url", "CONFIDENCE_API_BASE_URL"),
    ):
        if value := os.environ.get(variable):
            options[option] = value
    return ConfidenceProvider(os.environ["CONFIDENCE_CLIENT_SECRET"], **options)


def _text(value: object) -> str | None:
    return None if value is None else str(getattr(value, "value", value))


def process(job: str) -> dict[str, Any]:
    user, _, country = job.partition(":")
    context = EvaluationContext(user, {"country": country} if country else {})
    client = api.get_client()
    enabled = client.get_boolean_details("checkout.enabled", False, context)
    return {
        "user": user,
        "new_checkout": enabled.value,
        "layout": client.get_string_value("checkout.layout", "classic", context),
        "variant": enabled.variant,
        "reason": _text(enabled.reason),
        "error": _text(enabled.error_code),
    }


def main(jobs: Sequence[str]) -> int:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        api.set_provider_and_wait(provider_from_env())  # blocks until the first state
    except OpenFeatureError as exc:
        # Not fatal: every evaluation returns its default (with an error code) until the
        # provider, still retrying in the background, has a state.
        logging.warning("Confidence flags not ready, using defaults: %s", exc)
    try:
        for job in jobs:
            print(json.dumps(process(job)), flush=True)
    finally:
        api.shutdown()  # stops the background thread and flushes exposure logs (bounded)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
