"""`python -m confidence demo` runs end to end in a fresh process."""

from __future__ import annotations

import subprocess
import sys

from provider_support import REPO, requires_wasm


@requires_wasm
def test_demo_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "confidence", "demo"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "Provider status: READY" in out
    assert "sync " in out and "async" in out
    assert "TARGETING_MATCH" in out
    assert "FLAG_NOT_FOUND" in out
    assert "exposures  flags/checkout-redesign" in out
    assert "demo-client-secret" not in out + result.stderr


def test_cli_needs_a_command() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "confidence"], cwd=REPO, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "demo" in result.stderr
