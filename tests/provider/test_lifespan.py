"""The FastAPI/Starlette lifespan pattern, served for real by uvicorn on 127.0.0.1 and
called over HTTP."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI, Request
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent
from provider_support import (
    make_provider,
    recording_events,
    requires_wasm,
    sample_state,
    settle_events,
    variant,
)
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from confidence.testing.emulator import ConfidenceEmulator

pytestmark = [requires_wasm, pytest.mark.usefixtures("openfeature_api")]


@contextmanager
def serve(app: Any) -> Iterator[str]:
    """Run `app` with uvicorn on 127.0.0.1 in a thread (its own event loop); yield its URL."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, lifespan="on", log_level="warning")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()
        assert not thread.is_alive(), "uvicorn did not shut down"


def fastapi_app(emulator: ConfidenceEmulator) -> FastAPI:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[dict[str, Any]]:
        async with make_provider(emulator) as provider:
            api.set_provider_and_wait(provider)  # returns at once: already started
            yield {"flags": api.get_client()}

    app = FastAPI(lifespan=lifespan)

    @app.get("/async-flag")
    async def async_flag(request: Request, user: str = "anon") -> dict[str, Any]:
        details = await request.state.flags.get_boolean_details_async(
            "feature.enabled", False, EvaluationContext(user)
        )
        return {"value": details.value, "reason": details.reason, "variant": details.variant}

    @app.get("/sync-flag")
    def sync_flag(request: Request, user: str = "anon") -> dict[str, Any]:
        # A sync endpoint: FastAPI runs it in a worker thread.
        details = request.state.flags.get_string_details(
            "feature.color", "none", EvaluationContext(user)
        )
        return {"value": details.value, "variant": details.variant}

    return app


def test_fastapi_lifespan_over_http(emulator: ConfidenceEmulator) -> None:
    with recording_events() as events:
        with serve(fastapi_app(emulator)) as url, httpx.Client(base_url=url) as http:
            for i in range(5):
                body = http.get("/async-flag", params={"user": f"u{i}"}).json()
                assert body == {
                    "value": True,
                    "reason": "TARGETING_MATCH",
                    "variant": variant("feature", "blue"),
                }
            body = http.get("/sync-flag", params={"user": "u9"}).json()
            assert body == {"value": "blue", "variant": variant("feature", "blue")}
            # A state update reaches the running app.
            emulator.set_state(sample_state(color="red").build())
            events.wait_for(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)
            assert http.get("/sync-flag").json()["value"] == "red"
        settle_events()
        assert len(events.of(ProviderEvent.PROVIDER_READY)) == 1
    # The lifespan's `async with` exit flushed the exposures before uvicorn exited.
    assert emulator.exposure_count("feature") >= 6


def starlette_app(emulator: ConfidenceEmulator, calls: list[str]) -> Starlette:
    provider = make_provider(emulator)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await provider.start()
        calls.append("started")
        try:
            yield
        finally:
            await provider.aclose()
            calls.append("closed")

    async def endpoint(request: Any) -> JSONResponse:
        details = await provider.resolve_integer_details_async(
            "feature.size", 0, EvaluationContext("someone")
        )
        return JSONResponse({"value": details.value})

    return Starlette(routes=[Route("/size", endpoint)], lifespan=lifespan)


def test_starlette_start_and_aclose(emulator: ConfidenceEmulator) -> None:
    calls: list[str] = []
    with serve(starlette_app(emulator, calls)) as url:
        assert httpx.get(f"{url}/size").json() == {"value": 42}
    assert calls == ["started", "closed"]
    assert emulator.exposure_count("feature") == 1
