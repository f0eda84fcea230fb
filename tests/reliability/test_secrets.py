"""Reliability: secrets and TLS (issue #6).

The client secret is sent only as the `Authorization` header of log and materialization
calls; the encryption key is never sent. Neither appears in a log line, an exception, an
event, an evaluation's error message or a `repr()` — checked across a run that goes through
every kind of fault. TLS certificates are verified, with no switch to turn that off: a
self-signed HTTPS endpoint gets neither a state request nor the secret.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import ipaddress
import logging
import re
import ssl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.event import ProviderEvent
from openfeature.exception import ProviderNotReadyError
from openfeature.provider import ProviderStatus
from provider_support import (
    ACCOUNT,
    SECRET,
    make_provider,
    recording_events,
    requires_wasm,
    sample_state,
    settle_events,
    wait_until,
)

from confidence._config import BootstrapState
from confidence._state.sync import FetchedState
from confidence._wasm.abi import ResolveRequest
from confidence.testing.emulator import (
    ConfidenceEmulator,
    GarbageBody,
    Hang,
    ResetConnection,
    Route,
    Status,
)

pytestmark = [requires_wasm, pytest.mark.usefixtures("openfeature_api")]

MiB = 1024 * 1024
PACKAGE = Path(__file__).resolve().parents[2] / "confidence"


def _needles(emulator: ConfidenceEmulator) -> list[str]:
    key = emulator.encryption_key_hex
    return [SECRET, key.lower(), key.upper(), hashlib.sha256(SECRET.encode()).hexdigest()]


def _assert_clean(text: str, needles: list[str], what: str) -> None:
    for needle in needles:
        assert needle not in text, f"a secret leaked into {what}"


def test_no_secret_anywhere_across_every_fault(
    emulator: ConfidenceEmulator, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, aiohttp's included
    needles = _needles(emulator)
    seen: list[str] = []
    provider = make_provider(
        emulator,
        state_poll_interval=0.05,
        log_poll_interval=0.1,
        stale_after_failures=2,
        state_request_timeout=0.3,
        resolver_memory_limit=24 * MiB,
    )
    seen.append(repr(provider))
    with recording_events() as events:
        api.set_provider_and_wait(provider)
        client = api.get_client()
        runtime = provider._runtime
        assert runtime is not None
        seen += [repr(runtime), repr(runtime._settings), repr(runtime._syncer)]
        seen += [repr(runtime._pool), repr(runtime.resolver), repr(runtime.last_state)]

        def evaluate(ctx: EvaluationContext, key: str = "feature.color") -> None:
            details = client.get_string_details(key, "none", ctx)
            seen.append(f"{details.error_code} {details.error_message} {details.flag_metadata}")

        evaluate(EvaluationContext("user-1"))
        evaluate(EvaluationContext("user-1"), key="no-such-flag")
        evaluate(EvaluationContext("user-1", {"blob": "x" * (40 * MiB)}))  # a resolver trap
        evaluate(EvaluationContext(None, {"targeting_key": [SECRET]}), key="split.group")

        # Network faults (STALE), then bad states (ERROR), each recovered from.
        for fault in (Status(500), ResetConnection(), Hang()):
            emulator.inject(Route.STATE, fault)
            events.wait_for(ProviderEvent.PROVIDER_STALE, count=1, timeout=15)
            emulator.clear_faults()
            wait_until(lambda: provider._runtime is not None and not runtime.is_stale)
        emulator.inject(Route.STATE, GarbageBody(), times=2)
        events.wait_for(ProviderEvent.PROVIDER_ERROR, timeout=15)
        wait_until(lambda: client.get_provider_status() is ProviderStatus.READY)
        emulator.set_state(sample_state(color="red").build()[:-5])  # refused by the resolver
        wait_until(lambda: len(events.of(ProviderEvent.PROVIDER_ERROR)) >= 2, timeout=15)
        emulator.set_state(sample_state(color="red").build())
        red = EvaluationContext("u")
        wait_until(lambda: client.get_string_value("feature.color", "", red) == "red")

        # The log endpoint refuses, then accepts.
        emulator.inject(Route.FLAG_LOGS, Status(500), times=3)
        evaluate(EvaluationContext("user-2"))
        wait_until(lambda: emulator.exposure_count("feature") >= 2, timeout=15)
        settle_events()
        seen += [f"{kind} {d.message} {d.error_code}" for kind, d in events.events]

    api.shutdown()
    seen.append(caplog.text)
    assert "Refused a bad resolver state" in caplog.text  # the faults did happen and log
    for i, text in enumerate(seen):
        _assert_clean(text, needles, f"item {i}: {text[:200]}")


def test_the_emulator_saw_the_secret_only_in_the_authorization_header(
    emulator: ConfidenceEmulator,
) -> None:
    provider = make_provider(emulator, log_poll_interval=0.1, use_remote_materialization_store=True)
    api.set_provider_and_wait(provider)
    client = api.get_client()
    client.get_string_value("feature.color", "none", EvaluationContext("user-1"))
    client.get_boolean_value("sticky.enabled", False, EvaluationContext("user-1"))
    wait_until(lambda: emulator.exposure_count() >= 2)
    api.shutdown()

    raw_key = emulator.encryption_key
    key = emulator.encryption_key_hex
    routes = {r.route for r in emulator.requests}
    assert {Route.STATE, Route.FLAG_LOGS, Route.MATERIALIZATION_READ} <= routes
    for request in emulator.requests:
        for name, value in request.headers:
            if name.lower() == "authorization":
                assert value == f"ClientSecret {SECRET}"
                assert request.route is not Route.STATE  # the CDN never gets it
            else:
                assert SECRET not in value and key not in value.lower()
        assert SECRET not in request.path and key not in request.path
        for needle in (SECRET.encode(), key.encode(), key.upper().encode(), raw_key):
            assert needle not in request.body


def test_reprs_never_show_secrets(emulator: ConfidenceEmulator) -> None:
    state = sample_state().build()  # holds the client secret in clear
    assert SECRET.encode() in state
    for obj in (
        FetchedState(state=state, account_id=ACCOUNT, log_destinations=(), etag='"e"'),
        BootstrapState(state=state, account_id=ACCOUNT),
        ResolveRequest(flags=("flags/x",), context_json=b"{}", client_secret=SECRET, apply=True),
        make_provider(emulator),
    ):
        _assert_clean(repr(obj), _needles(emulator), type(obj).__name__)
        assert "\\x" not in repr(obj)  # no raw state bytes either


def test_exceptions_never_show_secrets(emulator: ConfidenceEmulator) -> None:
    wrong_key = "ab" * 32
    for options in ({"encryption_key": wrong_key}, {"cdn_base_url": "http://127.0.0.1:9"}):
        provider = make_provider(emulator, init_timeout=1.0, **options)
        with pytest.raises(Exception) as info:
            api.set_provider_and_wait(provider)
        text = f"{info.value!r} {info.value}"
        _assert_clean(text, [*_needles(emulator), wrong_key], "an exception")
        api.shutdown()
    with pytest.raises(ValueError) as bad_key:
        make_provider(emulator, encryption_key=SECRET)
    assert SECRET not in str(bad_key.value)


# -- TLS -----------------------------------------------------------------------------------------


def _self_signed(tmp_path: Path) -> tuple[ssl.SSLContext, Path]:
    """A CA and a certificate for 127.0.0.1 signed by it: (server context, CA file)."""
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "untrusted test CA")])
    ca = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), False
        )
        .sign(ca_key, hashes.SHA256())
    )
    cert_file, key_file, ca_file = tmp_path / "cert.pem", tmp_path / "key.pem", tmp_path / "ca.pem"
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    ca_file.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    key_file.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server.load_cert_chain(cert_file, key_file)
    return server, ca_file


@pytest.fixture
def https_emulator(tmp_path: Path) -> Iterator[tuple[ConfidenceEmulator, Path]]:
    context, ca_file = _self_signed(tmp_path)
    with ConfidenceEmulator(client_secret=SECRET, ssl_context=context).run_in_thread() as emu:
        emu.set_state(sample_state().build())
        yield emu, ca_file


def test_https_emulator_works_for_a_client_that_trusts_its_ca(
    https_emulator: tuple[ConfidenceEmulator, Path],
) -> None:
    """The control: the server is fine, so a rejection below is certificate verification."""
    emu, ca_file = https_emulator
    assert emu.base_url.startswith("https://")

    async def fetch() -> int:
        trusting = ssl.create_default_context(cafile=str(ca_file))
        async with (
            aiohttp.ClientSession() as session,
            session.get(emu.state_url(), ssl=trusting) as response,
        ):
            return response.status

    assert anyio.run(fetch) == 200


def test_a_self_signed_cdn_is_rejected(
    https_emulator: tuple[ConfidenceEmulator, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    emu, _ = https_emulator
    # Environment switches some HTTP stacks honour; none of them turns verification off here.
    monkeypatch.setenv("PYTHONHTTPSVERIFY", "0")
    monkeypatch.setenv("CURL_CA_BUNDLE", "")
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", "")
    provider = make_provider(emu, init_timeout=2.0)
    with pytest.raises(ProviderNotReadyError, match=r"(?i)certificate"):
        api.set_provider_and_wait(provider)
    assert emu.requests_for(Route.STATE) == []  # not one byte of HTTP got through
    api.shutdown()


def test_the_secret_is_not_sent_to_a_self_signed_log_endpoint(
    emulator: ConfidenceEmulator, https_emulator: tuple[ConfidenceEmulator, Path]
) -> None:
    untrusted, _ = https_emulator
    provider = make_provider(emulator, api_base_url=untrusted.api_base_url, log_poll_interval=0.1)
    api.set_provider_and_wait(provider)
    api.get_client().get_string_value("feature.color", "none", EvaluationContext("user-1"))
    settle_events(1.0)  # several delivery attempts
    api.shutdown()
    assert untrusted.requests == []  # the TLS handshake failed before any request


def test_no_code_path_turns_certificate_verification_off() -> None:
    """A guard on the source: nothing passes `ssl=False`, `verify_ssl=False`, CERT_NONE or an
    unverified context to the HTTP stack."""
    pattern = re.compile(
        r"ssl\s*=\s*False|verify_ssl|CERT_NONE|_create_unverified_context|check_hostname\s*=\s*False"
    )
    offenders: list[Any] = []
    for path in PACKAGE.rglob("*.py"):
        if "_proto" in path.parts:
            continue
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if pattern.search(line):
                offenders.append(f"{path.name}:{number}: {line.strip()}")
    assert offenders == []
