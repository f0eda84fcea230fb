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


@requires_wasm
def test_demo_table_columns_line_up_even_on_object_values() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "confidence", "demo"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["via", "user"])
    table = lines[start : lines.index("", start)]
    assert any("{'enabled'" in line for line in table)  # object values are in it
    header = table[0]
    for column in ("variant", "reason"):
        at = header.index(column)
        for line in table[1:]:
            # every row's cell starts at the header's column, after a blank
            assert line[at - 1] == " " and line[at] != " ", (column, line)
