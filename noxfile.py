"""Developer and CI tasks. `nox -s tests` is the test suite the README names."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

ROOT = Path(__file__).resolve().parent


@nox.session
def tests(session: nox.Session) -> None:
    """The test suite (pytest), including the conformance suite when ../shared exists."""
    session.install("-e", ".[test,redis]")
    session.run("python", "-m", "pytest", *session.posargs)


@nox.session(python=False)
def matrix(session: nox.Session) -> None:
    """One leg of the CI support matrix: `nox -s matrix -- 3.14` (see scripts/test-matrix)."""
    session.run("bash", "scripts/test-matrix", *(session.posargs or ["3.11"]), external=True)


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "confidence", "tests", "noxfile.py")


@nox.session
def typecheck(session: nox.Session) -> None:
    session.install("-e", ".[test,redis]", "mypy")
    session.run("mypy")


@nox.session
def proto(session: nox.Session) -> None:
    """Regenerate confidence/_proto/ from proto/ (needs Debian's protobuf-compiler)."""
    session.run("python", "scripts/gen_proto.py", external=True)


@nox.session(python=False)
def wasm(session: nox.Session) -> None:
    """Build resolver.wasm from resolver/ with Debian's Rust toolchain."""
    session.run("bash", "resolver/build-wasm.sh", str(ROOT / "resolver.wasm"), external=True)


@nox.session(python=False)
def wasm_check(session: nox.Session) -> None:
    """Fail unless the committed resolver.wasm is byte-for-byte what `nox -s wasm` builds."""
    with tempfile.TemporaryDirectory() as tmp:
        built = os.path.join(tmp, "resolver.wasm")
        session.run("bash", "resolver/build-wasm.sh", built, external=True)
        committed = (ROOT / "resolver.wasm").read_bytes()
        fresh = Path(built).read_bytes()
        if committed != fresh:
            session.error(
                f"resolver.wasm differs from a fresh build"
                f" ({len(committed)} vs {len(fresh)} bytes):"
                " run `nox -s wasm` and commit it"
            )
        session.log(f"resolver.wasm is reproducible ({len(fresh)} bytes)")


@nox.session(python=False)
def cargo_test(session: nox.Session) -> None:
    """The resolver's Rust unit tests, on the host."""
    session.run("bash", "resolver/test.sh", external=True)


@nox.session(python=False)
def rust_lint(session: nox.Session) -> None:
    """The resolver's rustfmt check and clippy with warnings as errors (Debian's toolchain)."""
    session.run("bash", "resolver/lint.sh", external=True)


@nox.session
def demo(session: nox.Session) -> None:
    session.install("-e", ".")
    session.run("python", "-m", "confidence", "demo")


#: The local-evaluation SDKs bench/peers.py compares us with (issue 12); they install beside
#: ours. The official provider cannot (it is also named `confidence`): run.py gives it
#: bench/.venv-official.
BENCH_PEERS = (
    "openfeature-provider-flagd",
    "launchdarkly-server-sdk",
    "launchdarkly-openfeature-server",
    "growthbook",
    "UnleashClient",
)


@nox.session
def bench(session: nox.Session) -> None:
    """Side-by-side benchmark: ours vs the official provider vs InMemoryProvider, sustained
    traffic, start-up on a 2,000-flag state, and the peers. `nox -s bench -- --help`."""
    session.install("-e", ".")
    for peer in BENCH_PEERS:
        # A peer that cannot be installed here is skipped by bench/peers.py, not fatal.
        try:
            session.install(peer, silent=True)
        except nox.command.CommandFailed:
            session.warn(f"could not install {peer}; the peer table will skip it")
    session.run("python", "bench/run.py", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site (mkdocs.yml, docs/) into site/; any warning fails it."""
    # mkdocstrings formats long signatures with ruff.
    session.install("-e", ".", "mkdocs-material", "mkdocstrings[python]", "ruff")
    session.run("mkdocs", "build", "--strict", *session.posargs, env={"NO_MKDOCS_2_WARNING": "1"})
