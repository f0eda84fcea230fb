"""The distributions as a user gets them.

- The wheel (`pip wheel --no-deps .`) carries `confidence/resolver.wasm` (byte-for-byte the
  repo root's, put there by `hatch_build.py`) and `confidence/py.typed`, and its metadata
  agrees with `confidence/_version.py` and `pyproject.toml`.
- Installed into a fresh virtualenv with only its declared dependencies (from the package
  index), it resolves flags offline from a state built with `confidence.testing.state_builder`,
  through the OpenFeature sync and async clients, with every socket connection refused.
- The sdist builds, and a wheel built *from the sdist* is just as complete.

These tests build real distributions and install the dependencies from the index (the pip
cache makes reruns quick), so they take a while: marked `slow`, they still run by default.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tarfile
import textwrap
import zipfile
from collections.abc import Sequence
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
DIST_NAME = "confidence-openfeature-provider"
INSTALL_TIMEOUT = 900.0  # a cold pip cache downloads wasmtime, cryptography, aiohttp, ...


def _declared_version() -> str:
    text = (ROOT / "confidence" / "_version.py").read_text()
    match = re.fullmatch(r'__version__ = "([^"]+)"\s*', text)
    assert match, f'confidence/_version.py must hold only `__version__ = "..."`, got {text!r}'
    return match.group(1)


def _declared_dependencies() -> set[str]:
    if sys.version_info < (3, 11):
        tomllib = pytest.importorskip("tomli")
    else:
        import tomllib
    with (ROOT / "pyproject.toml").open("rb") as f:
        project = tomllib.load(f)["project"]
    return {dep.replace(" ", "") for dep in project["dependencies"]}


def _env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1", **extra)
    return env


def _run(
    args: Sequence[str | os.PathLike[str]],
    *,
    timeout: float = INSTALL_TIMEOUT,
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
) -> str:
    proc = subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env if env is not None else _env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    if proc.returncode != 0:
        pytest.fail(
            f"command failed ({proc.returncode}): {' '.join(map(str, args))}\n"
            f"--- stdout ---\n{proc.stdout[-4000:]}\n--- stderr ---\n{proc.stderr[-4000:]}"
        )
    return proc.stdout


def _only(directory: Path, pattern: str) -> Path:
    found = sorted(directory.glob(pattern))
    assert len(found) == 1, f"expected one {pattern} in {directory}, found {found}"
    return found[0]


def _build_wheel(source: Path, out: Path) -> Path:
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--wheel-dir", out, source])
    return _only(out, "*.whl")


def _pip_supports_python_option() -> bool:
    import pip

    major, minor = (int(part) for part in pip.__version__.split(".")[:2])
    return (major, minor) >= (22, 3)


def _fresh_venv(path: Path) -> tuple[Path, list[str]]:
    """A new virtualenv (on the base interpreter, no site packages); returns its python and
    the pip command that installs into it."""
    python = path / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
    if _pip_supports_python_option():
        # No ensurepip needed: this interpreter's pip installs into the venv.
        _run([sys.executable, "-m", "venv", "--without-pip", path], timeout=120)
        return python, [sys.executable, "-m", "pip", "--python", str(python)]
    _run([sys.executable, "-m", "venv", path], timeout=300)
    return python, [str(python), "-m", "pip"]


def _metadata(wheel: zipfile.ZipFile) -> list[tuple[str, str]]:
    name = next(n for n in wheel.namelist() if n.endswith(".dist-info/METADATA"))
    headers, _, _body = wheel.read(name).decode("utf-8").partition("\n\n")
    return [
        (key, value.strip())
        for key, _, value in (line.partition(":") for line in headers.splitlines())
        if not key.startswith(" ")
    ]


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not (ROOT / "resolver.wasm").is_file():
        pytest.fail("resolver.wasm is missing at the repository root: run `nox -s wasm`")
    return _build_wheel(ROOT, tmp_path_factory.mktemp("wheel"))


def _assert_complete_wheel(path: Path) -> None:
    with zipfile.ZipFile(path) as whl:
        names = whl.namelist()
        assert whl.read("confidence/resolver.wasm") == (ROOT / "resolver.wasm").read_bytes()
        assert "confidence/py.typed" in names
        for module in ("__init__.py", "provider.py", "materialization.py", "_version.py"):
            assert f"confidence/{module}" in names
        assert "confidence/testing/state_builder.py" in names
        assert "confidence/_proto/confidence/flags/admin/v1/resolver_pb2.py" in names
        strays = [n for n in names if not (n.startswith("confidence/") or ".dist-info/" in n)]
        assert not strays, f"unexpected files in the wheel: {strays}"
        assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
        metadata = _metadata(whl)
    headers = dict(metadata)
    assert headers["Name"] == DIST_NAME
    assert headers["Version"] == _declared_version()
    assert headers["Requires-Python"] == ">=3.10"
    runtime_requires = {
        value.replace(" ", "")
        for key, value in metadata
        if key == "Requires-Dist" and "extra ==" not in value
    }
    assert runtime_requires == _declared_dependencies()


def test_wheel_contains_resolver_wasm_py_typed_and_matching_metadata(wheel: Path) -> None:
    assert wheel.name == f"confidence_openfeature_provider-{_declared_version()}-py3-none-any.whl"
    _assert_complete_wheel(wheel)


# Runs inside the fresh virtualenv with `python -I` (no cwd, no PYTHONPATH, no user site):
# only the installed wheel and its dependencies are importable.
_SMOKE = textwrap.dedent(
    """
    import asyncio
    import importlib.metadata
    import importlib.resources
    import json
    import socket
    import sys
    import tempfile
    from pathlib import Path

    from openfeature import api
    from openfeature.evaluation_context import EvaluationContext

    import confidence
    from confidence import ConfidenceProvider
    from confidence.testing.state_builder import StateBuilder, attribute_eq, rollout


    def _no_network(*args, **kwargs):
        raise OSError("network disabled in the packaging smoke test")


    # Offline means offline: any connection attempt or DNS lookup fails loudly.
    socket.socket.connect = _no_network
    socket.socket.connect_ex = _no_network
    socket.create_connection = _no_network
    socket.getaddrinfo = _no_network

    V = "flags/checkout/variants/"
    state = (
        StateBuilder(account="packaging-account")
        .client("packaging-secret")
        .segment("segments/everyone")
        .segment("segments/sweden", targeting=attribute_eq("country", "SE"))
        .flag(
            "flags/checkout",
            variants={V + "new": {"enabled": True, "layout": "grid", "max_items": 7}},
            rules=[rollout("segments/sweden", {V + "new": 100})],
        )
    )
    tmp = Path(tempfile.mkdtemp())
    state_file = tmp / "state.pb"
    state_file.write_bytes(state.build_client_state())

    package = importlib.resources.files("confidence")
    out = {
        "file": confidence.__file__,
        "version": confidence.__version__,
        "dist_version": importlib.metadata.version("confidence-openfeature-provider"),
        "wasm_bytes": len(package.joinpath("resolver.wasm").read_bytes()),
        "py_typed": package.joinpath("py.typed").is_file(),
    }

    sweden = EvaluationContext("alice", {"country": "SE"})
    elsewhere = EvaluationContext("bob", {"country": "US"})
    api.set_provider_and_wait(
        ConfidenceProvider("packaging-secret", state_file=state_file, offline=True)
    )
    client = api.get_client()
    details = client.get_boolean_details("checkout.enabled", False, sweden)
    out["sync"] = {
        "enabled": details.value,
        "variant": details.variant,
        "reason": str(details.reason.value),
        "error": details.error_code and details.error_code.value,
        "layout": client.get_string_value("checkout.layout", "classic", sweden),
        "max_items": client.get_integer_value("checkout.max_items", 0, sweden),
        "elsewhere": client.get_boolean_value("checkout.enabled", False, elsewhere),
        "missing": client.get_string_details("no-such-flag", "d", sweden).error_code.value,
    }
    api.shutdown()


    async def main():
        async with ConfidenceProvider(
            "packaging-secret", state_file=state_file, offline=True
        ) as provider:
            api.set_provider_and_wait(provider)
            c = api.get_client()
            return {
                "enabled": await c.get_boolean_value_async("checkout.enabled", False, sweden),
                "object": await c.get_object_value_async("checkout", {}, sweden),
            }


    out["async"] = asyncio.run(main())
    api.shutdown()
    json.dump(out, sys.stdout)
    """
)


def test_wheel_installs_in_a_fresh_venv_and_resolves_offline(wheel: Path, tmp_path: Path) -> None:
    python, pip = _fresh_venv(tmp_path / "venv")
    _run([*pip, "install", wheel])
    _run([*pip, "check"], timeout=120)

    script = tmp_path / "smoke.py"
    script.write_text(_SMOKE)
    work = tmp_path / "work"
    work.mkdir()
    # XDG_CACHE_HOME: the compiled-module cache goes to the test's directory, not ~/.cache.
    env = _env(XDG_CACHE_HOME=str(tmp_path / "cache"))
    out = json.loads(_run([python, "-I", script], cwd=work, env=env, timeout=180))

    venv = (tmp_path / "venv").resolve()
    assert Path(out["file"]).resolve().is_relative_to(venv), out["file"]
    assert out["version"] == out["dist_version"] == _declared_version()
    assert out["wasm_bytes"] == (ROOT / "resolver.wasm").stat().st_size
    assert out["py_typed"] is True
    assert out["sync"] == {
        "enabled": True,
        "variant": "flags/checkout/variants/new",
        "reason": "TARGETING_MATCH",
        "error": None,
        "layout": "grid",
        "max_items": 7,
        "elsewhere": False,
        "missing": "FLAG_NOT_FOUND",
    }
    assert out["async"] == {
        "enabled": True,
        "object": {"enabled": True, "layout": "grid", "max_items": 7},
    }

    cli = _run([python, "-I", "-m", "confidence", "--version"], cwd=work, env=env, timeout=60)
    assert cli.strip() == f"python -m confidence {_declared_version()}"


@pytest.fixture(scope="module")
def sdist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("build", reason="needs the `build` package (the `test` extra)")
    out = tmp_path_factory.mktemp("sdist")
    _run([sys.executable, "-m", "build", "--sdist", "--outdir", out, ROOT])
    return _only(out, "*.tar.gz")


def _sdist_files(sdist: Path) -> tuple[str, list[str]]:
    prefix = f"confidence_openfeature_provider-{_declared_version()}/"
    with tarfile.open(sdist) as tar:
        names = [m.name for m in tar.getmembers() if m.isfile()]
    assert all(n.startswith(prefix) for n in names)
    return prefix, [n[len(prefix) :] for n in names]


def test_sdist_builds_and_its_wheel_is_complete(sdist: Path, tmp_path: Path) -> None:
    version = _declared_version()
    assert sdist.name == f"confidence_openfeature_provider-{version}.tar.gz"
    prefix, files = _sdist_files(sdist)
    with tarfile.open(sdist) as tar:
        pkg_info = tar.extractfile(prefix + "PKG-INFO")
        assert pkg_info is not None
        assert f"\nVersion: {version}\n" in pkg_info.read().decode("utf-8")
    for required in (
        "pyproject.toml",
        "hatch_build.py",
        "README.md",
        "resolver.wasm",
        "confidence/py.typed",
        "confidence/__init__.py",
        "confidence/_version.py",
        "resolver/Cargo.toml",
    ):
        assert required in files, f"{required} is missing from the sdist"

    # What pip does with the sdist when it cannot use the wheel.
    _assert_complete_wheel(_build_wheel(sdist, tmp_path / "from-sdist"))


def test_sdist_holds_no_virtualenv_build_or_cache_files(sdist: Path) -> None:
    _prefix, files = _sdist_files(sdist)
    strays = [
        f
        for f in files
        if re.search(r"(^|/)(site-packages|\.venv[^/]*|\.nox|target|__pycache__)/", f)
        or f.endswith(".pyc")
    ]
    assert not strays, (
        f"{len(strays)} unexpected file(s) in the sdist, e.g. {strays[:5]}. The patterns in "
        "[tool.hatch.build.targets.sdist] include/exclude match at any depth unless anchored "
        'with a leading "/" (e.g. "/confidence", "/tests"), so a directory of that name '
        "anywhere in the tree (say inside a virtualenv) is shipped too."
    )
