"""The OpenFeature SDK API the tests use, on every supported openfeature-sdk (0.8.0+).

The tests are written against 0.10 (`api.set_provider_and_wait`, a non-blocking
`api.set_provider`). Before 0.10, `api.set_provider` itself runs `initialize()` to the end
on the calling thread and reports a failure only as a PROVIDER_ERROR event; the stand-in
below gives it 0.10's contract (block, then raise what `initialize()` raised).
"""

from __future__ import annotations

from importlib.metadata import version
from typing import Any

import pytest
from openfeature import api
from openfeature.flag_evaluation import Reason
from openfeature.provider import FeatureProvider

SDK_VERSION: tuple[int, ...] = tuple(
    int(part) for part in version("openfeature-sdk").split(".")[:3] if part.isdigit()
)
#: `api.set_provider_and_wait` exists, and `api.set_provider` returns before initialize().
HAS_SET_PROVIDER_AND_WAIT = hasattr(api, "set_provider_and_wait")
#: `client.track` and `openfeature.track` (the tracking API) exist (0.9+).
HAS_TRACK = SDK_VERSION >= (0, 9)
#: Event handlers run on the SDK's thread pool (0.10+), not inline on the emitting thread.
HANDLERS_ON_A_POOL = SDK_VERSION >= (0, 10)

#: `Reason.STALE` (a plain string before 0.8.2).
STALE_REASON: Reason | str = getattr(Reason, "STALE", "STALE")

#: Examples and docs snippets are user code written for 0.10 (`api.set_provider_and_wait`);
#: docs/quickstart.md says what to call instead on older SDKs.
requires_set_provider_and_wait = pytest.mark.skipif(
    not HAS_SET_PROVIDER_AND_WAIT,
    reason=f"openfeature-sdk {version('openfeature-sdk')} has no api.set_provider_and_wait"
    " (0.10+), which this user code calls",
)

requires_track = pytest.mark.skipif(
    not HAS_TRACK, reason=f"openfeature-sdk {version('openfeature-sdk')} has no tracking API (0.9+)"
)
requires_async_set_provider = pytest.mark.skipif(
    HAS_SET_PROVIDER_AND_WAIT is False,
    reason=f"openfeature-sdk {version('openfeature-sdk')}: set_provider blocks (0.10 runs"
    " initialize() on a thread)",
)


def _set_provider_and_wait(provider: FeatureProvider, domain: str | None = None) -> None:
    raised: list[BaseException] = []
    initialize = provider.initialize

    def recording_initialize(*args: Any, **kwargs: Any) -> None:
        try:
            initialize(*args, **kwargs)
        except Exception as exc:
            raised.append(exc)
            raise

    provider.initialize = recording_initialize  # type: ignore[method-assign]
    try:
        if domain is None:
            api.set_provider(provider)
        else:
            api.set_provider(provider, domain)
    finally:
        del provider.initialize  # back to the class's method
    if raised:
        raise raised[0]


def install() -> None:
    """Give an SDK before 0.10 the `api.set_provider_and_wait` the tests call."""
    if not HAS_SET_PROVIDER_AND_WAIT:
        api.set_provider_and_wait = _set_provider_and_wait  # type: ignore[attr-defined]
