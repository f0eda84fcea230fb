"""Exposures survive the ways a process ends, counted exactly by the emulator.

Every test runs a real process (a script, Flask's development server, gunicorn --preload)
against the emulator on 127.0.0.1 and counts what arrived: one exposure per distinct user
(apply de-duplication keys on the unit, so distinct users keep the count exact) and one resolve
count per evaluation. Every exit path must also be silent: no traceback, no "Exception
ignored" from objects finalized at interpreter teardown.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from provider_support import REPO, SECRET, requires_wasm, sample_state

from confidence.testing.emulator import ConfidenceEmulator

pytestmark = requires_wasm

NOISE = ("Traceback", "Exception ignored", "Error", "Unclosed", "Warning:")


@pytest.fixture
def emulator() -> Iterator[ConfidenceEmulator]:
    with ConfidenceEmulator(client_secret=SECRET).run_in_thread() as emu:
        emu.set_state(sample_state().build())
        yield emu


def env_for(emulator: ConfidenceEmulator, **extra: str) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("CONFIDENCE_")},
        "TEST_SECRET": SECRET,
        "TEST_KEY": emulator.encryption_key_hex,
        "TEST_URL": emulator.base_url,
        "PYTHONUNBUFFERED": "1",
        **extra,
    }


def units(emulator: ConfidenceEmulator, flag: str = "flags/feature") -> Counter[str]:
    found: Counter[str] = Counter()
    for batch in emulator.all_flag_log_batches():
        for assigned in batch.flag_assigned:
            for applied in assigned.flags:
                if applied.flag == flag:
                    found[applied.targeting_key] += 1
    return found


def resolves(emulator: ConfidenceEmulator, flag: str = "flags/feature") -> int:
    return sum(emulator.resolve_counts().get(flag, {}).values())


def assert_silent(stderr: str) -> None:
    noisy = [line for line in stderr.splitlines() if any(n in line for n in NOISE)]
    assert not noisy, stderr[-4000:]


PROVIDER = """
    import os, sys
    from openfeature import api
    from openfeature.evaluation_context import EvaluationContext
    from confidence import ConfidenceProvider

    provider = ConfidenceProvider(
        os.environ["TEST_SECRET"],
        encryption_key=os.environ["TEST_KEY"],
        cdn_base_url=os.environ["TEST_URL"],
        api_base_url=os.environ["TEST_URL"],
    )
    api.set_provider_and_wait(provider)
    client = api.get_client()
"""


def run_script(tmp_path: Path, body: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(PROVIDER) + textwrap.dedent(body))
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
        env_for(emulator),
    )
    assert done.returncode == 0, done.stderr
    assert_silent(done.stderr)
    seen = units(emulator)
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
        pid = os.fork()
        if pid == 0:
            for i in range(30):
                client.get_string_value("feature.color", "none", EvaluationContext(f"child-{i}"))
            sys.exit(0)  # a normal exit: atexit after a fork
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0
        """,
        env_for(emulator),
    )
    assert done.returncode == 0, done.stderr
    assert_silent(done.stderr)
    seen = units(emulator)
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
    env = env_for(emulator)
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
    from test_examples import ACCOUNT, examples_state
    from test_examples import SECRET as EXAMPLES_SECRET

    with ConfidenceEmulator(client_secret=EXAMPLES_SECRET).run_in_thread() as emu:
        emu.set_state(examples_state(), account_id=ACCOUNT)
        yield emu


def _checkout_env_for(emulator: ConfidenceEmulator) -> dict[str, str]:
    from test_examples import SECRET as EXAMPLES_SECRET

    env = _checkout_env(emulator)
    env["CONFIDENCE_CLIENT_SECRET"] = EXAMPLES_SECRET
    return env


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
    seen = units(checkout_emulator, "flags/checkout")
    assert set(seen) == {f"u{i}" for i in range(40)} and set(seen.values()) == {1}
    # Two evaluations per request (enabled and layout).
    assert resolves(checkout_emulator, "flags/checkout") == 80


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
    seen = units(checkout_emulator, "flags/checkout")
    assert set(seen) == {f"u{i}" for i in range(200)} and set(seen.values()) == {1}
    assert resolves(checkout_emulator, "flags/checkout") == 400
