"""The resolver ABI (resolver/README.md) on top of one wasm instance.

Turns typed Python requests into the protobuf messages of `proto/confidence/wasm/v1/abi.proto`
and back. The hot call, `cr_resolve`, is tuned (bench/README.md):

- its `ResolveCall` is encoded by hand: the fields that repeat (flags, secret, apply, mode)
  are cached as one pre-encoded prefix, and only the context and the clock are appended;
- its answer is JSON (ABI 2), decoded with one `json.loads`: several times cheaper than a
  protobuf `ResolveResult` plus a `json.loads` per value, and the flag values arrive as
  fresh dicts.

The other calls' small messages (`Configure`, `SetState`, `FlushLogs` and their results) are
encoded and decoded by hand too, so that neither the protobuf runtime nor our generated code
(~15 ms of imports) is on the way to the first READY; nor is wasmtime, which only the compile
(`_wasm.engine`) imports.

An ERROR response carries the guest's error kind as one byte after the status (ABI 3); it
becomes `ResolverError.kind` here, once. Callers decide on the kind, never on the message.
"""

from __future__ import annotations

import enum
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, NamedTuple, NoReturn

from confidence._wasm.engine_types import Export, WasmTrap
from confidence._wasm.protowire import encode_varint as _varint
from confidence.errors import ConfidenceError

if TYPE_CHECKING:
    from confidence._wasm.engine import CompiledResolver, WasmInstance

__all__ = [
    "MaterializationMode",
    "MaterializationRecord",
    "ResolveDoc",
    "ResolveReason",
    "ResolveRequest",
    "Resolved",
    "ResolvedFlag",
    "ResolverError",
    "ResolverErrorKind",
    "ResolverInstance",
    "StateSummary",
    "Suspended",
    "WasmTrap",
]

_OK: Final = 0
_ERROR: Final = 1

#: The ABI this module speaks (resolver/README.md).
ABI_VERSION: Final = 3


class ResolverErrorKind(enum.Enum):
    """What failed, as the resolver reports it. Decide on this, never on the message.

    The guest's kinds mirror `ErrorKind` in resolver/src/error.rs; `_KIND_BY_CODE` holds
    their ABI codes. The last two are raised by the host, never sent by the guest.
    """

    #: A malformed ABI message (a host bug, not the caller's input).
    INVALID_REQUEST = "invalid_request"
    #: A resolve before any state was loaded.
    NO_STATE = "no_state"
    #: The state was rejected; the previous one keeps serving.
    INVALID_STATE = "invalid_state"
    #: The client secret is not in the state.
    UNKNOWN_CLIENT_SECRET = "unknown_client_secret"
    #: The evaluation context is not a JSON object the resolver reads (e.g. nested too deep).
    INVALID_CONTEXT = "invalid_context"
    #: More flags in one request than the resolver answers at once.
    TOO_MANY_FLAGS = "too_many_flags"
    #: A flag's definition in the state cannot be resolved (e.g. an unknown variant).
    INVALID_FLAG = "invalid_flag"
    #: The resolve would write one materialization record twice.
    DUPLICATE_MATERIALIZATION_WRITE = "duplicate_materialization_write"
    #: Host: resolver.wasm speaks another ABI version.
    INCOMPATIBLE_RESOLVER = "incompatible_resolver"
    #: Host: resolver.wasm could not be compiled.
    RESOLVER_UNAVAILABLE = "resolver_unavailable"


#: ABI code (the byte after the ERROR status) -> kind; resolver/src/error.rs `ErrorKind`.
_KIND_BY_CODE: Final[Mapping[int, ResolverErrorKind]] = {
    1: ResolverErrorKind.INVALID_REQUEST,
    2: ResolverErrorKind.NO_STATE,
    3: ResolverErrorKind.INVALID_STATE,
    4: ResolverErrorKind.UNKNOWN_CLIENT_SECRET,
    5: ResolverErrorKind.INVALID_CONTEXT,
    6: ResolverErrorKind.TOO_MANY_FLAGS,
    7: ResolverErrorKind.INVALID_FLAG,
    8: ResolverErrorKind.DUPLICATE_MATERIALIZATION_WRITE,
}


class ResolverError(ConfidenceError):
    """An error the resolver reported (bad state, unknown client secret, ...).

    `kind` says what failed; the message is for people and may change wording. The
    instance stays healthy. Messages never contain a client secret.
    """

    def __init__(self, kind: ResolverErrorKind, message: str) -> None:
        super().__init__(message)
        self.kind: Final = kind

    def __reduce__(self) -> tuple[Any, ...]:  # picklable with its kind
        return (type(self), (self.kind, str(self)))


class MaterializationMode(enum.IntEnum):
    # abi.proto's MaterializationMode numbers (tests check them against the generated code).
    UNSUPPORTED = 0
    DISCOVERY = 1
    COMPLETE = 2


class ResolveReason(enum.IntEnum):
    UNSPECIFIED = 0
    MATCH = 1
    NO_SEGMENT_MATCH = 2
    NO_TREATMENT_MATCH = 3
    FLAG_ARCHIVED = 4
    TARGETING_KEY_ERROR = 5
    ERROR = 6
    UNRECOGNIZED_TARGETING_RULE = 7
    MATERIALIZATION_NOT_SUPPORTED = 8
    TYPE_MISMATCH = 9
    FLAG_NOT_FOUND = 10


@dataclass(frozen=True, slots=True)
class MaterializationRecord:
    """(unit, materialization, rule) → variant. rule == "" is an inclusion record."""

    unit: str
    materialization: str
    rule: str = ""
    variant: str = ""


@dataclass(frozen=True, slots=True)
class ResolveRequest:
    flags: tuple[str, ...]  # "flags/<name>"; empty = every flag of the client
    context_json: bytes  # the evaluation context as a JSON object
    client_secret: str
    apply: bool
    materialization_mode: MaterializationMode = MaterializationMode.UNSUPPORTED
    materializations: tuple[MaterializationRecord, ...] = ()
    skip_logging: bool = False

    def __repr__(self) -> str:  # never show the secret
        return (
            f"ResolveRequest(flags={self.flags!r}, apply={self.apply}, "
            f"materialization_mode={self.materialization_mode.name})"
        )


class ResolvedFlag(NamedTuple):
    # A NamedTuple, not a dataclass: built once per evaluation, and a tuple is ~3x cheaper
    # to construct than a frozen dataclass.
    flag: str
    variant: str
    value: dict[str, Any] | None
    reason: int
    should_apply: bool
    assignment_origin: str
    assignment_id: str


class Resolved(NamedTuple):
    flags: tuple[ResolvedFlag, ...]
    resolve_id: str
    writes: tuple[MaterializationRecord, ...]


@dataclass(frozen=True, slots=True)
class Suspended:
    reads: tuple[MaterializationRecord, ...]


@dataclass(frozen=True, slots=True)
class StateSummary:
    flag_digests: Mapping[str, int]
    segment_count: int
    client_count: int


@dataclass(frozen=True, slots=True)
class FlushedLogs:
    write_flag_logs_request: bytes  # serialized WriteFlagLogsRequest (b"" when nothing)
    more_pending: bool
    flag_assigned_count: int
    # Exposures the instance dropped since the previous flush because its pending queue was
    # full (FlagAssigned events, applied flags): the host reports them as lost.
    dropped_flag_assigned: int = 0
    dropped_applied_flags: int = 0


#: confidence.flags.resolver.v1.SdkId.SDK_ID_PYTHON_LOCAL_PROVIDER
_SDK_ID_PYTHON_LOCAL_PROVIDER: Final = 23


def now_millis() -> int:
    return time.time_ns() // 1_000_000


def _field_bytes(number: int, data: bytes) -> bytes:
    return _varint(number << 3 | 2) + _varint(len(data)) + data


_CONTEXT_TAG: Final = b"\x12"  # ResolveCall.context_json (2, length-delimited)
_NOW_TAG: Final = b"\x28"  # ResolveCall.now_unix_millis (5, varint)
#: The varint of every length below 4 KiB (contexts are rarely longer; a longer one pays a
#: _varint call); a bigger table would cost start-up time for nothing.
_SMALL_LENGTHS: Final = tuple(
    bytes((n,)) if n < 0x80 else bytes(((n & 0x7F) | 0x80, n >> 7)) for n in range(4096)
)
#: The C JSON scanner (accepts NaN/Infinity like json.loads; clears its memo per call).
_scan_json: Final = json.JSONDecoder().scan_once  # type: ignore[attr-defined]
_time_ns: Final = time.time_ns
_RESOLVE: Final = Export.RESOLVE


def _prefix(request: ResolveRequest) -> bytes:
    """The request's fields except context and clock, encoded once per distinct request shape.

    Protobuf fields may come in any order and the guest decodes with prost, so the
    hand-encoded message is equivalent to `ResolveCall(...).SerializeToString()`.
    """
    out = bytearray()
    for flag in request.flags:
        out += _field_bytes(1, flag.encode("utf-8"))
    if request.client_secret:
        out += _field_bytes(3, request.client_secret.encode("utf-8"))
    if request.apply:
        out += b"\x20\x01"
    if request.materialization_mode:
        out += b"\x30" + _varint(int(request.materialization_mode))
    if request.skip_logging:
        out += b"\x40\x01"
    for r in request.materializations:
        # ResolveCall.materializations (7): MaterializationRecord{unit, materialization,
        # rule, variant} = fields 1-4, empty strings omitted as protobuf does.
        record = b"".join(
            _field_bytes(number, text.encode("utf-8"))
            for number, text in ((1, r.unit), (2, r.materialization), (3, r.rule), (4, r.variant))
            if text
        )
        out += _field_bytes(7, record)
    return bytes(out)


def call_prefix(request: ResolveRequest) -> bytes:
    """What `resolve_doc` takes as `prefix`: `request` encoded but for context and clock."""
    return _prefix(request)


def encode_resolve_call(request: ResolveRequest, now_ms: int) -> bytes:
    """`request` as a serialized `ResolveCall` (uncached; the instance caches prefixes)."""
    ctx = request.context_json
    return b"".join(
        (_prefix(request), _CONTEXT_TAG, _varint(len(ctx)), ctx, _NOW_TAG, _varint(now_ms))
    )


#: The decoded JSON answer of `cr_resolve` (see `ResolverInstance.resolve_doc`).
ResolveDoc = dict[str, Any]


def answer_from_doc(doc: ResolveDoc) -> Resolved | Suspended:
    """A `resolve_doc` answer as `Resolved` (flags, resolve id, writes) or `Suspended`.

    A flag row is `[flag, variant, value, reason, should_apply, rule, assignment_id]`: the
    fields of `ResolvedFlag` in order (so a row and a `ResolvedFlag` index alike).
    """
    flags = doc.get("f")
    if flags is None:
        return Suspended(reads=tuple([MaterializationRecord(*r) for r in doc["s"]]))
    writes = doc["w"]
    return Resolved(
        tuple([ResolvedFlag(f[0], f[1], f[2], f[3], f[4] == 1, f[5], f[6]) for f in flags]),
        doc["r"],
        tuple([MaterializationRecord(*w) for w in writes]) if writes else (),
    )


def _read_varint(data: bytes, pos: int) -> tuple[int, int]:
    result = 0
    shift = 0
    while True:
        b = data[pos]  # IndexError: truncated
        pos += 1
        result |= (b & 0x7F) << shift
        if b < 0x80:
            return result, pos
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 10 bytes")


def _fields(data: bytes) -> dict[int, int | bytes]:
    """A flat message's fields (the last occurrence wins, as in protobuf); unknown skipped."""
    out: dict[int, int | bytes] = {}
    pos = 0
    end = len(data)
    while pos < end:
        tag, pos = _read_varint(data, pos)
        wire = tag & 7
        value: int | bytes
        if wire == 0:
            value, pos = _read_varint(data, pos)
        elif wire == 2:
            n, pos = _read_varint(data, pos)
            if pos + n > end:
                raise ValueError("truncated length-delimited field")
            value = data[pos : pos + n]
            pos += n
        elif wire == 1 or wire == 5:
            size = 8 if wire == 1 else 4
            if pos + size > end:
                raise ValueError("truncated fixed-width field")
            value = int.from_bytes(data[pos : pos + size], "little")
            pos += size
        else:
            raise ValueError(f"unsupported wire type {wire}")
        out[tag >> 3] = value
    return out


def _decode(export: str, data: bytes) -> dict[int, int | bytes]:
    try:
        return _fields(data)
    except (IndexError, ValueError) as exc:
        raise WasmTrap(f"{export} returned a malformed response: {exc}") from None


def _text(value: int | bytes) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else ""


def _int(value: int | bytes) -> int:
    return value if isinstance(value, int) else 0


def _decode_set_state_result(data: bytes) -> tuple[dict[str, int], int, int]:
    """SetStateResult -> ({flag name: digest}, segment_count, client_count).

    One entry per flag, so a 2,000-flag state has 2,000: the usual layout of an entry
    (name, then digest) is read inline, anything else through `_fields`.
    """
    digests: dict[str, int] = {}
    segments = clients = 0
    pos = 0
    end = len(data)
    read = _read_varint
    while pos < end:
        # The usual entry, without a call: 0A n 0A k <name> 11 <8 bytes>, both lengths one
        # byte (a name up to 116 bytes). ~4x faster than the general loop below.
        if data[pos] == 0x0A and pos + 2 < end:
            n = data[pos + 1]
            k = data[pos + 3] if data[pos + 2] == 0x0A else 0x80
            if n == k + 11 and pos + 2 + n <= end and data[pos + 4 + k] == 0x11:
                at = pos + 4
                pos = at + k + 9
                digests[data[at : at + k].decode("utf-8")] = int.from_bytes(
                    data[at + k + 1 : pos], "little"
                )
                continue
        tag, pos = read(data, pos)
        if tag == 0x0A:  # flags (1, length-delimited): a FlagDigest
            n, pos = read(data, pos)
            stop = pos + n
            if stop > end:
                raise ValueError("truncated FlagDigest")
            if data[pos] == 0x0A:
                k, at = read(data, pos + 1)
                if at + k + 9 == stop and data[at + k] == 0x11:
                    digests[data[at : at + k].decode("utf-8")] = int.from_bytes(
                        data[at + k + 1 : stop], "little"
                    )
                    pos = stop
                    continue
            entry = _fields(data[pos:stop])
            digest = entry.get(2, 0)
            digests[_text(entry.get(1, b""))] = digest if isinstance(digest, int) else 0
            pos = stop
        else:
            wire = tag & 7
            if wire == 0:
                value, pos = read(data, pos)
                if tag >> 3 == 2:
                    segments = value
                elif tag >> 3 == 3:
                    clients = value
            elif wire == 2:
                n, pos = read(data, pos)
                pos += n
            elif wire == 1 or wire == 5:
                pos += 8 if wire == 1 else 4
            else:
                raise ValueError(f"unsupported wire type {wire}")
            if pos > end:
                raise ValueError("truncated field")
    return digests, segments, clients


class ResolverInstance:
    """One wasm instance speaking the ABI. Not thread-safe; the pool serializes use."""

    def __init__(
        self,
        compiled: CompiledResolver,
        *,
        sdk_version: str,
        enable_apply_dedup: bool = True,
        disable_exposure_collection: bool = False,
        memory_limit: int | None = None,
        max_pending_exposure_bytes: int = 0,
    ) -> None:
        self._wasm: WasmInstance = (
            compiled.instantiate()
            if memory_limit is None
            else compiled.instantiate(memory_limit=memory_limit)
        )
        if self._wasm.abi_version != ABI_VERSION:
            raise ResolverError(
                ResolverErrorKind.INCOMPATIBLE_RESOLVER,
                f"resolver.wasm speaks ABI {self._wasm.abi_version}, expected {ABI_VERSION}",
            )
        self._prefixes: dict[tuple[Any, ...], bytes] = {}
        self._resolve_call = self._wasm.bind(Export.RESOLVE)
        self._now_ms = -1
        self._now_field = b""
        # Configure{rng_seed=1, sdk=2 (Sdk{id=1, version=3}), enable_apply_dedup=3,
        # disable_exposure_collection=4, max_pending_assigned_bytes=5}; defaults omitted.
        sdk = b"\x08" + _varint(_SDK_ID_PYTHON_LOCAL_PROVIDER)
        if sdk_version:
            sdk += _field_bytes(3, sdk_version.encode("utf-8"))
        configure = b"\x08" + _varint(int.from_bytes(os.urandom(8), "little"))
        configure += _field_bytes(2, sdk)
        if enable_apply_dedup:
            configure += b"\x18\x01"
        if disable_exposure_collection:
            configure += b"\x20\x01"
        if max_pending_exposure_bytes:  # 0 = the guest's default
            configure += b"\x28" + _varint(max_pending_exposure_bytes)
        result = _decode(Export.CONFIGURE, self._call(Export.CONFIGURE, configure))
        #: ConfigureResult.resolver_version (1)
        self.resolver_version: str = _text(result.get(1, b""))
        self.state_generation = 0  # which pool state this instance holds

    @staticmethod
    def _call_failed(export: str, response: bytes) -> NoReturn:
        """Raise what `_call` raises for a response whose status is not OK.

        ERROR is followed by the kind's code and the message. A response that breaks the
        format (no code, an unknown code or status) means the guest is not the one this
        module speaks to: a WasmTrap, so the pool retires the instance.
        """
        if not response:
            raise WasmTrap(f"{export} returned an empty response")
        if response[0] != _ERROR:
            raise WasmTrap(f"{export} returned unknown status {response[0]}")
        if len(response) < 2:
            raise WasmTrap(f"{export} returned an ERROR without an error kind")
        kind = _KIND_BY_CODE.get(response[1])
        if kind is None:
            raise WasmTrap(f"{export} returned unknown error kind {response[1]}")
        raise ResolverError(kind, response[2:].decode("utf-8", "replace"))

    def _call(self, export: str, payload: bytes) -> bytes:
        response = self._wasm.call(export, payload)
        if not response or response[0] != _OK:
            self._call_failed(export, response)
        return response[1:]  # (one copy of a few hundred bytes: cheaper than a view)

    def set_state(self, state: bytes, account_id: str) -> StateSummary:
        # SetState{state=1, account_id=2} -> SetStateResult{flags=1 (FlagDigest{name=1,
        # digest=2 fixed64}), segment_count=2, client_count=3}.
        payload = _field_bytes(1, state) if state else b""
        if account_id:
            payload += _field_bytes(2, account_id.encode("utf-8"))
        response = self._call(Export.SET_STATE, payload)
        try:
            digests, segments, clients = _decode_set_state_result(response)
        except (IndexError, ValueError) as exc:
            raise WasmTrap(f"{Export.SET_STATE} returned a malformed response: {exc}") from None
        return StateSummary(flag_digests=digests, segment_count=segments, client_count=clients)

    def resolve(self, request: ResolveRequest, now_ms: int | None = None) -> Resolved | Suspended:
        # The prefix cache is keyed on the request minus its context: a provider asks for
        # a handful of (flag, apply) shapes, so it stays tiny; materialized requests
        # (records vary per unit) bypass it.
        if request.materializations:
            prefix = _prefix(request)
        else:
            key = (
                request.flags,
                request.client_secret,
                request.apply,
                request.materialization_mode,
                request.skip_logging,
            )
            prefix = self._prefixes.get(key)  # type: ignore[assignment]
            if prefix is None:
                prefix = self._cache_prefix(key, request)
        return self._resolve_prefixed(prefix, request.context_json, now_ms)

    def resolve_flag(
        self,
        flag: str,
        client_secret: str,
        apply: bool,
        mode: MaterializationMode,
        context_json: bytes,
        now_ms: int | None = None,
    ) -> Resolved | Suspended:
        """`resolve(ResolveRequest((flag,), context_json, client_secret, apply, mode))`,
        without building the request: the provider's one-flag hot path."""
        prefix = self._prefixes.get((flag, client_secret, apply, mode))
        if prefix is None:
            prefix = self._cache_prefix(
                (flag, client_secret, apply, mode),
                ResolveRequest(
                    flags=(flag,),
                    context_json=b"",
                    client_secret=client_secret,
                    apply=apply,
                    materialization_mode=mode,
                ),
            )
        return self._resolve_prefixed(prefix, context_json, now_ms)

    def _cache_prefix(self, key: tuple[Any, ...], request: ResolveRequest) -> bytes:
        if len(self._prefixes) >= 256:
            self._prefixes.clear()
        prefix = self._prefixes[key] = _prefix(request)
        return prefix

    def _resolve_prefixed(
        self, prefix: bytes, ctx: bytes, now_ms: int | None
    ) -> Resolved | Suspended:
        return answer_from_doc(self.resolve_doc(prefix, ctx, now_ms))

    def resolve_doc(self, prefix: bytes, ctx: bytes, now_ms: int | None = None) -> ResolveDoc:
        """The guest's JSON answer (ABI 2) to the call `prefix` + context + clock, as decoded
        by `json`: {"r": resolve id, "f": [row, ...], "w": [...]} or {"s": [...]} (see
        `answer_from_doc`). The provider's hot path reads it without building `Resolved`."""
        if now_ms is None:
            now_ms = _time_ns() // 1_000_000
        if now_ms != self._now_ms:
            self._now_ms = now_ms
            self._now_field = _NOW_TAG + _varint(now_ms)
        n = len(ctx)
        # _call(), inlined; the C scanner straight away (json.loads would first sniff the
        # encoding), starting after the status byte rather than slicing it off.
        response = self._resolve_call(
            b"".join(
                (
                    prefix,
                    _CONTEXT_TAG,
                    _SMALL_LENGTHS[n] if n < 4096 else _varint(n),
                    ctx,
                    self._now_field,
                )
            )
        )
        if not response or response[0] != _OK:
            self._call_failed(_RESOLVE, response)
        doc: ResolveDoc = _scan_json(response.decode("utf-8"), 1)[0]
        return doc

    def explain(self, request: ResolveRequest) -> dict[str, Any] | Suspended:
        """The resolver's trace of `request`'s one flag (`cr_explain`; confidence/explain.py
        parses it). Never logged, whatever `request.apply` says; Suspended in discovery mode
        when materialization reads are needed, as `resolve`."""
        doc = json.loads(self._call(Export.EXPLAIN, encode_resolve_call(request, now_millis())))
        if "s" in doc:
            return Suspended(reads=tuple([MaterializationRecord(*r) for r in doc["s"]]))
        return dict(doc)

    def flush_logs(self, now_ms: int | None = None, max_assigned_bytes: int = 0) -> FlushedLogs:
        # FlushLogs{now_unix_millis=1 (int64), max_assigned_bytes=2} -> FlushLogsResult{
        # write_flag_logs_request=1, more_pending=2, flag_assigned_count=3,
        # dropped_flag_assigned=4, dropped_applied_flags=5}.
        now = now_millis() if now_ms is None else now_ms
        payload = (b"\x08" + _varint(now)) if now else b""
        if max_assigned_bytes:
            payload += b"\x10" + _varint(max_assigned_bytes)
        result = _decode(Export.FLUSH_LOGS, self._call(Export.FLUSH_LOGS, payload))
        batch = result.get(1, b"")
        return FlushedLogs(
            write_flag_logs_request=bytes(batch) if isinstance(batch, bytes) else b"",
            more_pending=bool(_int(result.get(2, 0))),
            flag_assigned_count=_int(result.get(3, 0)),
            dropped_flag_assigned=_int(result.get(4, 0)),
            dropped_applied_flags=_int(result.get(5, 0)),
        )

    def memory_size(self) -> int:
        return self._wasm.memory_size()
