"""Exposures survive the ways a process ends, counted exactly by the emulator.

Every test runs a real process (a script, Flask's development server, gunicorn --preload)
against the emulator on 127.0.0.1 and counts what arrived: one exposure per distinct user
(apply de-duplication keys on the unit, so distinct users keep the count exact) and one resolve
count per evaluation. Every exit path must also be silent: no traceback, no "Exception
ignored" from objects finalized at interpreter teardown.
"""

from __future__ import annotations

import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from provider_support import (
    EXAMPLES_ACCOUNT,
    EXAMPLES_SECRET,
    REPO,
    SECRET,
    examples_state,
    exposed_units,
    provider_script,
    requires_wasm,
    sample_state,
    subprocess_env,
)
from sdk_compat import requires_set_provider_and_wait

from confidence.testing.emulator import ConfidenceEmulator

pytestmark = requires_wasm

NOISE = ("Traceback", "Exception ignored", "Error", "Unclosed", "Warning:")


@pytest.fixture
def emulator() -> Iterator[ConfidenceEmulator]:
    with ConfidenceEmulator(client_secret=SECRET).run_in_thread() as emu:
        emu.set_state(sample_state().build())
        yield emu


def resolves(emulator: ConfidenceEmulator, flag: str = "flags/feature") -> int:
    return sum(emulator.resolve_counts().get(flag, {}).values())


def assert_silent(stderr: str) -> None:
    noisy = [line for line in stderr.splitlines() if any(n in line for n in NOISE)]
    assert not noisy, stderr[-4000:]


PROVIDER = provider_script()


def run_script(tmp_path: Path, body: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(PROVIDER + textwrap.dedent(body))
    return subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=120
    )


def test_script_that_ends_without_shutdown_delivers_every_exposure(
    emulator: ConfidenceEmulator, tmp_path: Path
) -> None:
    # No api.shutdown(), no atexit of its own: the provider's exit flush delivers.
    done = run_script(
        tmp_path,
        """
        for i in range(20_000):
            client.get_string_value("feature.color", "none", EvaluationContext(f"user-{i}"))
        """,
        subprocess_env(emulator),
    )
    assert done.returncode == 0, done.stderr
    assert_silent(done.stderr)
    seen = exposed_units(emulator)
    assert len(seen) == 20_000 and set(seen.values()) == {1}
    assert resolves(emulator) == 20_000


def test_forked_child_and_parent_each_flush_their_own_at_exit(
    emulator: ConfidenceEmulator, tmp_path: Path
) -> None:
    # The exit hook is inherited by the child: there it must flush only the child's own
    # runtime (restarted lazily after the fork), never the parent's.
    done = run_script(
        tmp_path,
        """
        for i in range(50):
            client.get_string_value("feature.color", "none", EvaluationContext(f"parent-{i}"))
        import warnings
        # 3.12+ warns about any fork of a threaded process; this fork is the script's own
        # (the library handles it), so that warning is not noise from us.
        warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
        pid = os.fork()
        if pid == 0:
            for i in range(30):
                client.get_string_value("feature.color", "none", EvaluationContext(f"child-{i}"))
            sys.exit(0)  # a normal exit: atexit after a fork
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        """,
        subprocess_env(emulator),
    )
    assert done.returncode == 0, done.stderr
    assert_silent(done.stderr)
    seen = exposed_units(emulator)
    expected = {f"parent-{i}" for i in range(50)} | {f"child-{i}" for i in range(30)}
    assert set(seen) == expected and set(seen.values()) == {1}, seen
    assert resolves(emulator) == 80


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_http(url: str, proc: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                response.read()
            return
        except OSError:
            assert proc.poll() is None, proc.communicate()[1][-4000:]
            assert time.monotonic() < deadline, f"{url} did not come up"
            time.sleep(0.1)


def _checkout_env(emulator: ConfidenceEmulator) -> dict[str, str]:
    env = subprocess_env(emulator)
    env.update(
        CONFIDENCE_CLIENT_SECRET=SECRET,
        CONFIDENCE_ENCRYPTION_KEY=emulator.encryption_key_hex,
        CONFIDENCE_CDN_BASE_URL=emulator.cdn_base_url,
        CONFIDENCE_API_BASE_URL=emulator.api_base_url,
    )
    return env


def _serve_and_sigterm(
    emulator: ConfidenceEmulator, command: list[str], env: dict[str, str], port: int, n: int
) -> tuple[int, str]:
    proc = subprocess.Popen(
        command, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        base = f"http://127.0.0.1:{port}"
        _wait_http(f"{base}/health", proc)
        for i in range(n):
            with urllib.request.urlopen(f"{base}/checkout?user=u{i}", timeout=10) as response:
                response.read()
        proc.send_signal(signal.SIGTERM)
        _, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, stderr


@pytest.fixture
def checkout_emulator() -> Iterator[ConfidenceEmulator]:
    with ConfidenceEmulator(client_secret=EXAMPLES_SECRET).run_in_thread() as emu:
        emu.set_state(examples_state(), account_id=EXAMPLES_ACCOUNT)
        yield emu


def _checkout_env_for(emulator: ConfidenceEmulator) -> dict[str, str]:

    env = _checkout_env(emulator)
    env["CONFIDENCE_CLIENT_SECRET"] = EXAMPLES_SECRET
    return env


@requires_set_provider_and_wait
def test_flask_example_delivers_everything_on_sigterm(
    checkout_emulator: ConfidenceEmulator,
) -> None:
    port = _free_port()
    env = {**_checkout_env_for(checkout_emulator), "PORT": str(port)}
    code, stderr = _serve_and_sigterm(
        checkout_emulator, [sys.executable, "examples/flask_app.py"], env, port, 40
    )
    assert code == 0, stderr[-4000:]
    assert_silent(stderr)
    seen = exposed_units(checkout_emulator, "flags/checkout")
    assert set(seen) == {f"u{i}" for i in range(40)} and set(seen.values()) == {1}
    # Two evaluations per request (enabled and layout).
    assert resolves(checkout_emulator, "flags/checkout") == 80


@requires_set_provider_and_wait
def test_gunicorn_preload_flask_example_exits_silently_and_delivers(
    checkout_emulator: ConfidenceEmulator,
) -> None:
    pytest.importorskip("gunicorn")
    port = _free_port()
    command = [
        sys.executable, "-m", "gunicorn", "--preload", "--workers", "2",
        "--bind", f"127.0.0.1:{port}", "--chdir", "examples", "--graceful-timeout", "10",
        "flask_app:app",
    ]  # fmt: skip
    code, stderr = _serve_and_sigterm(
        checkout_emulator, command, _checkout_env_for(checkout_emulator), port, 200
    )
    assert code == 0, stderr[-4000:]
    # gunicorn logs its own lifecycle at [INFO]; anything else on stderr is noise.
    assert_silent("\n".join(line for line in stderr.splitlines() if "[INFO]" not in line))
    seen = exposed_units(checkout_emulator, "flags/checkout")
    assert set(seen) == {f"u{i}" for i in range(200)} and set(seen.values()) == {1}
    assert resolves(checkout_emulator, "flags/checkout") == 400


# -- black hole + SIGTERM, async host ----------------------------------------------------------

ASYNC_APP = """
    import json, logging, os, sys, time
    from contextlib import asynccontextmanager
    from fastapi import FastAPI
    from openfeature import api
    from openfeature.evaluation_context import EvaluationContext
    from confidence import ConfidenceProvider

    TIMEOUT = float(os.environ["TEST_SHUTDOWN_TIMEOUT"])
    logging.basicConfig(level=logging.WARNING)  # the library itself only has a NullHandler


    @asynccontextmanager
    async def lifespan(app):
        provider = ConfidenceProvider(
            os.environ["TEST_SECRET"],
            encryption_key=os.environ["TEST_KEY"],
            cdn_base_url=os.environ["TEST_URL"],
            api_base_url=os.environ["TEST_URL"],
            log_poll_interval=0.3,
            shutdown_timeout=TIMEOUT,
        )
        async with provider:
            getattr(api, "set_provider_and_wait", api.set_provider)(provider)
            yield
            started = time.monotonic()
        elapsed = time.monotonic() - started
        stats = provider.stats()  # after leaving `async with`: the final counters
        fields = {k: getattr(stats, k) for k in dir(stats) if k.startswith("log_")}
        print(json.dumps({"aclose_seconds": elapsed, "status": stats.status, **fields}))


    app = FastAPI(lifespan=lifespan)


    @app.get("/health")
    async def health():
        return {"ok": True}


    @app.get("/burst")
    async def burst(start: int, n: int):
        client = api.get_client()
        for i in range(start, start + n):
            await client.get_string_value_async("feature.color", "none", EvaluationContext(f"u{i}"))
        return {"n": n}
"""


def _logs_posts(emulator: ConfidenceEmulator) -> int:
    from confidence.testing.emulator import Route

    return len(emulator.requests_for(Route.FLAG_LOGS))


def test_sigterm_while_the_log_endpoint_black_holes_is_bounded_and_exactly_accounted(
    emulator: ConfidenceEmulator, tmp_path: Path
) -> None:
    import json

    from confidence.testing.emulator import Hang, Route

    pytest.importorskip("uvicorn")
    (tmp_path / "blackhole_app.py").write_text(textwrap.dedent(ASYNC_APP))
    port = _free_port()
    timeout = 2.0
    env = subprocess_env(emulator, TEST_SHUTDOWN_TIMEOUT=str(timeout))
    command = [
        sys.executable, "-m", "uvicorn", "blackhole_app:app", "--app-dir", str(tmp_path),
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    proc = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    base = f"http://127.0.0.1:{port}"

    def burst(start: int, n: int) -> None:
        with urllib.request.urlopen(f"{base}/burst?start={start}&n={n}", timeout=30) as r:
            r.read()

    try:
        _wait_http(f"{base}/health", proc)
        burst(0, 1500)  # delivered normally
        deadline = time.monotonic() + 20
        while exposed_units(emulator).total() < 1500:
            assert time.monotonic() < deadline, "the first burst was not delivered"
            time.sleep(0.05)
        emulator.inject(Route.FLAG_LOGS, Hang())  # accepts every request, never answers
        posts = _logs_posts(emulator)
        burst(1500, 1500)
        while _logs_posts(emulator) == posts:  # that burst is now in flight, hanging
            assert time.monotonic() < deadline + 20, "no delivery went in flight"
            time.sleep(0.02)
        burst(3000, 1000)  # stays queued (or in flight) behind the black hole
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    # (uvicorn re-raises the captured SIGTERM once it has shut down gracefully.)
    assert proc.returncode in (0, -signal.SIGTERM), stderr[-4000:]
    final = json.loads(stdout.strip().splitlines()[-1])

    assert final["aclose_seconds"] <= timeout + 0.5, final
    assert final["status"] == "STOPPED"
    delivered = exposed_units(emulator)
    assert set(delivered.values()) <= {1}
    lost_exposures = 4000 - delivered.total()
    lost_resolves = 4000 - resolves(emulator)
    assert lost_exposures > 0  # the black hole did swallow some: this is the lossy case
    # Exactly what is missing is reported, in the counters ...
    assert final["log_dropped_exposures"] == lost_exposures, final
    assert final["log_dropped_resolves"] == lost_resolves, final
    assert final["log_produced_exposures"] == 4000
    assert final["log_produced_resolves"] == 4000
    assert final["log_delivered_exposures"] == delivered.total()
    assert final["log_in_flight_exposures"] == final["log_queued_exposures"] == 0
    # ... and in the WARNINGs, whose running totals end at the same numbers.
    assert (
        f"{lost_exposures} exposure(s) and {lost_resolves} resolve count(s) lost since start"
        in (stderr)
    ), stderr[-4000:]
    assert "Traceback" not in stderr and "Exception ignored" not in stderr, stderr[-4000:]


def test_sync_shutdown_with_a_black_hole_is_bounded_and_stats_keep_the_final_counts(
    emulator: ConfidenceEmulator,
) -> None:
    from openfeature import api
    from openfeature.evaluation_context import EvaluationContext
    from provider_support import make_provider

    from confidence.testing.emulator import Hang, Route

    emulator.inject(Route.FLAG_LOGS, Hang())
    provider = make_provider(emulator, log_poll_interval=0.2, shutdown_timeout=1.0)
    getattr(api, "set_provider_and_wait", api.set_provider)(provider)
    client = api.get_client()
    for i in range(500):
        client.get_string_value("feature.color", "none", EvaluationContext(f"s{i}"))
    time.sleep(0.5)  # a delivery goes in flight and hangs
    started = time.monotonic()
    api.shutdown()
    assert time.monotonic() - started <= 1.0 + 0.5
    stats = provider.stats()
    assert stats.status == "STOPPED"
    assert stats.log_produced_exposures == stats.log_dropped_exposures == 500
    assert stats.log_produced_resolves == stats.log_dropped_resolves == 500
    assert stats.log_delivered_exposures == stats.log_in_flight_exposures == 0
    assert emulator.exposure_count() == 0
