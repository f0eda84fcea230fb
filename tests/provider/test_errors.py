"""One root for the package's exceptions (issue 15): the hierarchy in confidence/errors.py,
and real failures raising a subclass of `ConfidenceError` that keeps its builtin base."""

from __future__ import annotations

import asyncio
from pathlib import Path
from types import SimpleNamespace

import pytest
from openfeature.evaluation_context import EvaluationContext

import confidence
from confidence import errors
from confidence._context import encode_context
from confidence._http import FailureKind, HttpFailure
from confidence._http_light import HttpProtocolError
from confidence._logs.tracking import build_event, encode_event
from confidence._remote_materialization import RemoteMaterializationStore as AsyncRemoteStore
from confidence._state.crypto import decrypt_state, encrypt_state
from confidence.materialization import (
    InclusionReadOp,
    MaterializationNotSupportedError,
    RemoteMaterializationError,
    RemoteMaterializationStore,
    UnsupportedMaterializationStore,
    VariantWriteOp,
)

KEY = bytes(range(32))


@pytest.mark.parametrize(
    ("cls", "bases"),
    [
        (errors.StateError, (errors.ConfidenceError, ValueError)),
        (errors.StateDecryptionError, (errors.StateError, ValueError)),
        (errors.MissingAccountIdError, (errors.StateError, ValueError)),
        (errors.ContextError, (errors.ConfidenceError, ValueError)),
        (errors.EventError, (errors.ConfidenceError, ValueError)),
        (errors.MaterializationError, (errors.ConfidenceError,)),
        (MaterializationNotSupportedError, (errors.MaterializationError,)),
        (RemoteMaterializationError, (errors.MaterializationError,)),
        (HttpFailure, (errors.ConfidenceError,)),
        (HttpProtocolError, (errors.ConfidenceError, OSError)),
    ],
)
def test_every_exception_is_under_the_root_and_keeps_its_builtin_base(
    cls: type[BaseException], bases: tuple[type[BaseException], ...]
) -> None:
    for base in bases:
        assert issubclass(cls, base), (cls, base)
    assert issubclass(cls, errors.ConfidenceError)


def test_the_pairs_that_meant_the_same_are_one_class_and_the_package_exports_them() -> None:
    assert errors.StateNotDecryptableError is errors.StateDecryptionError
    assert errors.StateFileError is errors.StateError
    for name in ("ConfidenceError", "StateError", "StateDecryptionError", "ContextError"):
        assert getattr(confidence, name) is getattr(errors, name)
    assert confidence.RemoteMaterializationError is RemoteMaterializationError
    assert confidence.MaterializationError is errors.MaterializationError


def test_a_state_the_key_does_not_decrypt_raises_a_state_error() -> None:
    body = encrypt_state(b"a resolver state", KEY)
    with pytest.raises(errors.StateDecryptionError) as info:
        decrypt_state(body, bytes(32))
    assert isinstance(info.value, errors.ConfidenceError) and isinstance(info.value, ValueError)
    with pytest.raises(errors.StateError):
        decrypt_state(b"short", KEY)


def test_a_context_with_a_cycle_raises_a_context_error() -> None:
    cyclic: list[object] = []
    cyclic.append(cyclic)
    with pytest.raises(errors.ConfidenceError) as info:
        encode_context(EvaluationContext("u", {"loop": cyclic}))
    assert isinstance(info.value, errors.ContextError)


def test_a_bad_event_raises_an_event_error() -> None:
    with pytest.raises(errors.EventError):
        build_event("", None, None)  # the name must be a non-empty string
    with pytest.raises(errors.EventError):
        build_event("ev", None, SimpleNamespace(value="3", attributes=None))  # not a number
    with pytest.raises(errors.ConfidenceError):
        encode_event({"payload": {1j: "a complex key is not JSON"}})


def test_a_store_refusal_is_a_materialization_error() -> None:
    with pytest.raises(errors.MaterializationError):
        UnsupportedMaterializationStore().read([InclusionReadOp("u", "m")])


def test_a_closed_remote_store_raises_a_materialization_error() -> None:
    store = RemoteMaterializationStore("a-client-secret", api_base_url="http://127.0.0.1:9")
    store.close()
    with pytest.raises(errors.MaterializationError) as info:
        store.write([VariantWriteOp("u", "m", "r", "v")])
    assert isinstance(info.value, RemoteMaterializationError)

    async def closed_async() -> None:
        inner = AsyncRemoteStore("a-client-secret", api_base_url="http://127.0.0.1:9")
        await inner.aclose()
        await inner.read([InclusionReadOp("u", "m")])

    with pytest.raises(errors.ConfidenceError):
        asyncio.run(closed_async())


def test_http_failure_carries_its_kind() -> None:
    failure = HttpFailure(FailureKind.AUTH, "HTTP 401", status=401)
    assert isinstance(failure, errors.ConfidenceError) and failure.kind is FailureKind.AUTH


def test_a_bad_state_file_raises_a_state_error(tmp_path: Path) -> None:
    # (Needs the lead's edits to _state_file/_resolve/_abi/_pool/_engine_types.)
    from confidence._state.file import StateNotDecryptableError, load_state_file
    from confidence._wasm.abi import ResolverError
    from confidence._wasm.engine_types import WasmTrap
    from confidence._wasm.pool import NoStateError
    from confidence._wasm.resolve import MaterializationError

    assert StateNotDecryptableError is errors.StateDecryptionError
    assert MaterializationError is errors.MaterializationError
    for internal in (ResolverError, NoStateError, WasmTrap):
        assert issubclass(internal, errors.ConfidenceError)
    garbage = tmp_path / "state.pb"
    garbage.write_bytes(b"\xff\x00 not a resolver state")
    with pytest.raises(errors.StateError) as info:
        load_state_file(garbage, encryption_key=None, account_id="acct")
    assert isinstance(info.value, ValueError)
    with pytest.raises(errors.StateDecryptionError):
        load_state_file(garbage, encryption_key=KEY, account_id="acct")
    with pytest.raises(errors.ConfidenceError):
        load_state_file(tmp_path / "missing.pb", encryption_key=None, account_id="acct")
