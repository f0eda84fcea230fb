"""Shared helpers for the provider tests: a sample state, provider factory, event recorder."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import EventDetails, ProviderEvent

from confidence import ConfidenceProvider
from confidence.testing.emulator import (
    DEFAULT_ACCOUNT_ID,
    DEFAULT_CLIENT_SECRET,
    ConfidenceEmulator,
)
from confidence.testing.state_builder import StateBuilder, attribute_eq, rollout

PROVIDER_NAME = "confidence-sdk-python-local"
SECRET = DEFAULT_CLIENT_SECRET
ACCOUNT = DEFAULT_ACCOUNT_ID
REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"


def default_sigint() -> None:
    """`preexec_fn` for a child that a test stops with SIGINT, as a user's Ctrl-C would.

    A shell without job control starts background jobs (`cmd &`, nohup, a CI runner) with
    SIGINT ignored, the child inherits that, and Python then installs no KeyboardInterrupt
    handler: SIGINT would do nothing. The child starts from the default, as in a terminal.
    """
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def wasm_available() -> bool:
    return (REPO / "resolver.wasm").is_file() or (REPO / "confidence" / "resolver.wasm").is_file()


requires_wasm = pytest.mark.skipif(
    not wasm_available(), reason="resolver.wasm is not built (run `nox -s wasm`)"
)


def variant(flag: str, name: str) -> str:
    return f"flags/{flag}/variants/{name}"


#: The examples' credentials (examples/ read them from the environment).
EXAMPLES_SECRET = "examples-client-secret"
EXAMPLES_ACCOUNT = "examples-account"


def examples_state() -> bytes:
    """The examples' state (examples/, tests/product/test_examples.py, the exit tests):
    `checkout`: the new layout for Sweden, a different (non-default) one elsewhere."""
    new, old = variant("checkout", "new"), variant("checkout", "old")
    return (
        StateBuilder(account=EXAMPLES_ACCOUNT)
        .client(EXAMPLES_SECRET)
        .segment("segments/sweden", targeting=attribute_eq("country", "SE"))
        .segment("segments/everyone")
        .flag(
            "flags/checkout",
            variants={
                new: {"enabled": True, "layout": "grid"},
                old: {"enabled": False, "layout": "list"},
            },
            rules=[
                rollout("segments/sweden", {new: 100}),
                rollout("segments/everyone", {old: 100}),
            ],
        )
        .build()
    )


def sample_state(*, color: str = "blue", size: int = 42, secret: str = SECRET) -> StateBuilder:
    """The flags the provider tests evaluate.

    - `feature`: full rollout of one variant with every value kind.
    - `swedish`: only for country == "SE" (else NO_SEGMENT_MATCH -> DEFAULT).
    - `split`: a 50/50 split, which needs a valid targeting key.
    - `sticky`: a rule with a materialization spec.
    """
    return (
        StateBuilder(account=ACCOUNT)
        .client(secret)
        .segment("segments/everyone")
        .segment("segments/sweden", targeting=attribute_eq("country", "SE"))
        .flag(
            "flags/feature",
            variants={
                variant("feature", color): {
                    "enabled": True,
                    "color": color,
                    "size": size,
                    "ratio": 0.25,
                    "nested": {"deep": {"x": 7}},
                    "items": [1, 2],
                    "nothing": None,
                }
            },
            rules=[rollout("segments/everyone", {variant("feature", color): 100})],
        )
        .flag(
            "flags/swedish",
            variants={variant("swedish", "yes"): {"enabled": True}},
            rules=[rollout("segments/sweden", {variant("swedish", "yes"): 100})],
        )
        .flag(
            "flags/split",
            variants={
                variant("split", "a"): {"group": "a"},
                variant("split", "b"): {"group": "b"},
            },
            rules=[
                rollout("segments/everyone", {variant("split", "a"): 50, variant("split", "b"): 50})
            ],
        )
        .flag(
            "flags/sticky",
            variants={variant("sticky", "on"): {"enabled": True}},
            rules=[
                {
                    **rollout("segments/everyone", {variant("sticky", "on"): 100}),
                    "materializationSpec": {
                        "writeMaterialization": "materializations/sticky",
                        "readMaterialization": "materializations/sticky",
                    },
                }
            ],
        )
    )


def make_provider(emulator: ConfidenceEmulator, **overrides: Any) -> ConfidenceProvider:
    options: dict[str, Any] = {
        "encryption_key": emulator.encryption_key_hex,
        "cdn_base_url": emulator.cdn_base_url,
        "api_base_url": emulator.api_base_url,
        "events_base_url": emulator.base_url,
        "state_poll_interval": 0.2,
        "log_poll_interval": 60.0,  # only the shutdown flush sends, unless a test asks
        "init_timeout": 10.0,
        "pool_size": 2,
    }
    options.update(overrides)
    return ConfidenceProvider(SECRET, **options)


class EventRecorder:
    """Records global OpenFeature provider events (handlers run on the SDK's executor)."""

    EVENTS = (
        ProviderEvent.PROVIDER_READY,
        ProviderEvent.PROVIDER_ERROR,
        ProviderEvent.PROVIDER_STALE,
        ProviderEvent.PROVIDER_CONFIGURATION_CHANGED,
    )

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self.events: list[tuple[ProviderEvent, EventDetails]] = []
        self._handlers: list[tuple[ProviderEvent, Callable[[EventDetails], None]]] = []

    def attach(self) -> None:
        for event in self.EVENTS:
            handler = self._make_handler(event)
            api.add_handler(event, handler)
            self._handlers.append((event, handler))

    def detach(self) -> None:
        for event, handler in self._handlers:
            # ValueError: api.shutdown() already dropped every handler.
            with contextlib.suppress(ValueError):
                api.remove_handler(event, handler)
        self._handlers.clear()

    def _make_handler(self, event: ProviderEvent) -> Callable[[EventDetails], None]:
        def handler(details: EventDetails) -> None:
            if details.provider_name != PROVIDER_NAME:
                # e.g. the immediate READY for the NoOp default provider when a handler
                # is added (spec 5.3.3): not ours.
                return
            with self._cond:
                self.events.append((event, details))
                self._cond.notify_all()

        return handler

    def of(self, event: ProviderEvent) -> list[EventDetails]:
        with self._cond:
            return [d for e, d in self.events if e is event]

    def kinds(self) -> list[ProviderEvent]:
        with self._cond:
            return [e for e, _ in self.events]

    def wait_for(
        self,
        event: ProviderEvent,
        count: int = 1,
        timeout: float = 10.0,
        where: Callable[[EventDetails], bool] = lambda _: True,
    ) -> list[EventDetails]:
        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                found = [d for e, d in self.events if e is event and where(d)]
                if len(found) >= count:
                    return found
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise AssertionError(
                        f"timed out waiting for {count} x {event}; got {self.kinds()}"
                    )
                self._cond.wait(remaining)


@pytest.fixture
def openfeature_api() -> Iterator[None]:
    """A unit for every evaluation (API-level context); afterwards leave the global
    OpenFeature API as we found it (providers shut down, no handlers, no context)."""
    api.set_evaluation_context(EvaluationContext(targeting_key="test-user"))
    try:
        yield
    finally:
        api.shutdown()


@pytest.fixture
def emulator(
    confidence_emulator_sync: ConfidenceEmulator, openfeature_api: None
) -> Iterator[ConfidenceEmulator]:
    """The emulator serving `sample_state()`; OpenFeature is shut down while it still runs,
    so the final log flush can land."""
    confidence_emulator_sync.set_state(sample_state().build())
    yield confidence_emulator_sync
    api.shutdown()


@contextmanager
def recording_events() -> Iterator[EventRecorder]:
    recorder = EventRecorder()
    recorder.attach()
    try:
        yield recorder
    finally:
        recorder.detach()


def settle_events(seconds: float = 0.3) -> None:
    """Give the SDK's handler executor time to deliver anything still queued."""
    time.sleep(seconds)


def wait_until(
    predicate: Callable[[], bool], timeout: float = 10.0, interval: float = 0.02
) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(interval)


# -- providers in a subprocess (the exit and fork reliability tests) ---------------------------


def subprocess_env(emulator: ConfidenceEmulator, **extra: str) -> dict[str, str]:
    """This process's environment for a child running `provider_script()` against
    `emulator`: no CONFIDENCE_* variable of ours leaks in, output is unbuffered."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("CONFIDENCE_")},
        "TEST_SECRET": SECRET,
        "TEST_KEY": emulator.encryption_key_hex,
        "TEST_URL": emulator.base_url,
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def provider_script(**options: float) -> str:
    """Python source (dedented) that builds `provider` from `subprocess_env()`'s variables
    with `options`, sets it on OpenFeature, waits for it and binds `client`."""
    extra = "".join(f"    {name}={value!r},\n" for name, value in options.items())
    return (
        "import os, sys\n"
        "from openfeature import api\n"
        "from openfeature.evaluation_context import EvaluationContext\n"
        "from confidence import ConfidenceProvider\n"
        "\n"
        "provider = ConfidenceProvider(\n"
        '    os.environ["TEST_SECRET"],\n'
        '    encryption_key=os.environ["TEST_KEY"],\n'
        '    cdn_base_url=os.environ["TEST_URL"],\n'
        '    api_base_url=os.environ["TEST_URL"],\n'
        f"{extra})\n"
        "# openfeature-sdk < 0.10: set_provider itself waits for initialize().\n"
        'getattr(api, "set_provider_and_wait", api.set_provider)(provider)\n'
        "client = api.get_client()\n"
    )


def exposed_units(emulator: ConfidenceEmulator, flag: str = "flags/feature") -> Counter[str]:
    """How many exposures of `flag` the emulator received, by targeting key."""
    found: Counter[str] = Counter()
    for batch in emulator.all_flag_log_batches():
        for assigned in batch.flag_assigned:
            for applied in assigned.flags:
                if applied.flag == flag:
                    found[applied.targeting_key] += 1
    return found
