"""DEBUG logging says what the provider does, once per activity, never per evaluation.

Runs a real provider in a subprocess (a fresh module cache, so the compile tier-up
happens) against the emulator, with `logging.getLogger("confidence").setLevel(DEBUG)` as
the README says, and reads what it printed.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

from tests.provider_support import REPO, requires_wasm
from tests.sdk_compat import requires_track

pytestmark = requires_wasm

SCRIPT = r"""
import logging, sys, time
from openfeature.evaluation_context import EvaluationContext
from openfeature.track import TrackingEventDetails
from confidence import ConfidenceProvider
from confidence.testing.emulator import ConfidenceEmulator, Route, Status
from tests.provider_support import SECRET, sample_state

logging.basicConfig(level=logging.WARNING, stream=sys.stdout,
                    format="%(levelname)s %(name)s: %(message)s")
logging.getLogger("confidence").setLevel(logging.DEBUG)
with ConfidenceEmulator(client_secret=SECRET).run_in_thread() as emu:
    emu.set_state(sample_state().build())
    emu.inject(Route.FLAG_LOGS, Status(503), times=1)
    provider = ConfidenceProvider(
        SECRET, encryption_key=emu.encryption_key_hex, cdn_base_url=emu.cdn_base_url,
        api_base_url=emu.api_base_url, events_base_url=emu.base_url,
        state_poll_interval=0.3, log_poll_interval=0.5,
    )
    provider.initialize(EvaluationContext())
    for i in range(N):
        ctx = EvaluationContext(f"user-{i % 50}", {"country": "SE"})
        provider.resolve_boolean_details("swedish.enabled", False, ctx)
    provider.track("purchase", EvaluationContext("user-1"), TrackingEventDetails(value=3.0))
    deadline = time.monotonic() + 20
    while emu.exposure_count() < 50 and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # a few more polls (304s)
    emu.set_state(sample_state(color="green").build())  # a new state
    time.sleep(1.0)
    provider.shutdown()
print("DONE")
"""


def run(tmp_path: Path, evaluations: int) -> list[str]:
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT.replace("range(N)", f"range({evaluations})")],
        capture_output=True,
        text=True,
        timeout=180,
        cwd=REPO,
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(REPO),
            "XDG_CACHE_HOME": str(tmp_path / f"cache-{evaluations}"),
            "HOME": str(tmp_path),
        },
    )
    assert proc.returncode == 0 and "DONE" in proc.stdout, proc.stdout + proc.stderr
    return [line for line in proc.stdout.splitlines() if line.startswith(("DEBUG", "INFO"))]


@requires_track  # the script tracks an event (its publish is one of the lines)
def test_one_debug_line_per_activity_and_none_per_evaluation(tmp_path: Path) -> None:
    lines = run(tmp_path, 1000)
    text = "\n".join(lines)

    def has(fragment: str) -> bool:
        return any(fragment in line for line in lines)

    assert has("Resolver state not modified"), text  # a 304 poll
    assert has("Resolver state applied: ") and has("flag(s), 2 segment(s)"), text
    assert has("Resolver pool changed: state generation 1"), text
    assert has("Resolver pool changed: state generation 2"), text  # the new state
    assert has("Resolver moved to optimized code after"), text  # the tier-up
    assert has("Flag log delivery to edge attempt 1 failed"), text  # the retry
    delivered = [
        re.search(r"Flag logs delivered: 1 batch, (\d+) exposure\(s\), (\d+) resolve count", line)
        for line in lines
    ]
    counts = [(int(m[1]), int(m[2])) for m in delivered if m]
    assert sum(e for e, _ in counts) == 50 and sum(r for _, r in counts) == 1000, text
    assert " bytes in " in text and " ms (" in text
    assert has("Published 1 tracked event(s)"), text
    # nothing per evaluation, no secrets
    assert "user-" not in text
    from tests.provider_support import SECRET

    assert SECRET not in text
    assert len(lines) < 60, text
