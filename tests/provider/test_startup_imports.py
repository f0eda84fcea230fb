"""What a fresh process loads (issue 12 item 5): `import confidence` and the provider module
load none of the heavy dependencies; an offline provider never loads aiohttp.

Each check runs in a fresh interpreter, since this test process has imported everything.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from provider_support import ACCOUNT, REPO, SECRET, requires_wasm, sample_state

HEAVY = ("aiohttp", "wasmtime", "google.protobuf", "cryptography")


def loaded_after(code: str, cwd: Path = REPO) -> list[str]:
    """The HEAVY modules `code` leaves in sys.modules of a fresh interpreter."""
    probe = (
        f"{code}\nimport sys, json\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    loaded: list[str] = json.loads(out.stdout.strip().splitlines()[-1])
    return loaded


@pytest.mark.parametrize(
    "code",
    [
        "import confidence",
        "from confidence import ProviderStats, MaterializationStore, __version__",
        "import confidence._cli",
        "import confidence.testing.state_builder",  # (protobuf, of course)
    ],
)
def test_importing_the_package_loads_no_heavy_dependency(code: str) -> None:
    loaded = loaded_after(code)
    assert "wasmtime" not in loaded and "cryptography" not in loaded and "aiohttp" not in loaded


def test_the_provider_loads_what_a_start_needs_and_no_more() -> None:
    # wasmtime and AES-GCM come with the provider (READY must not wait for them); aiohttp
    # and the protobuf runtime are needed by no start, not even for an encrypted state.
    code = "import confidence\nconfidence.ConfidenceProvider('s', encryption_key='0' * 64)"
    assert loaded_after(code) == ["wasmtime", "cryptography"]


def test_public_names_still_resolve() -> None:
    import confidence

    for name in confidence.__all__:
        assert getattr(confidence, name) is not None
    assert set(confidence.__all__) <= set(dir(confidence))
    with pytest.raises(AttributeError):
        _ = confidence.NoSuchThing  # type: ignore[attr-defined]


@requires_wasm
def test_an_offline_provider_never_loads_aiohttp(tmp_path: Path) -> None:
    state = tmp_path / "state.pb"
    state.write_bytes(sample_state().build())
    code = f"""
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from confidence import ConfidenceProvider
provider = ConfidenceProvider({SECRET!r}, state_file={str(state)!r}, account_id={ACCOUNT!r},
                              offline=True)
getattr(api, "set_provider_and_wait", api.set_provider)(provider)
value = api.get_client().get_boolean_value("swedish.enabled", False,
                                           EvaluationContext("u", {{"country": "SE"}}))
assert value is True, value
api.shutdown()
"""
    loaded = loaded_after(code)
    assert "aiohttp" not in loaded
    assert "wasmtime" in loaded  # (it did resolve in the wasm resolver)
