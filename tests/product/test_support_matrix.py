"""What the package claims to support is what CI tests (.ci/run, scripts/test-matrix).

The `lowest` leg pins exactly the lower bounds the installed metadata declares; the
classifiers, requires-python and the README name the Pythons CI runs (3.10 to 3.14).
"""

from __future__ import annotations

import re
from importlib.metadata import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
TESTED_PYTHONS = ("3.10", "3.11", "3.12", "3.13", "3.14")


def _lower_bounds() -> dict[str, str]:
    bounds = {}
    for requirement in metadata("confidence-openfeature-provider").get_all("Requires-Dist") or []:
        if ";" in requirement:
            continue  # extras (test, redis, otel): not part of the lowest leg
        name, _, version = requirement.partition(">=")
        bounds[name.strip().lower()] = version.strip()
    return bounds


def _lowest_pins() -> dict[str, str]:
    script = (REPO / "scripts" / "test-matrix").read_text()
    block = script.split("LOWEST_PINS=(", 1)[1].split(")", 1)[0]
    return {name.lower(): version for name, version in re.findall(r'"([\w.-]+)==([\w.]+)"', block)}


def test_the_lowest_leg_pins_every_declared_lower_bound() -> None:
    bounds = _lower_bounds()
    assert bounds, "no runtime dependencies found in the installed metadata"
    assert all(bounds.values()), f"every dependency needs a lower bound: {bounds}"
    assert _lowest_pins() == bounds


def test_classifiers_and_requires_python_name_the_tested_pythons() -> None:
    meta = metadata("confidence-openfeature-provider")
    assert meta["Requires-Python"] == f">={TESTED_PYTHONS[0]}"
    classified = sorted(
        c.rsplit(" :: ", 1)[1]
        for c in meta.get_all("Classifier") or []
        if re.fullmatch(r"Programming Language :: Python :: 3\.\d+", c)
    )
    assert classified == sorted(TESTED_PYTHONS, key=lambda v: tuple(map(int, v.split("."))))


def test_ci_runs_every_tested_python_and_the_readme_says_so() -> None:
    ci = (REPO / ".ci" / "run").read_text()
    assert "pip install nox && nox -s tests" in ci  # 3.11 (the default python3), newest deps
    for leg in ("lowest", "sdk-0.8.0", *TESTED_PYTHONS[2:]):  # lowest: Python 3.10
        assert f"scripts/test-matrix {leg} " in ci
    readme = (REPO / "README.md").read_text()
    assert f"Python {TESTED_PYTHONS[0]} to {TESTED_PYTHONS[-1]}" in readme
    assert f"openfeature-sdk {_lower_bounds()['openfeature-sdk']}+" in readme
