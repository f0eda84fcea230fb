"""The examples in `examples/`, run for real against the Confidence emulator.

Each example runs in its own process, configured only through CONFIDENCE_* environment
variables, exactly as a user would run it: the FastAPI app under uvicorn, the Flask app on
Flask's development server, the worker as a script. The emulator (in this process) serves a
state built with `StateBuilder`; the tests check the HTTP responses / output carry the flag
values, and that the exposure logs reach the emulator when the process shuts down.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from provider_support import (
    EXAMPLES_ACCOUNT,
    EXAMPLES_SECRET,
    default_sigint,
    examples_state,
    requires_wasm,
    variant,
)
from sdk_compat import requires_set_provider_and_wait

from confidence.testing.emulator import ConfidenceEmulator

pytestmark = requires_wasm

ROOT = Path(__file__).resolve().parents[2]
EXAMPLES = ROOT / "examples"
START_TIMEOUT = 60.0


ALICE = {
    "user": "alice",
    "new_checkout": True,
    "layout": "grid",
    "variant": variant("checkout", "new"),
    "reason": "TARGETING_MATCH",
    "error": None,
}
BOB = {
    "user": "bob",
    "new_checkout": False,
    "layout": "list",
    "variant": variant("checkout", "old"),
    "reason": "TARGETING_MATCH",
    "error": None,
}


@pytest.fixture
def emulator() -> Iterator[ConfidenceEmulator]:
    with ConfidenceEmulator(client_secret=EXAMPLES_SECRET).run_in_thread() as emu:
        emu.set_state(examples_state(), account_id=EXAMPLES_ACCOUNT)
        yield emu


def example_env(emulator: ConfidenceEmulator, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONFIDENCE_")}
    env.update(
        CONFIDENCE_CLIENT_SECRET=EXAMPLES_SECRET,
        CONFIDENCE_ENCRYPTION_KEY=emulator.encryption_key_hex,
        CONFIDENCE_CDN_BASE_URL=emulator.cdn_base_url,
        CONFIDENCE_API_BASE_URL=emulator.api_base_url,
        PYTHONUNBUFFERED="1",
        **extra,
    )
    return env


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _output(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:] if log.exists() else ""


@contextmanager
def serving(args: list[str], env: dict[str, str], log: Path) -> Iterator[str]:
    """Start a server process on a free 127.0.0.1 port; yield its base URL once /health
    answers. On exit, stop it with SIGINT (a Ctrl-C: graceful shutdown) and wait."""
    proc: subprocess.Popen[bytes] | None = None
    url, ready = "", False
    for _attempt in range(3):  # a free port can be taken between our probe and its bind
        port = free_port()
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [a.replace("{port}", str(port)) for a in args],
                env={**env, "PORT": str(port)},
                cwd=ROOT,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=default_sigint,  # Ctrl-C semantics even under a background runner
            )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT
        while not ready and time.monotonic() < deadline and proc.poll() is None:
            try:
                ready = httpx.get(f"{url}/health", timeout=2.0).status_code == 200
            except httpx.TransportError:
                time.sleep(0.1)
        if ready or proc.poll() is None:
            break
        if "address already in use" not in _output(log).lower():
            break
    assert proc is not None
    if not ready:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
        pytest.fail(f"{args} did not start (exit code {proc.returncode}):\n{_output(log)}")
    try:
        yield url
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
                pytest.fail(f"{args} did not stop on SIGINT:\n{_output(log)}")
    assert proc.returncode == 0, f"{args} exited with {proc.returncode}:\n{_output(log)}"


def serves_the_example(url: str) -> None:
    """What every example server answers once up: READY health, the index, two checkouts."""
    assert httpx.get(f"{url}/health", timeout=5.0).json() == {"flags": "READY"}
    index_points_to_checkout(url)
    assert checkout(url, user="alice", country="SE") == ALICE
    assert checkout(url, user="bob", country="US") == BOB


def index_points_to_checkout(url: str) -> None:
    """`/` answers what to call instead of a 404."""
    response = httpx.get(f"{url}/", timeout=10.0)
    assert response.status_code == 200, response.text
    hints = response.json()["try"]
    assert "/checkout?user=alice&country=SE" in hints
    assert checkout(url, user="alice", country="SE") == ALICE  # the hint works


def checkout(url: str, **params: str) -> dict[str, Any]:
    response = httpx.get(f"{url}/checkout", params=params, timeout=10.0)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


@requires_set_provider_and_wait
def test_fastapi_example_under_uvicorn(emulator: ConfidenceEmulator, tmp_path: Path) -> None:
    args = [
        sys.executable,
        "-m",
        "uvicorn",
        "fastapi_app:app",
        "--app-dir",
        str(EXAMPLES),
        "--host",
        "127.0.0.1",
        "--port",
        "{port}",
        "--log-level",
        "warning",
    ]
    with serving(args, example_env(emulator), tmp_path / "uvicorn.log") as url:
        # The lifespan finished before uvicorn accepted a request: flags are ready at once.
        serves_the_example(url)
    # SIGINT -> uvicorn's graceful shutdown -> lifespan exit -> the provider's final flush
    # (the periodic one runs only every 10 s).
    assert emulator.exposure_count("checkout") >= 2


@requires_set_provider_and_wait
def test_flask_example_on_the_development_server(
    emulator: ConfidenceEmulator, tmp_path: Path
) -> None:
    args = [sys.executable, str(EXAMPLES / "flask_app.py")]
    with serving(args, example_env(emulator), tmp_path / "flask.log") as url:
        serves_the_example(url)
    # Ctrl-C ends app.run(); the atexit api.shutdown() flushed the exposures.
    assert emulator.exposure_count("checkout") >= 2


@requires_set_provider_and_wait
def test_worker_example_script(emulator: ConfidenceEmulator) -> None:
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "worker.py"), "alice:SE", "bob:US", "carol"],
        env=example_env(emulator),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert lines == [ALICE, BOB, {**BOB, "user": "carol"}]
    # api.shutdown() before exit delivered the exposures.
    assert emulator.exposure_count("checkout") >= 3


@requires_set_provider_and_wait
def test_worker_example_without_a_state_serves_defaults(
    emulator: ConfidenceEmulator,
) -> None:
    """Flags not ready (here: the CDN has no state): the worker still runs, on defaults."""
    emulator.clear_state()
    proc = subprocess.run(
        [sys.executable, str(EXAMPLES / "worker.py"), "alice:SE"],
        env=example_env(emulator),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Confidence flags not ready, using defaults" in proc.stderr
    (line,) = (json.loads(line) for line in proc.stdout.splitlines())
    assert line["new_checkout"] is False
    assert line["layout"] == "classic"
    assert line["reason"] == "ERROR"
    assert line["error"] in ("PROVIDER_NOT_READY", "PROVIDER_FATAL")
