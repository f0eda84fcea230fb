"""FastAPI with Confidence flags: the provider lives in the app's lifespan.

    export CONFIDENCE_CLIENT_SECRET=...       # required
    export CONFIDENCE_ENCRYPTION_KEY=...      # 64 hex characters, for the encrypted state
    uvicorn fastapi_app:app --app-dir examples

    curl 'http://127.0.0.1:8000/checkout?user=alice&country=SE'

`CONFIDENCE_CDN_BASE_URL` / `CONFIDENCE_API_BASE_URL` point it at another endpoint, such as
the Confidence emulator (`python -m confidence.testing.emulator`).

The provider runs in uvicorn's event loop: `async with` starts its background tasks (state
polling, log flushing) and returns once the first state is loaded, so no request is served
before flags are ready; leaving the block at shutdown stops the tasks and flushes the
exposure logs. `get_*_async` evaluations run inline on the loop, without a thread hop.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from openfeature import api
from openfeature.evaluation_context import EvaluationContext

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


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    async with provider_from_env() as provider:
        # Returns at once: the provider is already started, so the SDK marks it READY
        # before the first request.
        api.set_provider_and_wait(provider)
        yield
    # Here the provider has stopped and flushed its logs (bounded by shutdown_timeout).


app = FastAPI(lifespan=lifespan)


def _text(value: object) -> str | None:
    """An OpenFeature Reason (a str enum) or None, as plain JSON text."""
    return None if value is None else str(getattr(value, "value", value))


@app.get("/")
async def index() -> dict[str, Any]:
    """What to call: this app has no page of its own."""
    return {
        "app": "Confidence flags with FastAPI (examples/fastapi_app.py)",
        "try": ["/checkout?user=alice&country=SE", "/checkout?user=bob", "/health"],
        "checkout": "evaluates the flag `checkout` (enabled, layout) for ?user=...&country=...",
        "health": "the OpenFeature provider status",
    }


@app.get("/checkout")
async def checkout(user: str, country: str | None = None) -> dict[str, Any]:
    context = EvaluationContext(user, {"country": country} if country else {})
    client = api.get_client()
    enabled = await client.get_boolean_details_async("checkout.enabled", False, context)
    layout = await client.get_string_value_async("checkout.layout", "classic", context)
    return {
        "user": user,
        "new_checkout": enabled.value,
        "layout": layout,
        "variant": enabled.variant,
        "reason": _text(enabled.reason),
        "error": _text(enabled.error_code),
    }


@app.get("/health")
async def health() -> dict[str, str]:
    return {"flags": api.get_client().get_provider_status().value}
