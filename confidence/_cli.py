"""`python -m confidence resolve | explain | inspect | fetch | precompile`: states, flags, cache.

- `resolve`: one flag for one context, from a state file or straight from the CDN, printed
  as JSON (value, variant, reason, error code/message, metadata). Inspection only: the
  resolve runs with exposure collection off, `apply=False` and `skip_logging`, and nothing is
  ever sent anywhere (the CLI has no log sender at all).
- `explain`: why a context gets its variant: the resolver's trace of one flag (every rule,
  criterion, the bucketing), as a tree or `--json`; inspection only, like `resolve`.
- `inspect`: the flags (variants, rules) and segments in a state file; a table, or `--json`.
- `fetch`: download the current state for offline use (`state_file=`, `--state`): the
  encrypted body as the CDN serves it, or decrypted with `--decrypt`.
- `precompile`: compile resolver.wasm into the compiled-module cache now (e.g. while building
  a container image), so that providers start warm instead of compiling (docs/performance.md).

Exit codes: 0 ok; 1 the command ran but failed (a resolution error, the CDN unreachable or
refusing, a state that does not decrypt); 2 usage (bad arguments, unreadable input files).
Errors are one `error: ...` line on stderr, never a traceback, and never show a secret.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from confidence._state.sync import DEFAULT_CDN_BASE_URL
from confidence.errors import ConfidenceError

if TYPE_CHECKING:  # (each command imports these itself, when it runs)
    from openfeature.flag_evaluation import FlagResolutionDetails

    from confidence._config import BootstrapState
    from confidence._evaluation import FlagLookup
    from confidence._wasm.abi import ResolveRequest
    from confidence._wasm.pool import ResolverPool
    from confidence._wasm.protowire import ClientResolverState

__all__ = ["EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "CliError", "add_commands"]

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2

_EXIT_HELP: Final = (
    "exit status: 0 ok, 1 failed (resolution error, CDN unreachable, state not decryptable), "
    "2 usage error"
)
#: For commands that read a state file but resolve nothing.
_EXIT_HELP_STATE: Final = (
    "exit status: 0 ok, 1 failed (state not decryptable), 2 usage error (bad arguments, "
    "unreadable or unrecognized state file)"
)
_EXIT_HELP_FETCH: Final = (
    "exit status: 0 ok, 1 failed (CDN unreachable or refusing, state not decryptable), "
    "2 usage error (bad arguments, output not writable)"
)

_log = logging.getLogger("confidence.cli")


class CliError(ConfidenceError):
    """A failure to report as one line on stderr with an exit code."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


Handler = Callable[[argparse.Namespace], int]


def _guarded(handler: Handler) -> Handler:
    def run(args: argparse.Namespace) -> int:
        try:
            return handler(args)
        except CliError as exc:
            print(f"error: {_redact(str(exc), args)}", file=sys.stderr)
            return exc.code
        except KeyboardInterrupt:
            return 130

    return run


def _redact(text: str, args: argparse.Namespace) -> str:
    for name in ("secret", "encryption_key"):
        value = getattr(args, name, None)
        if value:
            text = text.replace(value, "***")
    return text


# -- loading a state ---------------------------------------------------------------------------


def _key(args: argparse.Namespace) -> bytes | None:
    from confidence._state.crypto import parse_encryption_key

    if args.encryption_key is None:
        return None
    try:
        return parse_encryption_key(args.encryption_key)
    except (TypeError, ValueError) as exc:
        raise CliError(f"--encryption-key: {exc}") from None


def _read_state_file(path: str, key: bytes | None, account: str | None) -> BootstrapState:
    """BootstrapState from a state file (any form `state_file=` accepts)."""
    from confidence._state.file import (
        MissingAccountIdError,
        StateFileError,
        StateNotDecryptableError,
        parse_state_bytes,
    )

    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read state file {path!r}: {exc.strerror}") from None
    try:
        return parse_state_bytes(data, encryption_key=key, account_id=account)
    except StateFileError as exc:
        if account is None and isinstance(exc, MissingAccountIdError):
            # A raw ResolverState has no account; only logs need one, never a resolve.
            return parse_state_bytes(data, encryption_key=key, account_id="(unknown)")
        message = str(exc).replace("account_id=", "--account")
        message = message.replace("encryption_key=", "--encryption-key")
        # A key of the right form that does not decrypt: the command ran and failed (1),
        # as the epilogs say; everything else about the file is a usage error (2).
        code = EXIT_FAILED if isinstance(exc, StateNotDecryptableError) else EXIT_USAGE
        raise CliError(message, code) from None


async def _download(cdn_base_url: str, secret: str, encrypted: bool) -> bytes:
    import aiohttp

    from confidence._state.sync import state_url

    url = state_url(cdn_base_url, secret, encrypted=encrypted)
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as session,
            session.get(url) as resp,
        ):
            if resp.status != 200:
                hint = {
                    403: " (unknown client secret?)",
                    404: " (unknown client secret, or no encrypted state for it?)",
                }.get(resp.status, "")
                raise CliError(f"the CDN answered HTTP {resp.status}{hint}", EXIT_FAILED)
            return await resp.read()
    except (aiohttp.ClientError, OSError, TimeoutError) as exc:
        detail = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        # aiohttp messages can embed the URL, which carries the secret's hash.
        detail = detail.replace(url, "<state url>")
        raise CliError(f"could not download the state: {detail}", EXIT_FAILED) from None


def _fetch_body(args: argparse.Namespace, key: bytes | None) -> bytes:
    import anyio

    if not args.secret:
        raise CliError("--secret must not be empty")
    return anyio.run(_download, args.cdn_base_url, args.secret, key is not None)


def _decode_fetched(body: bytes, key: bytes | None) -> tuple[bytes, ClientResolverState]:
    """(ClientResolverState bytes, decoded) of a downloaded body."""
    from confidence._state.crypto import StateDecryptionError, decrypt_state
    from confidence._wasm.protowire import ProtoDecodeError, decode_client_resolver_state

    plaintext = body
    if key is not None:
        try:
            plaintext = decrypt_state(body, key)
        except StateDecryptionError as exc:
            raise CliError(f"could not decrypt the state: {exc}", EXIT_FAILED) from None
    try:
        decoded = decode_client_resolver_state(plaintext)
    except ProtoDecodeError as exc:
        raise CliError(f"the CDN served an invalid state: {exc}", EXIT_FAILED) from None
    return plaintext, decoded


def _load_state(args: argparse.Namespace) -> BootstrapState:
    boot = _load_state_quietly(args)
    _log.info(
        "state from %s: account %s, %d bytes",
        args.state or "the CDN",
        boot.account_id,
        len(boot.state),
    )
    return boot


def _pool_with(boot: BootstrapState) -> ResolverPool:
    """A one-instance pool holding `boot`'s state, exposure collection off (a look, not a
    use of the flag). -v logs what the resolver loaded."""
    from confidence._wasm.abi import ResolverError

    try:
        from confidence._wasm.pool import ResolverPool

        pool = ResolverPool(1, enable_apply_dedup=False, disable_exposure_collection=True)
    except (OSError, RuntimeError) as exc:
        raise CliError(f"could not load the resolver: {exc}", EXIT_FAILED) from None
    try:
        summary = pool.set_state(boot.state, boot.account_id)
    except ResolverError as exc:
        pool.close()
        raise CliError(f"the resolver rejected the state: {exc}", EXIT_FAILED) from None
    _log.info(
        "resolver loaded %d flag(s), %d segment(s), %d client(s)",
        len(summary.flag_digests),
        summary.segment_count,
        summary.client_count,
    )
    return pool


def _load_state_quietly(args: argparse.Namespace) -> BootstrapState:
    key = _key(args)
    if args.state is not None:
        return _read_state_file(args.state, key, args.account)
    if args.secret is None:
        raise CliError("give a state: --state FILE, or --secret S to fetch it from the CDN")
    from confidence._config import BootstrapState

    _, decoded = _decode_fetched(_fetch_body(args, key), key)
    return BootstrapState(
        decoded.state, args.account or decoded.account, tuple(decoded.log_destinations)
    )


def _resolver_state(state: bytes) -> Any:  # Any: a protobuf message (_proto is untyped)
    from google.protobuf.message import DecodeError

    from confidence._proto.confidence.flags.admin.v1 import resolver_pb2

    try:
        return resolver_pb2.ResolverState.FromString(state)
    except DecodeError as exc:
        raise CliError(f"invalid ResolverState: {exc}") from None


# -- resolve -----------------------------------------------------------------------------------

_KINDS: Final = ("auto", "boolean", "string", "integer", "float", "object")


def _parse_context(text: str) -> bytes:
    try:
        context = json.loads(text)
    except ValueError as exc:
        raise CliError(f"--context is not valid JSON: {exc}") from None
    if not isinstance(context, dict):
        raise CliError('--context must be a JSON object, e.g. \'{"targeting_key": "user-1"}\'')
    return json.dumps(context, separators=(",", ":")).encode("utf-8")


def _parse_default(text: str | None) -> Any:  # Any: a JSON value, or the text
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return text  # a bare word is a string default


def _pick_secret(args: argparse.Namespace, resolver_state: Any) -> str:  # Any: protobuf
    if args.secret:
        return str(args.secret)
    for credential in resolver_state.client_credentials:
        secret = credential.client_secret.secret
        if secret:
            return str(secret)
    raise CliError("the state has no client credential; pass --secret")


def _one_flag_request(
    args: argparse.Namespace, example: str
) -> tuple[FlagLookup, str, ResolveRequest, BootstrapState]:
    """What `resolve` and `explain` both start from: the flag key, the secret, a one-flag
    request that neither applies nor logs, and the loaded state."""
    from confidence._evaluation import parse_flag_key
    from confidence._wasm.abi import ResolveRequest

    context_json = _parse_context(args.context)
    boot = _load_state(args)
    secret = _pick_secret(args, _resolver_state(boot.state))
    lookup = parse_flag_key(args.flag)
    if not lookup.name:
        raise CliError(f"--flag must name a flag, e.g. {example}")
    request = ResolveRequest(
        flags=(lookup.resource,),
        context_json=context_json,
        client_secret=secret,
        apply=False,
        skip_logging=True,
    )
    return lookup, secret, request, boot


def _resolve(args: argparse.Namespace) -> int:
    from dataclasses import replace

    from openfeature.exception import ErrorCode

    from confidence._evaluation import FlagKind, error_details, interpret
    from confidence._wasm.abi import ResolverError

    default = _parse_default(args.default)
    lookup, secret, request, boot = _one_flag_request(args, "my-flag or my-flag.some.property")

    from confidence._wasm.resolve import FlagResolver

    pool = _pool_with(boot)
    try:
        kind = FlagKind[args.type.upper()] if args.type != "auto" else FlagKind.OBJECT
        whole = replace(lookup, path=(), path_text="") if args.type == "auto" else lookup
        try:
            resolved = FlagResolver(pool).resolve(request)
            details = interpret(resolved, whole, kind, default)
        except ResolverError as exc:
            details = error_details(default, ErrorCode.GENERAL, str(exc).replace(secret, "***"))
        except Exception as exc:  # e.g. a flag that needs a materialization store
            details = error_details(default, ErrorCode.GENERAL, f"{type(exc).__name__}: {exc}")
        if args.type == "auto" and details.error_code is None and lookup.path:
            details = _select_path(details, lookup, default)
    finally:
        pool.close()

    code = details.error_code
    out = {
        "flag": args.flag,
        "value": details.value,
        "variant": details.variant,
        "reason": _text(details.reason),
        "error_code": _text(code) if code is not None else None,
        "error_message": details.error_message,
        "flag_metadata": dict(details.flag_metadata),
    }
    print(json.dumps(out, indent=2, ensure_ascii=False))
    return EXIT_FAILED if code is not None else EXIT_OK


def _explain(args: argparse.Namespace) -> int:
    from confidence._wasm.abi import ResolverError
    from confidence.explain import Explanation

    _lookup, secret, request, boot = _one_flag_request(args, "my-flag")
    from confidence._wasm.resolve import FlagResolver

    pool = _pool_with(boot)
    try:
        try:
            explanation = Explanation.from_document(FlagResolver(pool).explain(request))
        except ResolverError as exc:
            raise CliError(
                f"the resolver could not explain the flag: {str(exc).replace(secret, '***')}",
                EXIT_FAILED,
            ) from None
    finally:
        pool.close()
    print(explanation.to_json() if args.json else explanation.render())
    return EXIT_OK


def _select_path(
    details: FlagResolutionDetails[Any], lookup: FlagLookup, default: object
) -> FlagResolutionDetails[Any]:  # Any: a JSON flag value of any type (--type auto)
    """`--type auto` with a path: pick the property out of the whole flag value, any type."""
    from dataclasses import replace

    from confidence._evaluation import PATH_NOT_FOUND, path_not_found, select_path

    if not details.variant:
        return details  # no variant assigned: the default, whatever the path
    value = select_path(details.value, lookup)
    if value is PATH_NOT_FOUND:
        return path_not_found(default, lookup)
    return replace(details, value=default if value is None else value)


def _text(value: object) -> str:
    return str(getattr(value, "value", value))


# -- inspect -----------------------------------------------------------------------------------


def _short(name: str, prefix: str) -> str:
    return name[len(prefix) :] if name.startswith(prefix) else name


def _describe_state(boot: BootstrapState) -> dict[str, Any]:  # Any: a JSON document
    from google.protobuf import json_format

    state = _resolver_state(boot.state)
    full_bitsets = {b.segment for b in state.bitsets if b.full_bitset}
    segments = []
    for segment in state.segments_no_bitsets:
        doc = json_format.MessageToDict(segment)
        criteria = doc.get("targeting", {}).get("criteria", {})
        attributes = sorted(
            {c.get("attribute", {}).get("attributeName", "?") for c in criteria.values()}
        )
        segments.append(
            {
                "name": _short(segment.name, "segments/"),
                "state": doc.get("state", ""),
                "targeting": attributes,
                "allocation": "everyone" if segment.name in full_bitsets else "bitset",
            }
        )
    flags = []
    for flag in state.flags:
        doc = json_format.MessageToDict(flag)
        prefix = f"{flag.name}/variants/"
        rules = []
        for rule in doc.get("rules", []):
            spec = rule.get("assignmentSpec", {})
            buckets = spec.get("bucketCount", 0)
            split = []
            for assignment in spec.get("assignments", []):
                width = sum(
                    r.get("upper", 0) - r.get("lower", 0)
                    for r in assignment.get("bucketRanges", [])
                )
                share = f"{100 * width / buckets:g}%" if buckets else "?"
                if "variant" in assignment:
                    target = _short(assignment["variant"].get("variant", ""), prefix)
                elif "fallthrough" in assignment:
                    target = "(fallthrough)"
                else:
                    target = "(client default)"
                split.append(f"{target} {share}")
            entry: dict[str, Any] = {  # JSON
                "name": _short(rule.get("name", ""), f"{flag.name}/rules/"),
                "segment": _short(rule.get("segment", ""), "segments/"),
                "enabled": bool(rule.get("enabled", False)),
                "assignments": split,
            }
            if rule.get("targetingKeySelector"):
                entry["targeting_key_selector"] = rule["targetingKeySelector"]
            if rule.get("materializationSpec"):
                entry["materialization"] = rule["materializationSpec"]
            if rule.get("environments"):
                entry["environments"] = rule["environments"]
            rules.append(entry)
        flags.append(
            {
                "name": _short(flag.name, "flags/"),
                "state": doc.get("state", ""),
                "variants": [_short(v.name, prefix) for v in flag.variants],
                "clients": [_short(c, "clients/") for c in flag.clients],
                "rules": rules,
            }
        )
    return {
        "account": boot.account_id,
        "log_destinations": list(boot.log_destinations),
        "clients": [_short(c.name, "clients/") for c in state.clients],
        # Credential names only: a state carries client secrets, which never get printed.
        "credentials": len(state.client_credentials),
        "flags": flags,
        "segments": segments,
    }


def _table(rows: list[list[str]], header: list[str]) -> str:
    widths = [max(len(str(c)) for c in column) for column in zip(header, *rows, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)).rstrip()]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
    return "\n".join(lines)


def _inspect(args: argparse.Namespace) -> int:
    info = _describe_state(_load_state(args))
    if args.json:
        print(json.dumps(info, indent=2, ensure_ascii=False))
        return EXIT_OK
    print(
        f"account {info['account']}: {len(info['flags'])} flag(s), "
        f"{len(info['segments'])} segment(s), clients {', '.join(info['clients']) or '-'}"
    )
    print()
    flag_rows = [
        [f["name"], f["state"], ", ".join(f["variants"]) or "-", str(len(f["rules"]))]
        for f in info["flags"]
    ]
    print(_table(flag_rows, ["FLAG", "STATE", "VARIANTS", "RULES"]))
    rule_rows = []
    for f in info["flags"]:
        for r in f["rules"]:
            rule_rows.append(
                [
                    f["name"],
                    r["name"],
                    r["segment"],
                    "yes" if r["enabled"] else "no",
                    ", ".join(r["assignments"]) or "-",
                ]
            )
    if rule_rows:
        print()
        print(_table(rule_rows, ["FLAG", "RULE", "SEGMENT", "ENABLED", "ASSIGNMENTS"]))
    if info["segments"]:
        print()
        segment_rows = [
            [s["name"], s["state"], ", ".join(s["targeting"]) or "-", s["allocation"]]
            for s in info["segments"]
        ]
        print(_table(segment_rows, ["SEGMENT", "STATE", "TARGETING ON", "ALLOCATION"]))
    return EXIT_OK


# -- fetch -------------------------------------------------------------------------------------


def _write_atomically(path: Path, data: bytes) -> None:
    directory = path.parent if str(path.parent) else Path(".")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=directory)
    except OSError as exc:
        raise CliError(f"cannot write {str(path)!r}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        # A state holds client secrets: owner-only, like a key file.
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise CliError(f"cannot write {str(path)!r}: {exc.strerror}") from None


def _fetch(args: argparse.Namespace) -> int:
    key = _key(args)
    if key is None and not args.allow_plaintext:
        raise CliError(
            "--encryption-key is required (or --allow-plaintext for a legacy unencrypted state)"
        )
    body = _fetch_body(args, key)
    _log.info("downloaded %d bytes from %s", len(body), args.cdn_base_url)
    plaintext, decoded = _decode_fetched(body, key)  # validates before anything is written
    data = plaintext if args.decrypt else body
    output = Path(args.output)
    _write_atomically(output, data)
    flags = len(_resolver_state(decoded.state).flags)
    form = "decrypted ClientResolverState" if args.decrypt or key is None else "encrypted state"
    print(
        f"saved the {form} of account {decoded.account} ({flags} flag(s), {len(data)} bytes) "
        f"to {output}"
    )
    return EXIT_OK


# -- argparse ----------------------------------------------------------------------------------


def _state_source(parser: argparse.ArgumentParser, *, cdn: bool) -> None:
    parser.add_argument(
        "--state",
        metavar="FILE",
        help="state file: the encrypted CDN body (with --encryption-key), a ClientResolverState "
        "or a raw ResolverState",
    )
    if cdn:
        parser.add_argument(
            "--secret",
            metavar="S",
            help="client secret: fetch the state from the CDN (without --state), and/or pick "
            "the client to resolve for (default: the state's first credential)",
        )
        parser.add_argument(
            "--cdn-base-url", default=DEFAULT_CDN_BASE_URL, metavar="URL", help="state CDN base URL"
        )
    parser.add_argument(
        "--encryption-key", metavar="K", help="the credential's 64-hex-character encryption key"
    )
    parser.add_argument(
        "--account", metavar="ID", help="account id (needed by nothing but a raw ResolverState)"
    )


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `resolve`, `inspect` and `fetch` on `python -m confidence`'s subparsers."""
    formatter = argparse.RawDescriptionHelpFormatter

    resolve = commands.add_parser(
        "resolve",
        help="resolve one flag for one context and print the result as JSON",
        description="Resolve a flag locally from a state file (--state) or the current CDN "
        "state (--secret), without logging an exposure, and print value, variant, reason "
        "and error as JSON.",
        epilog="example: python -m confidence resolve --state state.pb --flag checkout.enabled "
        '--context \'{"targeting_key": "user-1", "country": "SE"}\'\n' + _EXIT_HELP,
        formatter_class=formatter,
    )
    _state_source(resolve, cdn=True)
    resolve.add_argument(
        "--flag", required=True, metavar="KEY", help="flag key, optionally with a property path"
    )
    resolve.add_argument(
        "--context", default="{}", metavar="JSON", help="evaluation context as a JSON object"
    )
    resolve.add_argument(
        "--type",
        choices=_KINDS,
        default="auto",
        help="flag type, as an OpenFeature get_<type>_value would check it (default: any)",
    )
    resolve.add_argument(
        "--default", metavar="JSON", help="default value returned on errors (default: null)"
    )
    resolve.set_defaults(handler=_guarded(_resolve))

    explain = commands.add_parser(
        "explain",
        help="show why a context gets the variant it gets: the resolver's trace of one flag",
        description="Resolve one flag for one context with the resolver's trace on, and print "
        "every rule in order: its segment, each criterion with the attribute value seen and "
        "why it did not match, the bucketing (unit, salt, bucket) and the assignment that "
        "decided, then the final variant and reason. Nothing is logged or sent. "
        "See docs/debugging.md.",
        epilog="example: python -m confidence explain --state state.pb --flag checkout "
        '--context \'{"targeting_key": "user-1", "country": "SE"}\'\n'
        "exit status: 0 explained (whatever the result), 1 failed (CDN unreachable, state "
        "not decryptable or rejected), 2 usage error",
        formatter_class=formatter,
    )
    _state_source(explain, cdn=True)
    explain.add_argument("--flag", required=True, metavar="KEY", help="flag key")
    explain.add_argument(
        "--context", default="{}", metavar="JSON", help="evaluation context as a JSON object"
    )
    explain.add_argument(
        "--json", action="store_true", help="print the resolver's trace as JSON instead of a tree"
    )
    explain.set_defaults(handler=_guarded(_explain))

    inspect = commands.add_parser(
        "inspect",
        help="list the flags, variants, rules and segments of a state file",
        description="List the flags (variants, rules) and segments of a state file.",
        epilog=_EXIT_HELP_STATE,
        formatter_class=formatter,
    )
    _state_source(inspect, cdn=False)
    inspect.add_argument("--json", action="store_true", help="print JSON instead of tables")
    inspect.set_defaults(handler=_guarded(_require_state(_inspect)))

    fetch = commands.add_parser(
        "fetch",
        help="download the current state for offline use",
        description="Download the current resolver state from the CDN and save it: the "
        "encrypted body as served (default) or, with --decrypt, the decrypted "
        "ClientResolverState. Either works as state_file= or --state. The file is written "
        "with mode 0600: a state contains client secrets.",
        epilog=_EXIT_HELP_FETCH,
        formatter_class=formatter,
    )
    fetch.add_argument("--secret", required=True, metavar="S", help="client secret")
    fetch.add_argument(
        "--encryption-key", metavar="K", help="the credential's 64-hex-character encryption key"
    )
    fetch.add_argument(
        "-o", "--output", required=True, metavar="FILE", help="where to save the state"
    )
    fetch.add_argument("--cdn-base-url", default=DEFAULT_CDN_BASE_URL, metavar="URL")
    fetch.add_argument(
        "--decrypt", action="store_true", help="save the decrypted ClientResolverState"
    )
    fetch.add_argument(
        "--allow-plaintext",
        action="store_true",
        help="without --encryption-key, fetch the legacy unencrypted state object",
    )
    fetch.set_defaults(handler=_guarded(_fetch))

    precompile = commands.add_parser(
        "precompile",
        help="compile resolver.wasm into the compiled-module cache (e.g. in a container build)",
        description="Compile the packaged resolver.wasm with optimizations and store it in the "
        "compiled-module cache, so that providers on this machine start warm. The cache is "
        "$XDG_CACHE_HOME/confidence-openfeature-provider (default ~/.cache/...): build and "
        "run with the same XDG_CACHE_HOME (or HOME). The cache is tied to this wasmtime "
        "version and CPU; a mismatch is detected and recompiled.",
        epilog="exit status: 0 ok, 1 the cache could not be written",
        formatter_class=formatter,
    )
    precompile.add_argument(
        "--cache-dir", metavar="DIR", help="cache directory (default: the one providers use)"
    )
    precompile.set_defaults(handler=_guarded(_precompile))


def _precompile(args: argparse.Namespace) -> int:
    from confidence._wasm.engine import CompiledResolver, Tier, cache_path, default_cache_dir

    directory = Path(args.cache_dir) if args.cache_dir else default_cache_dir()
    _log.info("compiling resolver.wasm into %s", directory)
    compiled = CompiledResolver.load(cache_dir=directory)
    path = cache_path(directory, compiled.digest, Tier.OPTIMIZED)
    if not path.is_file():
        raise CliError(f"could not write the module cache in {directory}", EXIT_FAILED)
    print(path)
    return EXIT_OK


def _require_state(handler: Handler) -> Handler:
    def run(args: argparse.Namespace) -> int:
        if args.state is None:
            raise CliError("--state FILE is required")
        return handler(args)

    return run
