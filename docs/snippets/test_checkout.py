"""Testing code that uses flags: against the Confidence emulator, and offline."""

from collections.abc import Iterator
from pathlib import Path

import pytest
from openfeature import api
from openfeature.client import OpenFeatureClient
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ProviderNotReadyError

from confidence import ConfidenceProvider
from confidence.testing.emulator import ConfidenceEmulator, Route, Status
from confidence.testing.state_builder import StateBuilder, attribute_eq, rollout

SECRET = "test-secret"
NEW = "flags/checkout/variants/new"


# The code under test.
def checkout_layout(client: OpenFeatureClient, user: str, country: str) -> str:
    context = EvaluationContext(user, {"country": country})
    return client.get_string_value("checkout.layout", "classic", context)


def checkout_state() -> StateBuilder:
    return (
        StateBuilder(account="test-account")
        .client(SECRET)
        .segment("segments/sweden", targeting=attribute_eq("country", "SE"))
        .flag(
            "flags/checkout",
            variants={NEW: {"enabled": True, "layout": "grid"}},
            rules=[rollout("segments/sweden", {NEW: 100})],
        )
    )


@pytest.fixture
def emulator() -> Iterator[ConfidenceEmulator]:
    """The emulator on 127.0.0.1 (a free port), serving our state for SECRET."""
    with ConfidenceEmulator(client_secret=SECRET).run_in_thread() as emulator:
        emulator.set_state(checkout_state().build(), account_id="test-account")
        yield emulator


@pytest.fixture
def provider(emulator: ConfidenceEmulator) -> Iterator[ConfidenceProvider]:
    provider = ConfidenceProvider(
        SECRET,
        encryption_key=emulator.encryption_key_hex,
        cdn_base_url=emulator.cdn_base_url,
        api_base_url=emulator.api_base_url,
        init_timeout=2.0,
    )
    yield provider
    api.shutdown()  # before the emulator stops, so the final log flush lands


def test_sweden_gets_the_new_layout(
    emulator: ConfidenceEmulator, provider: ConfidenceProvider
) -> None:
    api.set_provider_and_wait(provider)
    client = api.get_client()

    assert checkout_layout(client, "alice", "SE") == "grid"
    assert checkout_layout(client, "bob", "US") == "classic"  # no match: the default

    api.shutdown()  # flushes the exposure logs to the emulator
    assert emulator.exposure_count("checkout") == 1  # alice's; bob matched no rule


def test_defaults_when_confidence_is_down(
    emulator: ConfidenceEmulator, provider: ConfidenceProvider
) -> None:
    emulator.inject(Route.STATE, Status(503))  # every state request fails, until cleared
    with pytest.raises(ProviderNotReadyError):  # after init_timeout
        api.set_provider_and_wait(provider)
    assert checkout_layout(api.get_client(), "alice", "SE") == "classic"


def test_offline_from_a_state_file(tmp_path: Path) -> None:
    state_file = tmp_path / "state.pb"
    state_file.write_bytes(checkout_state().build_client_state())
    api.set_provider_and_wait(ConfidenceProvider(SECRET, state_file=state_file, offline=True))
    try:
        assert checkout_layout(api.get_client(), "alice", "SE") == "grid"
    finally:
        api.shutdown()
