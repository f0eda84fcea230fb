"""Reliability: pre-fork servers (issue #6).

A provider started in a parent process and then forked (`os.fork()` here, `gunicorn --preload`
below): the child notices the fork, never touches what it inherited (the parent's loop thread,
HTTP session and resolver instances, with the parent's unsent exposures in them), starts its
own runtime on its first evaluation — answering from the inherited state at once — and picks
up the current state. The parent is not affected, and every exposure is delivered exactly
once, by the process that made it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import threading
import time
import traceback
import urllib.request
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from openfeature import api
from openfeature.evaluation_context import EvaluationContext
from openfeature.exception import ErrorCode
from provider_support import (
    SECRET,
    exposed_units,
    make_provider,
    provider_script,
    requires_wasm,
    sample_state,
    subprocess_env,
    wait_until,
)

from confidence import _fork
from confidence.testing.emulator import ConfidenceEmulator

pytestmark = [
    requires_wasm,
    pytest.mark.usefixtures("openfeature_api"),
    pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork"),
]

SKIP_APPLY = {"_confidence_skip_apply": True}


def run_in_child(body: Callable[[], dict[str, Any]], timeout: float = 60.0) -> dict[str, Any]:
    """Fork; run `body` in the child; return what it returned (or raise what it raised)."""
    read_end, write_end = os.pipe()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "multi-threaded fork" (3.12+)
        pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 1
        try:
            os.close(read_end)
            try:
                result = {"ok": body()}
                code = 0
            except BaseException:
                result = {"error": traceback.format_exc()}
            os.write(write_end, json.dumps(result).encode())
        finally:
            os._exit(code)
    os.close(write_end)
    deadline = time.monotonic() + timeout
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            os.close(read_end)
            raise AssertionError(f"the forked child hung for {timeout:g}s")
        time.sleep(0.02)
    with os.fdopen(read_end, "rb") as pipe:
        data = pipe.read()
    outcome = json.loads(data) if data else {"error": f"child died with status {status}"}
    if "error" in outcome:
        raise AssertionError(f"in the forked child:\n{outcome['error']}")
    return dict(outcome["ok"])


def test_forked_child_restarts_lazily_and_the_parent_is_unaffected(
    emulator: ConfidenceEmulator,
) -> None:
    # The parent polls rarely, so it keeps serving blue: whatever the child shows beyond
    # blue, it fetched itself.
    provider = make_provider(emulator, state_poll_interval=30.0, log_poll_interval=60.0)
    api.set_provider_and_wait(provider)
    client = api.get_client()
    for user in ("parent-1", "parent-2", "parent-3"):  # exposures pending in the parent
        assert client.get_string_value("feature.color", "none", EvaluationContext(user)) == "blue"
    parent_runtime = provider._runtime
    assert parent_runtime is not None

    # Another thread evaluates all the time, so locks are held at the moment of the fork.
    stop = threading.Event()

    def hammer() -> None:
        ctx = EvaluationContext("hammer", SKIP_APPLY)
        while not stop.is_set():
            client.get_string_value("feature.color", "none", ctx)

    thread = threading.Thread(target=hammer)
    thread.start()
    emulator.set_state(sample_state(color="red").build())
    time.sleep(0.05)

    def child() -> dict[str, Any]:
        started = time.monotonic()
        quiet = EvaluationContext("child", SKIP_APPLY)
        first = client.get_string_value("feature.color", "none", quiet)
        first_after = time.monotonic() - started
        while client.get_string_value("feature.color", "none", quiet) != "red":
            assert time.monotonic() - started < 15, "the child never saw the new state"
            time.sleep(0.02)
        fresh_after = time.monotonic() - started
        colors = [
            client.get_string_value("feature.color", "none", EvaluationContext(user))
            for user in ("child-1", "child-2")
        ]

        async def on_a_loop() -> str:
            return await client.get_string_value_async(
                "feature.color", "none", EvaluationContext("child-3")
            )

        colors.append(asyncio.run(on_a_loop()))
        runtime = provider._runtime
        own = runtime is not None and runtime is not parent_runtime
        inherited = any(obj is parent_runtime for obj in _fork._INHERITED)
        api.shutdown()  # delivers the child's own exposures
        return {
            "first": first,
            "first_after": first_after,
            "fresh_after": fresh_after,
            "colors": colors,
            "own_runtime": own,
            "parent_runtime_parked": inherited,
        }

    try:
        result = run_in_child(child)
    finally:
        stop.set()
        thread.join()

    assert result["first"] in ("blue", "red")  # the inherited state, or already the fresh one
    assert result["first_after"] < 5.0
    assert result["colors"] == ["red", "red", "red"]
    assert result["own_runtime"] and result["parent_runtime_parked"]

    # The parent: same runtime, still blue (it has not polled since), still working.
    assert provider._runtime is parent_runtime and not parent_runtime.finished
    assert client.get_string_value("feature.color", "none", EvaluationContext("p")) == "blue"
    api.shutdown()
    # Every exposure exactly once, from the process that made it: the parent's three were in
    # the child's memory too, and the child did not send them.
    units = exposed_units(emulator)
    expected = ["parent-1", "parent-2", "parent-3", "child-1", "child-2", "child-3", "p"]
    assert units == Counter(expected)


def test_grandchildren_restart_too(emulator: ConfidenceEmulator) -> None:
    provider = make_provider(emulator, state_poll_interval=0.2)
    api.set_provider_and_wait(provider)
    client = api.get_client()

    def child() -> dict[str, Any]:
        mine = client.get_string_value("feature.color", "none", EvaluationContext("c"))

        def grandchild() -> dict[str, Any]:
            color = client.get_string_value("feature.color", "none", EvaluationContext("g"))
            api.shutdown()
            return {"color": color}

        below = run_in_child(grandchild)
        api.shutdown()
        return {"child": mine, "grandchild": below["color"]}

    assert run_in_child(child) == {"child": "blue", "grandchild": "blue"}
    assert client.get_string_value("feature.color", "none", EvaluationContext("p")) == "blue"


def test_child_of_a_stopped_provider_stays_stopped(emulator: ConfidenceEmulator) -> None:
    provider = make_provider(emulator)
    api.set_provider_and_wait(provider)
    provider.shutdown()

    def child() -> dict[str, Any]:
        details = provider.resolve_string_details("feature.color", "none", EvaluationContext("c"))
        return {"code": str(details.error_code), "runtime": provider._runtime is None}

    result = run_in_child(child)
    assert result == {"code": str(ErrorCode.PROVIDER_NOT_READY), "runtime": True}


def test_offline_provider_in_a_child(tmp_path: Path) -> None:
    path = tmp_path / "state.pb"
    path.write_bytes(sample_state().build_client_state())
    from confidence import ConfidenceProvider

    provider = ConfidenceProvider(SECRET, state_file=path, offline=True)
    provider.initialize(EvaluationContext())
    try:

        def child() -> dict[str, Any]:
            details = provider.resolve_integer_details("feature.size", 0, EvaluationContext("c"))
            provider.shutdown()
            return {"value": details.value}

        assert run_in_child(child) == {"value": 42}
        again = provider.resolve_integer_details("feature.size", 0, EvaluationContext("p"))
        assert again.value == 42
    finally:
        provider.shutdown()


# -- gunicorn --preload --------------------------------------------------------------------------

# The provider is started in the master at import (--preload), before gunicorn forks.
APP = provider_script(state_poll_interval=0.2, log_poll_interval=0.2) + textwrap.dedent("""
    import json

    MASTER = os.getpid()
    client.get_string_value("feature.color", "none", EvaluationContext("master"))


    def app(environ, start_response):
        user = environ.get("QUERY_STRING") or "anonymous"
        color = client.get_string_value("feature.color", "none", EvaluationContext(user))
        body = json.dumps({"pid": os.getpid(), "master": MASTER, "color": color}).encode()
        start_response("200 OK", [("Content-Type", "application/json")])
        return [body]
""")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=10) as response:
        return dict(json.loads(response.read()))


def test_gunicorn_preload_smoke(emulator: ConfidenceEmulator, tmp_path: Path) -> None:
    pytest.importorskip("gunicorn")
    (tmp_path / "flagapp.py").write_text(APP)
    port = _free_port()
    env = subprocess_env(emulator)
    command = [
        sys.executable, "-m", "gunicorn", "--preload", "--workers", "2",
        "--bind", f"127.0.0.1:{port}", "--chdir", str(tmp_path), "--graceful-timeout", "5",
        "flagapp:app",
    ]  # fmt: skip
    server = subprocess.Popen(
        command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        base = f"http://127.0.0.1:{port}/"
        deadline = time.monotonic() + 30
        while True:
            try:
                first = _get(base + "?warmup")
                break
            except OSError:
                assert server.poll() is None, server.stdout.read() if server.stdout else ""
                assert time.monotonic() < deadline, "gunicorn did not come up"
                time.sleep(0.1)
        answers = [_get(f"{base}?user-{i}") for i in range(20)]
        for answer in [first, *answers]:
            assert answer["color"] == "blue"
            assert answer["pid"] != answer["master"]  # served by a forked worker

        emulator.set_state(sample_state(color="red").build())
        wait_until(lambda: all(_get(f"{base}?later")["color"] == "red" for _ in range(6)))
        # One exposure per request (distinct users), sent by the workers, plus the master's
        # own: none of the master's pending exposures was sent again by a worker.
        users = {"master", "warmup", *(f"user-{i}" for i in range(20))}
        wait_until(lambda: users <= set(exposed_units(emulator)), timeout=15)
        counts = exposed_units(emulator)
        assert all(counts[user] == 1 for user in users), counts
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_a_fork_in_the_middle_of_an_event_handler_submit_leaves_the_child_working(
    emulator: ConfidenceEmulator,
) -> None:
    """The SDK's handler pool is inherited by a fork. A fork while a parent thread is inside
    its `submit()` (the pool's lock held: our event wait and the SDK both submit from the
    loop thread) must not block the child's events, nor its shutdown, forever."""
    from openfeature import _event_support

    executor = getattr(_event_support, "_event_executor", None)
    if executor is None:
        pytest.skip("this openfeature-sdk runs event handlers inline (no pool)")
    api.set_provider_and_wait(make_provider(emulator))
    assert executor.submit(lambda: 1).result(timeout=10) == 1  # the parent has a worker

    def child() -> dict[str, Any]:
        value = executor.submit(lambda: 42).result(timeout=10)
        color = api.get_client().get_string_value("feature.color", "none", EvaluationContext("c"))
        api.shutdown()  # the resumed provider's events went through the same pool
        return {"value": value, "color": color}

    with executor._shutdown_lock:  # what a submit on another thread holds at that moment
        result = run_in_child(child, timeout=30)
    assert result == {"value": 42, "color": "blue"}
