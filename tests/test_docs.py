"""The documentation stays true to the code.

`nox -s docs` builds the site with `mkdocs build --strict`; these tests check what a build
cannot: the configuration table lists exactly the constructor's parameters and defaults, every
Python block parses, the navigation and the included files exist, and the runnable snippets
(`docs/snippets/`) actually run.
"""

from __future__ import annotations

import ast
import inspect
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from provider_support import requires_wasm
from sdk_compat import requires_set_provider_and_wait

import confidence.provider
from confidence import ConfidenceProvider

ROOT = Path(__file__).resolve().parent.parent
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.glob("*.md"))

_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_SNIPPET = re.compile(r'^--8<-- "([^"]+)"$', re.MULTILINE)


def _section(text: str, heading: str) -> str:
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def test_configuration_table_matches_the_constructor() -> None:
    table = _section((DOCS / "configuration.md").read_text(), "Parameters")
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+?) \|", table, re.MULTILINE)
    parameters = dict(inspect.signature(ConfidenceProvider.__init__).parameters)
    del parameters["self"]
    assert [name for name, _ in rows] == list(parameters), "parameters (in signature order)"
    for name, documented in rows:
        default = parameters[name].default
        if default is inspect.Parameter.empty:
            assert documented == "required", name
            continue
        shown = documented.strip("`")
        if hasattr(confidence.provider, shown):  # a named constant, e.g. DEFAULT_CDN_BASE_URL
            assert getattr(confidence.provider, shown) == default, name
        else:
            assert shown == repr(default), name


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_python_blocks_parse(page: Path) -> None:
    for language, code in _FENCE.findall(page.read_text()):
        if language != "python" or _SNIPPET.search(code):
            continue
        # Top-level `await` / `async with` are allowed: blocks show fragments of async code.
        compile(code, f"{page.name} block", "exec", flags=ast.PyCF_ALLOW_TOP_LEVEL_AWAIT)


def test_navigation_lists_every_page() -> None:
    config = (ROOT / "mkdocs.yml").read_text()
    in_nav = re.findall(r"^\s+- (?:[^:\n]+: )?(\S+\.md)$", config, re.MULTILINE)
    assert sorted(in_nav) == sorted(p.name for p in PAGES)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_included_files_and_relative_links_exist(page: Path) -> None:
    text = page.read_text()
    for included in _SNIPPET.findall(text):
        assert (ROOT / included).is_file(), included
    for target in re.findall(r"\]\(([^)#:]+\.md)(?:#[^)]*)?\)", text):
        assert (DOCS / target).is_file(), f"{page.name} links to {target}"


@requires_wasm
@requires_set_provider_and_wait
def test_quickstart_offline_snippet_runs() -> None:
    proc = subprocess.run(
        [sys.executable, str(DOCS / "snippets" / "quickstart_offline.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split("\n")[:2] == [
        "grid TARGETING_MATCH flags/checkout/variants/new",
        "classic",
    ]


@requires_wasm
@requires_set_provider_and_wait
def test_testing_guide_example_passes_under_pytest(tmp_path: Path) -> None:
    # Copied out of the repository, so it runs as in a user's project: no conftest, no config.
    shutil.copy(DOCS / "snippets" / "test_checkout.py", tmp_path)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "test_checkout.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert "3 passed" in proc.stdout
