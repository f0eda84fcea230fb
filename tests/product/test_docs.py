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

ROOT = Path(__file__).resolve().parents[2]
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


# -- what a newcomer reads first --------------------------------------------------------------

README = ROOT / "README.md"


def test_readme_option_list_names_every_constructor_argument() -> None:
    options = _section(README.read_text(), "Use it").split("### Options", 1)[1]
    options = options.split("\n### ", 1)[0]
    parameters = list(inspect.signature(ConfidenceProvider.__init__).parameters)[1:]
    missing = [name for name in parameters if f"{name}=" not in options and name != "client_secret"]
    assert missing == [], f"README's option list lacks {missing}"


_PIP = re.compile(r"pip install ([^`\n]+)")


def test_install_lines_install_this_repository_not_the_pypi_namesake() -> None:
    """`pip install confidence-openfeature-provider` fetches the official provider from PyPI."""
    pages = [README, ROOT / "examples" / "README.md", *PAGES]
    for page in pages:
        for target in _PIP.findall(page.read_text()):
            first = target.split()[0].strip("'\"")
            if first in ("nox", "-y", "-e", "-q") or first.startswith("--"):
                continue
            assert first.startswith((".", "/", "git+")), f"{page.name}: pip install {target}"
    text = README.read_text()
    assert "official" in text and "pip install '.[otel]'" in text
    assert "pip install '.[examples]'" in (ROOT / "examples" / "README.md").read_text()


def test_the_examples_extra_installs_the_frameworks() -> None:
    tomllib = pytest.importorskip("tomllib")

    extras = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "optional-dependencies"
    ]
    names = {re.split(r"[<>=;\[ ]", dep, maxsplit=1)[0] for dep in extras["examples"]}
    assert {"fastapi", "uvicorn", "flask"} <= names


@requires_wasm
@requires_set_provider_and_wait
def test_debugging_page_shows_the_real_explain_output() -> None:
    proc = subprocess.run(
        [sys.executable, str(DOCS / "snippets" / "debugging_explain.py")],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "no match (not_in_list)" in proc.stdout
    assert proc.stdout.rstrip("\n") in (DOCS / "debugging.md").read_text()


def _code_lines(page: Path) -> list[str]:
    """Lines of a page's code blocks, with included snippets expanded."""
    lines: list[str] = []
    for _language, code in _FENCE.findall(page.read_text()):
        for included in _SNIPPET.findall(code):
            code = code.replace(f'--8<-- "{included}"', (ROOT / included).read_text())
        lines.extend(code.splitlines())
    return lines


@pytest.mark.parametrize("name", ["quickstart.md", "debugging.md"])
def test_code_lines_fit_the_content_column(name: str) -> None:
    """The theme's content column shows about 82 monospace characters; longer lines are
    cut off behind a scroll bar."""
    long = [line for line in _code_lines(DOCS / name) if len(line) > 80]
    assert long == [], long


def test_table_identifiers_do_not_break_mid_word() -> None:
    config = (ROOT / "mkdocs.yml").read_text()
    assert "stylesheets/extra.css" in config
    css = (DOCS / "stylesheets" / "extra.css").read_text()
    assert "td:nth-child(-n + 2) code" in css and "nowrap" in css
