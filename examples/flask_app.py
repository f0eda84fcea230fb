"""Flask (or any WSGI app) with Confidence flags: the sync API.

    export CONFIDENCE_CLIENT_SECRET=...       # required
    export CONFIDENCE_ENCRYPTION_KEY=...      # 64 hex characters, for the encrypted state
    python examples/flask_app.py              # Flask's development server on $PORT (5000)

    curl 'http://127.0.0.1:5000/checkout?user=alice&country=SE'

`CONFIDENCE_CDN_BASE_URL` / `CONFIDENCE_API_BASE_URL` point it at another endpoint, such as
the Confidence emulator (`python -m confidence.testing.emulator`).

`set_provider_and_wait` starts the provider's background loop thread (state polling, log
flushing) and blocks until the first state is loaded (`init_timeout`, 10 s). If that fails,
the app still starts: evaluations return the defaults you pass, and the provider keeps
trying in the background and turns READY when a state arrives. `api.shutdown()` at exit
flushes the exposure logs (the provider also flushes, bounded, when the interpreter exits
without it).

SIGTERM (`kill`, `docker stop`, systemd) ends a plain `python app.py` without running any
exit hook, so the exposures still queued would be lost: the `__main__` block below turns
SIGTERM into a normal exit. The library installs no signal handler itself (signals belong to
the application). gunicorn and uWSGI handle SIGTERM themselves and exit normally, so the
same module served by them needs nothing more.

Under a pre-fork server (gunicorn, uWSGI), start the provider in each worker after the fork,
not at import in the master: see the "Django, gunicorn and pre-fork servers" docs page.
"""

from __future__ import annotations

import atexit
import logging
import os
import signal
import sys
from typing import Any

from flask import Flask, request
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import OpenFeatureError

from confidence import ConfidenceProvider

logger = logging.getLogger(__name__)


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


def start_flags() -> None:
    try:
        api.set_provider_and_wait(provider_from_env())
    except OpenFeatureError as exc:
        logger.warning("Confidence flags not ready yet, serving defaults: %s", exc)
    atexit.register(api.shutdown)


app = Flask(__name__)
start_flags()


def _text(value: object) -> str | None:
    """An OpenFeature Reason (a str enum) or None, as plain JSON text."""
    return None if value is None else str(getattr(value, "value", value))


@app.get("/")
def index() -> dict[str, Any]:
    """What to call: this app has no page of its own."""
    return {
        "app": "Confidence flags with Flask (examples/flask_app.py)",
        "try": ["/checkout?user=alice&country=SE", "/checkout?user=bob", "/health"],
        "checkout": "evaluates the flag `checkout` (enabled, layout) for ?user=...&country=...",
        "health": "the OpenFeature provider status",
    }


@app.get("/checkout")
def checkout() -> dict[str, Any]:
    user = request.args["user"]
    country = request.args.get("country")
    context = EvaluationContext(user, {"country": country} if country else {})
    client = api.get_client()
    enabled = client.get_boolean_details("checkout.enabled", False, context)
    layout = client.get_string_value("checkout.layout", "classic", context)
    return {
        "user": user,
        "new_checkout": enabled.value,
        "layout": layout,
        "variant": enabled.variant,
        "reason": _text(enabled.reason),
        "error": _text(enabled.error_code),
    }


@app.get("/health")
def health() -> dict[str, str]:
    return {"flags": api.get_client().get_provider_status().value}


def _exit_on_sigterm(signum: int, frame: object) -> None:
    # SystemExit unwinds app.run() in the main thread; the normal exit then flushes.
    sys.exit(0)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, _exit_on_sigterm)
    app.run(host=os.environ.get("HOST", "127.0.0.1"), port=int(os.environ.get("PORT", "5000")))
