"""The resolver conformance suite, through the provider's own resolve path."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[3] / "shared"
SUITE = SHARED / "conformance"

pytestmark = pytest.mark.skipif(
    not (SUITE / "cases.json").is_file(),
    reason="../shared/conformance is not present (it ships only with the team's workspace and CI)",
)


def test_every_conformance_case_passes() -> None:
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "confidence.conformance",
            str(SUITE / "state.json"),
            str(SUITE / "cases.json"),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    last = proc.stdout.strip().splitlines()[-1] if proc.stdout.strip() else ""
    assert proc.returncode == 0, proc.stdout + proc.stderr
    passed, failed = (int(part.split()[0]) for part in last.split(", "))
    assert failed == 0
    assert passed >= 124  # the suite may grow; it never shrinks


def test_runner_reports_failures_and_exit_code(tmp_path: Path) -> None:
    """A case with a wrong expectation is reported with expected vs got, and exits 1."""
    import json

    cases = json.loads((SUITE / "cases.json").read_text())
    case = next(c for c in cases if c["name"] == "flag_name_filter")
    case["expectedResult"]["general"]["resolvedFlags"][0]["variant"] = "definitely-not"
    path = tmp_path / "cases.json"
    path.write_text(json.dumps([case]))
    proc = subprocess.run(
        [sys.executable, "-m", "confidence.conformance", str(SUITE / "state.json"), str(path)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert "FAIL flag_name_filter" in proc.stdout
    assert "'definitely-not'" in proc.stdout and "'on'" in proc.stdout
    assert proc.stdout.strip().splitlines()[-1] == "0 passed, 1 failed"
