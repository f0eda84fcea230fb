"""`state_file=`: offline mode and bootstrap mode."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent
from openfeature.exception import ProviderFatalError
from openfeature.flag_evaluation import Reason
from provider_support import (
    ACCOUNT,
    SECRET,
    SHARED,
    make_provider,
    recording_events,
    requires_wasm,
    sample_state,
    settle_events,
)

from confidence import ConfidenceProvider
from confidence._state.crypto import encrypt_state, parse_encryption_key
from confidence._state.file import StateFileError, parse_state_bytes
from confidence.testing.emulator import ConfidenceEmulator, Route, Status

USER = EvaluationContext("user-1")


KEY_HEX = "0f" * 32
UNREACHABLE = "http://127.0.0.1:9"  # discard port: nothing listens


def test_parse_forms() -> None:
    builder = sample_state()
    raw, client = builder.build(), builder.build_client_state(log_destinations=[2])
    key = parse_encryption_key(KEY_HEX)

    parsed = parse_state_bytes(client, encryption_key=None, account_id=None)
    assert (parsed.state, parsed.account_id, parsed.log_destinations) == (raw, ACCOUNT, (2,))
    assert parse_state_bytes(raw, encryption_key=None, account_id="acct").state == raw
    encrypted = encrypt_state(client, key)
    assert parse_state_bytes(encrypted, encryption_key=key, account_id=None).state == raw
    # A plaintext file works with a key configured, too.
    assert parse_state_bytes(client, encryption_key=key, account_id=None).state == raw
    # An explicit account id wins.
    assert parse_state_bytes(client, encryption_key=None, account_id="x").account_id == "x"


def test_parse_errors() -> None:
    raw = sample_state().build()
    with pytest.raises(StateFileError, match="account_id"):
        parse_state_bytes(raw, encryption_key=None, account_id=None)
    encrypted = encrypt_state(sample_state().build_client_state(), parse_encryption_key(KEY_HEX))
    with pytest.raises(StateFileError, match="decrypt"):
        parse_state_bytes(
            encrypted, encryption_key=parse_encryption_key("1e" * 32), account_id=None
        )
    with pytest.raises(StateFileError):
        parse_state_bytes(b"\xff\xff\xff", encryption_key=None, account_id=None)


@requires_wasm
@pytest.mark.usefixtures("openfeature_api")
@pytest.mark.parametrize("form", ["client", "raw", "encrypted"])
def test_offline_mode(tmp_path: Path, form: str) -> None:
    builder = sample_state()
    path = tmp_path / "state.bin"
    account_id = None
    if form == "client":
        path.write_bytes(builder.build_client_state())
    elif form == "raw":
        path.write_bytes(builder.build())
        account_id = ACCOUNT
    else:
        path.write_bytes(encrypt_state(builder.build_client_state(), parse_encryption_key(KEY_HEX)))
    provider = ConfidenceProvider(
        SECRET,
        encryption_key=KEY_HEX if form == "encrypted" else None,
        state_file=path,
        account_id=account_id,
        offline=True,
        cdn_base_url=UNREACHABLE,
        api_base_url=UNREACHABLE,
    )
    api.set_provider_and_wait(provider)
    details = api.get_client().get_boolean_details("feature.enabled", False, EvaluationContext("u"))
    assert (details.value, details.reason) == (True, Reason.TARGETING_MATCH)
    api.shutdown()


@requires_wasm
@pytest.mark.anyio
async def test_offline_mode_async(tmp_path: Path) -> None:
    path = tmp_path / "state.pb"
    path.write_bytes(sample_state().build_client_state())
    async with ConfidenceProvider(SECRET, state_file=path, offline=True) as provider:
        details = await provider.resolve_string_details_async("feature.color", "", USER)
        assert details.value == "blue"


@requires_wasm
@pytest.mark.usefixtures("openfeature_api")
def test_bad_state_file_is_fatal(tmp_path: Path) -> None:
    missing = ConfidenceProvider(SECRET, state_file=tmp_path / "nope.pb", offline=True)
    with pytest.raises(ProviderFatalError, match="state_file"):
        api.set_provider_and_wait(missing)
    garbage = tmp_path / "garbage.pb"
    garbage.write_bytes(b"\x0a\x03abc\x12\x01x")  # a ClientResolverState with a bogus state
    bad = ConfidenceProvider(SECRET, state_file=garbage, offline=True)
    with pytest.raises(ProviderFatalError):
        bad.initialize(EvaluationContext())
    bad.shutdown()


@requires_wasm
@pytest.mark.usefixtures("openfeature_api")
def test_bootstrap_when_the_cdn_is_down_then_sync(
    tmp_path: Path, confidence_emulator_sync: ConfidenceEmulator
) -> None:
    emulator = confidence_emulator_sync
    emulator.set_state(sample_state(color="green").build())
    emulator.inject(Route.STATE, Status(503))
    path = tmp_path / "bootstrap.pb"
    path.write_bytes(sample_state(color="blue").build_client_state())
    provider = make_provider(emulator, state_file=path)
    with recording_events() as events:
        api.set_provider_and_wait(provider)  # ready from the file, CDN down
        client = api.get_client()
        assert client.get_string_value("feature.color", "") == "blue"
        # A bootstrap state that cannot be refreshed is stale.
        events.wait_for(ProviderEvent.PROVIDER_STALE)
        assert client.get_string_value("feature.color", "") == "blue"
        emulator.clear_faults()
        # Once the CDN answers, its state replaces the bootstrap one.
        changed = events.wait_for(ProviderEvent.PROVIDER_CONFIGURATION_CHANGED)[0]
        assert changed.flags_changed == ["feature"]
        assert client.get_string_value("feature.color", "") == "green"
        settle_events()
        # (The SDK runs handlers on a thread pool: events emitted together may be
        # delivered in either order.)
        assert Counter(events.kinds()) == {
            ProviderEvent.PROVIDER_READY: 2,  # the SDK's, then the recovery
            ProviderEvent.PROVIDER_STALE: 1,
            ProviderEvent.PROVIDER_CONFIGURATION_CHANGED: 1,
        }


@pytest.mark.skipif(not (SHARED / "data").is_dir(), reason="../shared/data is not available")
def test_shared_encrypted_fixture_parses() -> None:
    data = (SHARED / "data" / "resolver_state_encrypted.pb").read_bytes()
    key = parse_encryption_key((SHARED / "data" / "encryption_key_test.hex").read_text().strip())
    parsed = parse_state_bytes(data, encryption_key=key, account_id=None)
    assert parsed.account_id == "confidence-test"
    assert parsed.state == (SHARED / "data" / "resolver_state_current.pb").read_bytes()
