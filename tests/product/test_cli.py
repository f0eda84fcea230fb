"""`python -m confidence resolve | inspect | fetch`, run as a user would: in a subprocess,
against state files from the state builder and against the emulator."""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from provider_support import ACCOUNT, REPO, SECRET, requires_wasm, sample_state

from confidence._state.crypto import decrypt_state, encrypt_state, parse_encryption_key
from confidence._wasm.protowire import decode_client_resolver_state
from confidence.testing.emulator import ConfidenceEmulator, Route

KEY_HEX = "1f" * 32


def cli(*args: str, timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "confidence", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        cwd=REPO,
    )


def resolved(result: subprocess.CompletedProcess[str]) -> dict[str, object]:
    assert result.stderr == "", result.stderr
    parsed = json.loads(result.stdout)
    assert isinstance(parsed, dict)
    return parsed


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("states")
    builder = sample_state()
    out = {
        "client": root / "client.pb",
        "raw": root / "raw.pb",
        "encrypted": root / "state.enc",
    }
    out["client"].write_bytes(builder.build_client_state())
    out["raw"].write_bytes(builder.build())
    out["encrypted"].write_bytes(
        encrypt_state(builder.build_client_state(), parse_encryption_key(KEY_HEX))
    )
    return out


# -- resolve -----------------------------------------------------------------------------------


@requires_wasm
def test_resolve_from_state_files(files: dict[str, Path]) -> None:
    context = json.dumps({"targeting_key": "user-1", "country": "SE"})
    for args in (
        ["--state", str(files["client"])],
        ["--state", str(files["raw"]), "--account", ACCOUNT],
        ["--state", str(files["raw"])],  # a resolve needs no account
        ["--state", str(files["encrypted"]), "--encryption-key", KEY_HEX],
    ):
        result = cli("resolve", *args, "--flag", "swedish.enabled", "--context", context)
        assert result.returncode == 0
        out = resolved(result)
        assert out["value"] is True
        assert out["variant"] == "flags/swedish/variants/yes"
        assert out["reason"] == "TARGETING_MATCH"
        assert out["error_code"] is None and out["error_message"] is None
        assert out["flag"] == "swedish.enabled"


@requires_wasm
def test_resolve_values_reasons_and_errors(files: dict[str, Path]) -> None:
    state = ["--state", str(files["client"])]
    whole = resolved(
        cli("resolve", *state, "--flag", "feature", "--context", '{"targeting_key":"u"}')
    )
    assert whole["value"] == {
        "enabled": True,
        "color": "blue",
        "size": 42,
        "ratio": 0.25,
        "nested": {"deep": {"x": 7}},
        "items": [1, 2],
        "nothing": None,
    }
    assert resolved(cli("resolve", *state, "--flag", "feature.items"))["value"] == [1, 2]
    no_match = resolved(cli("resolve", *state, "--flag", "swedish.enabled", "--default", "false"))
    assert (no_match["value"], no_match["reason"], no_match["variant"]) == (False, "DEFAULT", None)

    missing = cli("resolve", *state, "--flag", "nope")
    assert missing.returncode == 1
    assert resolved(missing)["error_code"] == "FLAG_NOT_FOUND"

    mismatch = cli(
        "resolve", *state, "--flag", "feature.color", "--type", "integer", "--default", "7"
    )
    assert mismatch.returncode == 1
    out = resolved(mismatch)
    assert (out["value"], out["error_code"], out["reason"]) == (7, "TYPE_MISMATCH", "ERROR")

    # A secret the state does not know: a resolution error that never echoes the secret.
    unknown = cli("resolve", *state, "--secret", "not-a-known-secret", "--flag", "feature")
    assert unknown.returncode == 1
    assert resolved(unknown)["error_code"] == "GENERAL"
    assert "not-a-known-secret" not in unknown.stdout


@requires_wasm
def test_resolve_from_the_cdn_logs_nothing(confidence_emulator_sync: ConfidenceEmulator) -> None:
    emulator = confidence_emulator_sync
    emulator.set_state(sample_state(color="green").build())
    result = cli(
        "resolve",
        "--secret",
        SECRET,
        "--encryption-key",
        emulator.encryption_key_hex,
        "--cdn-base-url",
        emulator.cdn_base_url,
        "--flag",
        "feature.color",
        "--context",
        '{"targeting_key": "user-1"}',
    )
    assert result.returncode == 0, result.stderr
    assert resolved(result)["value"] == "green"
    # Inspection only: the state was downloaded, and nothing was ever sent back.
    routes = {r.route for r in emulator.requests}
    assert routes == {Route.STATE}

    wrong = cli(
        "resolve",
        "--secret",
        "wrong-secret",
        "--encryption-key",
        emulator.encryption_key_hex,
        "--cdn-base-url",
        emulator.cdn_base_url,
        "--flag",
        "feature",
    )
    assert wrong.returncode == 1
    assert wrong.stderr.startswith("error: the CDN answered HTTP 404")
    assert "wrong-secret" not in wrong.stderr and "Traceback" not in wrong.stderr


def test_usage_errors_are_one_line_with_exit_2(files: dict[str, Path], tmp_path: Path) -> None:
    cases = [
        (["resolve", "--flag", "x"], "give a state"),
        (["resolve", "--state", str(tmp_path / "missing.pb"), "--flag", "x"], "cannot read"),
        (["resolve", "--state", str(files["client"]), "--flag", "x", "--context", "[1"], "JSON"),
        (["resolve", "--state", str(files["client"]), "--flag", "x", "--context", "[1]"], "object"),
        (["resolve", "--state", str(files["encrypted"]), "--flag", "x"], "--encryption-key"),
        (
            ["resolve", "--state", str(files["client"]), "--flag", "x", "--encryption-key", "abc"],
            "64 hexadecimal",
        ),
        (["inspect"], "--state FILE is required"),
    ]
    for args, fragment in cases:
        result = cli(*args)
        assert result.returncode == 2, (args, result.stderr)
        assert result.stderr.startswith("error: ") and fragment in result.stderr, result.stderr
        assert "Traceback" not in result.stderr and result.stdout == ""
    missing_flag = cli("resolve", "--state", str(files["client"]))
    assert missing_flag.returncode == 2 and "--flag" in missing_flag.stderr


def test_every_command_has_help() -> None:
    for command in ([], ["demo"], ["resolve"], ["inspect"], ["fetch"]):
        result = cli(*command, "--help")
        assert result.returncode == 0 and "usage:" in result.stdout, command
    assert "exit status" in cli("resolve", "--help").stdout


# -- inspect -----------------------------------------------------------------------------------


def test_inspect_table_and_json(files: dict[str, Path]) -> None:
    table = cli("inspect", "--state", str(files["encrypted"]), "--encryption-key", KEY_HEX)
    assert table.returncode == 0, table.stderr
    text = table.stdout
    assert text.startswith(f"account {ACCOUNT}: 4 flag(s), 2 segment(s)")
    for fragment in ("FLAG", "split", "a, b", "a 50%, b 50%", "SEGMENT", "sweden", "country"):
        assert fragment in text
    assert SECRET not in text  # a state carries client secrets; they are never printed

    as_json = cli("inspect", "--state", str(files["raw"]), "--json")
    assert as_json.returncode == 0
    info = json.loads(as_json.stdout)
    assert [f["name"] for f in info["flags"]] == ["feature", "swedish", "split", "sticky"]
    split = info["flags"][2]
    assert split["variants"] == ["a", "b"]
    assert split["rules"][0]["segment"] == "everyone"
    assert split["rules"][0]["assignments"] == ["a 50%", "b 50%"]
    sticky = info["flags"][3]["rules"][0]
    assert sticky["materialization"]["writeMaterialization"] == "materializations/sticky"
    assert {s["name"]: s["targeting"] for s in info["segments"]} == {
        "everyone": [],
        "sweden": ["country"],
    }
    assert SECRET not in as_json.stdout


# -- fetch -------------------------------------------------------------------------------------


@requires_wasm
def test_fetch_encrypted_and_decrypted(
    confidence_emulator_sync: ConfidenceEmulator, tmp_path: Path
) -> None:
    emulator = confidence_emulator_sync
    emulator.set_state(sample_state().build(), account_id="acct-9")
    key = emulator.encryption_key_hex
    common = ["--secret", SECRET, "--cdn-base-url", emulator.cdn_base_url]

    encrypted = tmp_path / "state.enc"
    result = cli("fetch", *common, "--encryption-key", key, "-o", str(encrypted))
    assert result.returncode == 0, result.stderr
    assert "account acct-9 (4 flag(s)" in result.stdout
    body = encrypted.read_bytes()
    assert sample_state().build() not in body  # as served: encrypted
    decoded = decode_client_resolver_state(decrypt_state(body, parse_encryption_key(key)))
    assert (decoded.state, decoded.account) == (sample_state().build(), "acct-9")
    assert stat.S_IMODE(encrypted.stat().st_mode) == 0o600

    plain = tmp_path / "state.pb"
    result = cli("fetch", *common, "--encryption-key", key, "--decrypt", "-o", str(plain))
    assert result.returncode == 0, result.stderr
    assert plain.read_bytes() == decrypt_state(body, parse_encryption_key(key))

    # Both files work offline.
    for args in (["--state", str(encrypted), "--encryption-key", key], ["--state", str(plain)]):
        out = resolved(cli("resolve", *args, "--flag", "feature.enabled"))
        assert out["value"] is True


def test_fetch_failures(confidence_emulator_sync: ConfidenceEmulator, tmp_path: Path) -> None:
    emulator = confidence_emulator_sync
    emulator.set_state(sample_state().build())
    target = tmp_path / "out.enc"
    common = ["--secret", SECRET, "-o", str(target)]

    wrong_key = cli(
        "fetch", *common, "--cdn-base-url", emulator.cdn_base_url, "--encryption-key", KEY_HEX
    )
    assert wrong_key.returncode == 1
    assert "could not decrypt" in wrong_key.stderr and KEY_HEX not in wrong_key.stderr

    down = cli(
        "fetch", *common, "--cdn-base-url", "http://127.0.0.1:9", "--encryption-key", KEY_HEX
    )
    assert down.returncode == 1 and "could not download" in down.stderr
    assert SECRET not in down.stderr and emulator.secret_hash not in down.stderr

    no_key = cli("fetch", *common, "--cdn-base-url", emulator.cdn_base_url)
    assert no_key.returncode == 2 and "--encryption-key is required" in no_key.stderr
    assert not target.exists()  # nothing written on failure
    assert "Traceback" not in wrong_key.stderr + down.stderr + no_key.stderr


# -- exit codes, -v, epilogs --------------------------------------------------------------------


def test_a_wrong_key_of_valid_form_exits_1_as_the_epilog_says(files: dict[str, Path]) -> None:
    wrong = "2e" * 32
    for command in (["resolve", "--flag", "feature"], ["inspect"], ["explain", "--flag", "x"]):
        result = cli(
            *command[:1],
            "--state",
            str(files["encrypted"]),
            "--encryption-key",
            wrong,
            *command[1:],
        )
        assert result.returncode == 1, (command, result.stderr)
        assert result.stderr.startswith("error: ") and "decrypt" in result.stderr
        assert wrong not in result.stderr
    assert "1 failed (" in cli("inspect", "--help").stdout
    assert "state not decryptable" in cli("inspect", "--help").stdout


def test_epilogs_of_commands_that_resolve_nothing_do_not_mention_resolution() -> None:
    for command in ("inspect", "fetch", "precompile"):
        text = cli(command, "--help").stdout
        assert "exit status" in text, command
        assert "resolution error" not in text, command
    assert "resolution error" in cli("resolve", "--help").stdout


@requires_wasm
def test_verbose_says_what_was_loaded(files: dict[str, Path]) -> None:
    quiet = cli("resolve", "--state", str(files["client"]), "--flag", "feature")
    loud = cli("-v", "resolve", "--state", str(files["client"]), "--flag", "feature")
    assert quiet.returncode == loud.returncode == 0
    assert quiet.stderr == ""
    assert "state from" in loud.stderr and "resolver loaded" in loud.stderr
    same = ("value", "variant", "reason")
    q, lo = json.loads(quiet.stdout), json.loads(loud.stdout)
    assert [q[k] for k in same] == [lo[k] for k in same]
    inspect = cli("-v", "inspect", "--state", str(files["client"]))
    assert "state from" in inspect.stderr
