"""``ConfidenceEmulator``: the Confidence endpoints a local-resolve provider talks to, on loopback.

One aiohttp server plays all the roles (protocol §1):

* the state CDN: ``GET /<sha256hex(secret)>.enc`` (AES-256-GCM, §2.3) and
  ``GET /<sha256hex(secret)>`` (plain ``ClientResolverState``), with strong ETags and 304s;
* flag-log ingest: ``POST /v1/clientFlagLogs:write`` (Edge REST) and ``POST /v1/flagLogs:ingest``
  (Cloudflare), decoded and kept for assertions;
* the remote materialization store: ``POST /v1/materialization:readMaterializedOperations`` and
  ``:writeMaterializedOperations`` (§5.2), backed by a dict;
* event tracking: ``POST /v1/events:publish`` (§4.5, proto-JSON ``PublishEventsRequest``), decoded
  and kept; ``reject_event_definitions()`` makes it answer per-event ``errors[]``;
* explain (ours, for debugging tests): ``POST /v1/explain`` with ``{"flag": "x", "context":
  {...}}`` and the ``ClientSecret`` header answers the resolver's trace of that flag over the
  served state (docs/debugging.md); ``emulator.explain(flag, context)`` is the same in Python.

Every request is recorded with its raw headers, and faults can be injected per route (delay,
status, garbage, truncation, dropped connection, hang) to exercise the client's failure paths
against real sockets rather than mocks.

Thread-safety: the sync helpers (``set_state``, ``inject``, the recorded-data accessors) take a
``threading.Lock`` and never await while holding it, so tests may call them from another thread
while the server runs under ``run_in_thread()``.

Usage::

    async with ConfidenceEmulator(client_secret="s3cret") as emu:
        emu.set_state(resolver_state_bytes, account_id="acct")
        ...  # point the provider at emu.cdn_base_url / emu.api_base_url

    with ConfidenceEmulator().run_in_thread() as emu:   # for sync tests
        ...

CLI: ``python -m confidence.testing.emulator --state PATH --secret S [--port N]
[--encryption-key HEX] [--account ID] [--quiet]``: prints one access-log line per request
(method, path, status, bytes) and a per-route summary at exit.
"""

from __future__ import annotations

import argparse
import contextlib
import enum
import hashlib
import json
import os
import signal
import socket
import ssl
import struct
import sys
import threading
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, TypeAlias

import anyio
import anyio.from_thread
from aiohttp import web
from google.protobuf import json_format
from google.protobuf.message import DecodeError

from confidence._proto.confidence.events.v1 import events_pb2
from confidence._proto.confidence.flags.resolver.v1 import api_pb2
from confidence._state.crypto import (
    NONCE_SIZE,
    TAG_SIZE,
    StateDecryptionError,
    decrypt_state,
    encrypt_state,
    parse_encryption_key,
)
from confidence._wasm.protowire import (
    ProtoDecodeError,
    decode_client_resolver_state,
    encode_client_resolver_state,
    iter_fields,
)

__all__ = [
    "DEFAULT_ACCOUNT_ID",
    "DEFAULT_CLIENT_SECRET",
    "ConfidenceEmulator",
    "Delay",
    "DropConnection",
    "Fault",
    "GarbageBody",
    "Hang",
    "RecordedRequest",
    "ResetConnection",
    "Route",
    "SlowBody",
    "Status",
    "TruncatedBody",
    "main",
]

DEFAULT_CLIENT_SECRET: Final = "emulator-client-secret"
DEFAULT_ACCOUNT_ID: Final = "emulator-account"

FLAG_LOGS_PATH: Final = "/v1/clientFlagLogs:write"
CLOUDFLARE_INGEST_PATH: Final = "/v1/flagLogs:ingest"
MATERIALIZATION_READ_PATH: Final = "/v1/materialization:readMaterializedOperations"
MATERIALIZATION_WRITE_PATH: Final = "/v1/materialization:writeMaterializedOperations"
EVENTS_PUBLISH_PATH: Final = "/v1/events:publish"
EXPLAIN_PATH: Final = "/v1/explain"

_PROTOBUF_TYPES = frozenset({"application/x-protobuf", "application/protobuf"})
# Flag-log batches reach ~4 MiB plus resolve info (§3.1); aiohttp's default cap is 1 MiB.
_MAX_REQUEST_BYTES = 64 * 1024 * 1024


class Route(str, enum.Enum):
    """Routes that faults can be injected into and requests are recorded under."""

    STATE = "state"
    FLAG_LOGS = "flag_logs"
    INGEST = "ingest"
    MATERIALIZATION_READ = "materialization_read"
    MATERIALIZATION_WRITE = "materialization_write"
    EVENTS = "events"
    EXPLAIN = "explain"


# -- faults -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delay:
    """Wait ``seconds`` and then answer normally."""

    seconds: float


@dataclass(frozen=True)
class Status:
    """Answer with this HTTP status (and optional body/headers, e.g. ``Retry-After``)."""

    status: int
    body: bytes = b""
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class GarbageBody:
    """Answer 200 with bytes that are neither valid ciphertext nor a valid protobuf (a leading
    0x00 is tag 0, which every protobuf parser rejects)."""

    body: bytes = b"\x00\xff this is neither a protobuf nor AES-GCM ciphertext \xff\x00"


@dataclass(frozen=True)
class TruncatedBody:
    """Send the real response headers and a Content-Length for the full body, then only
    ``fraction`` of the body, then close: the client sees a payload error. POST requests are
    processed first (a response lost in transit, so a retry duplicates)."""

    fraction: float = 0.5


@dataclass(frozen=True)
class DropConnection:
    """Close the connection without any response.

    Note: aiohttp clients retry an idempotent request (GET) once on a fresh connection after
    "Server disconnected", so inject this with ``times>=2`` (or until cleared) to make a GET fail.
    """


@dataclass(frozen=True)
class Hang:
    """Accept the request and never answer (until the emulator shuts down)."""


@dataclass(frozen=True)
class ResetConnection:
    """Abort the connection with a TCP RST (``SO_LINGER`` 0) instead of a response: the client
    sees "connection reset by peer", not a clean close. Like ``DropConnection``, inject it
    with ``times>=2`` to make a GET fail (aiohttp retries an idempotent request once)."""


@dataclass(frozen=True)
class SlowBody:
    """Answer normally but drip the body, ``chunk`` bytes every ``interval`` seconds. Every
    read gets bytes well within any socket read timeout: only a deadline on the whole request
    stops a client from waiting for the full body."""

    chunk: int = 16
    interval: float = 0.05


Fault: TypeAlias = (
    Delay
    | Status
    | GarbageBody
    | TruncatedBody
    | DropConnection
    | ResetConnection
    | SlowBody
    | Hang
)


@dataclass
class _FaultEntry:
    fault: Fault
    remaining: int | None  # None = until cleared


# -- records ------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    route: Route
    method: str
    path: str
    headers: tuple[tuple[str, str], ...]
    """Raw header lines as received, in order (names in their original case)."""
    body: bytes

    def header(self, name: str) -> str | None:
        lowered = name.lower()
        for key, value in self.headers:
            if key.lower() == lowered:
                return value
        return None


@dataclass(frozen=True)
class _ServedState:
    client_state: bytes  # serialized ClientResolverState, served on the plain URL
    plain_etag: str
    encrypted: bytes  # the same, AES-GCM encrypted once per set_state, served on .enc
    encrypted_etag: str


def _strong_etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def _etag_matches(if_none_match: str | None, etag: str) -> bool:
    # If-None-Match uses the weak comparison (RFC 9110 §13.1.2): ignore a W/ prefix.
    if not if_none_match:
        return False
    for candidate in if_none_match.split(","):
        candidate = candidate.strip()
        if candidate == "*":
            return True
        if candidate.startswith("W/"):
            candidate = candidate[2:]
        if candidate == etag:
            return True
    return False


def _reset(request: web.BaseRequest) -> None:
    transport = request.transport
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()


def _drop(request: web.BaseRequest) -> None:
    transport = request.transport
    if transport is not None:
        transport.close()


# -- the emulator -------------------------------------------------------------------------


class ConfidenceEmulator:
    """A loopback stand-in for the Confidence CDN, flag-log ingest and materialization API."""

    def __init__(
        self,
        *,
        client_secret: str = DEFAULT_CLIENT_SECRET,
        encryption_key: bytes | str | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        state: bytes | None = None,
        account_id: str = DEFAULT_ACCOUNT_ID,
        log_destinations: Sequence[int] = (),
        ssl_context: ssl.SSLContext | None = None,
        access_log: Callable[[str], None] | None = None,
    ) -> None:
        """``ssl_context``: serve HTTPS with it (e.g. a self-signed certificate, to check
        that clients verify certificates); the base URLs then start with ``https://``.
        ``access_log``: called with one line per request (method, path, status, bytes)."""
        if isinstance(encryption_key, str):
            encryption_key = parse_encryption_key(encryption_key)
        elif encryption_key is None:
            encryption_key = os.urandom(32)
        elif len(encryption_key) != 32:
            raise ValueError("encryption_key must be 32 bytes or 64 hex characters")
        self.client_secret: Final = client_secret
        self.encryption_key: Final[bytes] = encryption_key
        self.secret_hash: Final = hashlib.sha256(client_secret.encode("utf-8")).hexdigest()
        self._host = host
        self._port = port
        self._ssl_context = ssl_context

        self._lock = threading.Lock()
        self._served: _ServedState | None = None
        self._faults: dict[Route, deque[_FaultEntry]] = {route: deque() for route in Route}
        self._requests: list[RecordedRequest] = []
        self._flag_logs: list[Any] = []  # api_pb2.WriteFlagLogsRequest
        self._ingested: list[Any] = []  # api_pb2.IngestFlagLogsRequest
        self._materialization_reads: list[Any] = []
        self._materialization_writes: list[Any] = []
        self._variants: dict[tuple[str, str, str], str] = {}
        self._inclusions: set[tuple[str, str]] = set()
        self._event_requests: list[Any] = []  # events_pb2.PublishEventsRequest
        self._rejected_event_definitions: set[str] = set()
        self._access_log = access_log
        # The resolver for /v1/explain, built on first use for the served state.
        self._explainer: tuple[_ServedState, Any] | None = None

        self._runner: web.AppRunner | None = None
        self._shutdown: anyio.Event | None = None
        self._bound_port: int | None = None

        if state is not None:
            self.set_state(state, account_id=account_id, log_destinations=log_destinations)

    # -- lifecycle --------------------------------------------------------------------------

    async def __aenter__(self) -> ConfidenceEmulator:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self) -> None:
        if self._runner is not None:
            raise RuntimeError("emulator already started")
        self._shutdown = anyio.Event()
        app = web.Application(client_max_size=_MAX_REQUEST_BYTES)
        app.router.add_get("/{name}", self._handle_state)
        app.router.add_post(FLAG_LOGS_PATH, self._handle_flag_logs)
        app.router.add_post(CLOUDFLARE_INGEST_PATH, self._handle_ingest)
        app.router.add_post(MATERIALIZATION_READ_PATH, self._handle_materialization_read)
        app.router.add_post(MATERIALIZATION_WRITE_PATH, self._handle_materialization_write)
        app.router.add_post(EVENTS_PUBLISH_PATH, self._handle_events)
        app.router.add_post(EXPLAIN_PATH, self._handle_explain)
        # A short shutdown timeout: handlers still delayed when a test ends are cancelled
        # instead of holding teardown for aiohttp's default 60 s.
        runner = web.AppRunner(app, access_log=None, handle_signals=False, shutdown_timeout=0.5)
        await runner.setup()
        try:
            site = web.TCPSite(runner, self._host, self._port, ssl_context=self._ssl_context)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._bound_port = runner.addresses[0][1]

    async def stop(self) -> None:
        runner, self._runner = self._runner, None
        if runner is None:
            return
        if self._shutdown is not None:
            self._shutdown.set()  # releases Hang/Delay handlers so cleanup is quick
        await runner.cleanup()
        explainer, self._explainer = self._explainer, None
        if explainer is not None:
            explainer[1].close()

    @contextlib.contextmanager
    def run_in_thread(self) -> Iterator[ConfidenceEmulator]:
        """Serve from a background event loop (an anyio blocking portal) for sync tests."""
        with (
            anyio.from_thread.start_blocking_portal() as portal,
            portal.wrap_async_context_manager(self) as emulator,
        ):
            yield emulator

    # -- addresses --------------------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._bound_port is None:
            raise RuntimeError("emulator not started")
        return self._bound_port

    @property
    def base_url(self) -> str:
        scheme = "https" if self._ssl_context is not None else "http"
        return f"{scheme}://{self._host}:{self.port}"

    @property
    def cdn_base_url(self) -> str:
        return self.base_url

    @property
    def api_base_url(self) -> str:
        return self.base_url

    @property
    def cloudflare_base_url(self) -> str:
        return self.base_url

    @property
    def events_base_url(self) -> str:
        return self.base_url

    @property
    def encryption_key_hex(self) -> str:
        return self.encryption_key.hex()

    def state_url(self, *, encrypted: bool = True) -> str:
        return f"{self.base_url}/{self.secret_hash}{'.enc' if encrypted else ''}"

    # -- served state -----------------------------------------------------------------------

    def set_state(
        self,
        resolver_state: bytes,
        *,
        account_id: str = DEFAULT_ACCOUNT_ID,
        log_destinations: Sequence[int] = (),
    ) -> None:
        """Serve this serialized ``ResolverState`` (wrapped in a ``ClientResolverState``)."""
        self.set_client_state(
            encode_client_resolver_state(resolver_state, account_id, tuple(log_destinations))
        )

    def set_client_state(self, client_state: bytes) -> None:
        """Serve these exact ``ClientResolverState`` bytes (which need not be valid: useful for
        a correctly encrypted but undecodable state). Each call re-encrypts with a fresh nonce,
        so the ``.enc`` ETag changes even when the content does not, as a real CDN may."""
        encrypted = encrypt_state(client_state, self.encryption_key)
        served = _ServedState(
            client_state=client_state,
            plain_etag=_strong_etag(client_state),
            encrypted=encrypted,
            encrypted_etag=_strong_etag(encrypted),
        )
        with self._lock:
            self._served = served

    def clear_state(self) -> None:
        """Stop serving a state (the state URLs answer 404)."""
        with self._lock:
            self._served = None

    def current_etag(self, *, encrypted: bool = True) -> str | None:
        with self._lock:
            served = self._served
        if served is None:
            return None
        return served.encrypted_etag if encrypted else served.plain_etag

    # -- faults -----------------------------------------------------------------------------

    def inject(self, route: Route | str, fault: Fault, *, times: int | None = None) -> None:
        """Apply ``fault`` to the next ``times`` requests on ``route`` (None = until cleared).

        Faults queue up per route in injection order; an unbounded one blocks later ones.
        """
        if times is not None and times < 1:
            raise ValueError("times must be >= 1 or None")
        with self._lock:
            self._faults[Route(route)].append(_FaultEntry(fault, times))

    def clear_faults(self, route: Route | str | None = None) -> None:
        with self._lock:
            routes = list(Route) if route is None else [Route(route)]
            for r in routes:
                self._faults[r].clear()

    def _take_fault(self, route: Route) -> Fault | None:
        with self._lock:
            queue = self._faults[route]
            if not queue:
                return None
            entry = queue[0]
            if entry.remaining is not None:
                entry.remaining -= 1
                if entry.remaining <= 0:
                    queue.popleft()
            return entry.fault

    # -- recorded data ----------------------------------------------------------------------

    @property
    def requests(self) -> list[RecordedRequest]:
        """Every request received, in arrival order (including faulted and rejected ones)."""
        with self._lock:
            return list(self._requests)

    def requests_for(self, route: Route | str) -> list[RecordedRequest]:
        route = Route(route)
        return [r for r in self.requests if r.route is route]

    @property
    def flag_logs(self) -> list[Any]:
        """Decoded ``WriteFlagLogsRequest``s accepted on the Edge route."""
        with self._lock:
            return list(self._flag_logs)

    @property
    def ingested(self) -> list[Any]:
        """Decoded ``IngestFlagLogsRequest``s accepted on the Cloudflare route."""
        with self._lock:
            return list(self._ingested)

    def all_flag_log_batches(self) -> list[Any]:
        """Every accepted ``WriteFlagLogsRequest``, whichever destination it came through."""
        with self._lock:
            return list(self._flag_logs) + [i.batch for i in self._ingested]

    def take_flag_log_batches(self) -> list[Any]:
        """Remove and return every accepted ``WriteFlagLogsRequest`` (either destination),
        and forget the recorded requests: for long runs that count logs as they arrive and
        must keep the emulator's memory flat."""
        with self._lock:
            batches = list(self._flag_logs) + [i.batch for i in self._ingested]
            self._flag_logs.clear()
            self._ingested.clear()
            self._requests.clear()
        return batches

    def exposure_count(self, flag: str | None = None) -> int:
        """Number of applied-flag entries (exposures) received, optionally for one flag
        (``"flags/x"`` or bare ``"x"``)."""
        wanted = None if flag is None else (flag if flag.startswith("flags/") else f"flags/{flag}")
        total = 0
        for batch in self.all_flag_log_batches():
            for assigned in batch.flag_assigned:
                total += sum(1 for f in assigned.flags if wanted is None or f.flag == wanted)
        return total

    def resolve_counts(self) -> dict[str, dict[str, int]]:
        """``{flag: {variant: count}}`` summed over all ``flag_resolve_info`` received
        (variant ``""`` = resolved without a variant)."""
        counts: dict[str, dict[str, int]] = {}
        for batch in self.all_flag_log_batches():
            for info in batch.flag_resolve_info:
                per_flag = counts.setdefault(info.flag, {})
                for v in info.variant_resolve_info:
                    per_flag[v.variant] = per_flag.get(v.variant, 0) + v.count
        return counts

    def clear_records(self) -> None:
        with self._lock:
            self._requests.clear()
            self._flag_logs.clear()
            self._ingested.clear()
            self._materialization_reads.clear()
            self._materialization_writes.clear()
            self._event_requests.clear()

    # -- events -----------------------------------------------------------------------------

    @property
    def event_publish_requests(self) -> list[Any]:
        """Decoded ``PublishEventsRequest``s accepted on the events route."""
        with self._lock:
            return list(self._event_requests)

    def events(self, name: str | None = None) -> list[dict[str, Any]]:
        """Every accepted event as ``{"event_definition", "payload", "event_time"}`` (payload
        as a plain dict, event_time as RFC 3339), optionally only ``eventDefinitions/<name>``."""
        wanted = None if name is None else f"eventDefinitions/{name}"
        out: list[dict[str, Any]] = []
        for request in self.event_publish_requests:
            for event in request.events:
                if wanted is None or event.event_definition == wanted:
                    out.append(
                        {
                            "event_definition": event.event_definition,
                            "payload": json_format.MessageToDict(event.payload),
                            "event_time": event.event_time.ToJsonString(),
                        }
                    )
        return out

    def reject_event_definitions(self, *names: str) -> None:
        """Answer events of these names (bare or ``eventDefinitions/…``) with a per-event
        ``EVENT_DEFINITION_NOT_FOUND`` error (the request itself still succeeds)."""
        with self._lock:
            self._rejected_event_definitions = {
                n if n.startswith("eventDefinitions/") else f"eventDefinitions/{n}" for n in names
            }

    # -- materialization store --------------------------------------------------------------

    @property
    def materialization_reads(self) -> list[Any]:
        """Decoded ``ReadOperationsRequest``s."""
        with self._lock:
            return list(self._materialization_reads)

    @property
    def materialization_writes(self) -> list[Any]:
        """Decoded ``WriteOperationsRequest``s."""
        with self._lock:
            return list(self._materialization_writes)

    @property
    def materialized_variants(self) -> dict[tuple[str, str, str], str]:
        """``{(unit, materialization, rule): variant}`` currently stored."""
        with self._lock:
            return dict(self._variants)

    def set_materialized_variant(
        self, unit: str, materialization: str, rule: str, variant: str
    ) -> None:
        with self._lock:
            self._variants[(unit, materialization, rule)] = variant
            self._inclusions.add((unit, materialization))

    def set_inclusion(self, unit: str, materialization: str, included: bool = True) -> None:
        with self._lock:
            if included:
                self._inclusions.add((unit, materialization))
            else:
                self._inclusions.discard((unit, materialization))

    # -- request plumbing -------------------------------------------------------------------

    async def _serve(
        self,
        route: Route,
        request: web.Request,
        produce: Callable[[web.Request, bytes], Awaitable[web.Response]],
    ) -> web.StreamResponse:
        response = await self._serve_faulted(route, request, produce)
        if self._access_log is not None:
            size = (
                len(response.body)
                if isinstance(response, web.Response) and isinstance(response.body, bytes)
                else response.content_length or 0
            )
            # The state path is the secret's SHA-256: show a prefix, enough to tell apart.
            path = request.path.replace(self.secret_hash, self.secret_hash[:8] + "...")
            self._access_log(f"{request.method} {path} {response.status} {size}")
        return response

    async def _serve_faulted(
        self,
        route: Route,
        request: web.Request,
        produce: Callable[[web.Request, bytes], Awaitable[web.Response]],
    ) -> web.StreamResponse:
        body = await request.read()
        headers = tuple((k.decode("latin-1"), v.decode("latin-1")) for k, v in request.raw_headers)
        with self._lock:
            self._requests.append(
                RecordedRequest(route, request.method, request.path, headers, body)
            )
        fault = self._take_fault(route)
        if fault is None:
            return await produce(request, body)
        if isinstance(fault, Delay):
            if await self._wait_or_shutdown(fault.seconds):
                _drop(request)
                return web.Response(status=503)
            return await produce(request, body)
        if isinstance(fault, Status):
            return web.Response(status=fault.status, body=fault.body, headers=dict(fault.headers))
        if isinstance(fault, GarbageBody):
            return web.Response(body=fault.body, content_type="application/octet-stream")
        if isinstance(fault, TruncatedBody):
            return await self._truncated(request, await produce(request, body), fault.fraction)
        if isinstance(fault, ResetConnection):
            _reset(request)
            return web.Response(status=503)  # never reaches the client: the socket is reset
        if isinstance(fault, SlowBody):
            return await self._slow(request, await produce(request, body), fault)
        if isinstance(fault, DropConnection):
            _drop(request)
            return web.Response(status=503)  # never reaches the client: the socket is closed
        # Hang
        await self._wait_or_shutdown(None)
        _drop(request)
        return web.Response(status=503)

    async def _wait_or_shutdown(self, seconds: float | None) -> bool:
        """Sleep (forever if None); returns True if the emulator is shutting down."""
        assert self._shutdown is not None
        if seconds is None:
            await self._shutdown.wait()
            return True
        with anyio.move_on_after(seconds):
            await self._shutdown.wait()
            return True
        return False

    async def _slow(
        self, request: web.Request, full: web.Response, fault: SlowBody
    ) -> web.StreamResponse:
        if full.status < 200 or full.status in (204, 304):
            return full  # no body to drip
        payload = full.body if isinstance(full.body, bytes) else b""
        resp = web.StreamResponse(status=full.status, headers=full.headers)
        resp.content_length = len(payload)
        await resp.prepare(request)
        try:
            for start in range(0, len(payload), max(1, fault.chunk)):
                if await self._wait_or_shutdown(fault.interval):
                    _drop(request)
                    break
                await resp.write(payload[start : start + max(1, fault.chunk)])
        except (ConnectionError, RuntimeError):
            pass  # the client gave up (e.g. its deadline passed)
        return resp

    @staticmethod
    async def _truncated(
        request: web.Request, full: web.Response, fraction: float
    ) -> web.StreamResponse:
        if full.status < 200 or full.status in (204, 304):
            return full  # no body to truncate
        payload = full.body if isinstance(full.body, bytes) else b""
        if len(payload) < 2:
            payload += b"\x00" * 16  # an empty response cannot be truncated; promise more
        sent = max(0, min(len(payload) - 1, int(len(payload) * fraction)))
        resp = web.StreamResponse(status=full.status, headers=full.headers)
        resp.content_length = len(payload)
        await resp.prepare(request)
        await resp.write(payload[:sent])
        _drop(request)
        return resp

    def _unauthorized(self, request: web.Request) -> web.Response | None:
        if request.headers.get("Authorization") != f"ClientSecret {self.client_secret}":
            return web.Response(status=401, text="missing or invalid client secret")
        if request.content_type not in _PROTOBUF_TYPES:
            return web.Response(status=415, text="expected a protobuf body")
        return None

    # -- handlers ---------------------------------------------------------------------------

    async def _handle_state(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(Route.STATE, request, self._state_response)

    async def _state_response(self, request: web.Request, _body: bytes) -> web.Response:
        name = request.match_info["name"]
        encrypted = name.endswith(".enc")
        object_hash = name[: -len(".enc")] if encrypted else name
        with self._lock:
            served = self._served
        if object_hash != self.secret_hash or served is None:
            return web.Response(status=404, text="not found")
        if encrypted:
            payload, etag = served.encrypted, served.encrypted_etag
        else:
            payload, etag = served.client_state, served.plain_etag
        if _etag_matches(request.headers.get("If-None-Match"), etag):
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(
            body=payload, headers={"ETag": etag}, content_type="application/octet-stream"
        )

    async def _handle_flag_logs(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(Route.FLAG_LOGS, request, self._flag_logs_response)

    async def _flag_logs_response(self, request: web.Request, body: bytes) -> web.Response:
        if (rejected := self._unauthorized(request)) is not None:
            return rejected
        try:
            message = api_pb2.WriteFlagLogsRequest.FromString(body)
        except DecodeError:
            return web.Response(status=400, text="invalid WriteFlagLogsRequest")
        with self._lock:
            self._flag_logs.append(message)
        return self._protobuf_response(api_pb2.WriteFlagLogsResponse())

    async def _handle_ingest(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(Route.INGEST, request, self._ingest_response)

    async def _ingest_response(self, request: web.Request, body: bytes) -> web.Response:
        if (rejected := self._unauthorized(request)) is not None:
            return rejected
        try:
            message = api_pb2.IngestFlagLogsRequest.FromString(body)
        except DecodeError:
            return web.Response(status=400, text="invalid IngestFlagLogsRequest")
        with self._lock:
            self._ingested.append(message)
        return self._protobuf_response(api_pb2.WriteFlagLogsResponse())

    async def _handle_materialization_read(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(Route.MATERIALIZATION_READ, request, self._read_response)

    async def _read_response(self, request: web.Request, body: bytes) -> web.Response:
        if (rejected := self._unauthorized(request)) is not None:
            return rejected
        try:
            message = api_pb2.ReadOperationsRequest.FromString(body)
        except DecodeError:
            return web.Response(status=400, text="invalid ReadOperationsRequest")
        result = api_pb2.ReadOperationsResult()
        with self._lock:
            self._materialization_reads.append(message)
            for op in message.ops:
                kind = op.WhichOneof("op")
                if kind == "variant_read_op":
                    v = op.variant_read_op
                    result.results.add().variant_result.CopyFrom(
                        api_pb2.VariantData(
                            unit=v.unit,
                            materialization=v.materialization,
                            rule=v.rule,
                            variant=self._variants.get((v.unit, v.materialization, v.rule), ""),
                        )
                    )
                elif kind == "inclusion_read_op":
                    i = op.inclusion_read_op
                    result.results.add().inclusion_result.CopyFrom(
                        api_pb2.InclusionData(
                            unit=i.unit,
                            materialization=i.materialization,
                            is_included=(i.unit, i.materialization) in self._inclusions,
                        )
                    )
        return self._protobuf_response(result)

    async def _handle_materialization_write(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(Route.MATERIALIZATION_WRITE, request, self._write_response)

    async def _write_response(self, request: web.Request, body: bytes) -> web.Response:
        if (rejected := self._unauthorized(request)) is not None:
            return rejected
        try:
            message = api_pb2.WriteOperationsRequest.FromString(body)
        except DecodeError:
            return web.Response(status=400, text="invalid WriteOperationsRequest")
        with self._lock:
            self._materialization_writes.append(message)
            for op in message.store_variant_op:
                self._variants[(op.unit, op.materialization, op.rule)] = op.variant
                self._inclusions.add((op.unit, op.materialization))
        return self._protobuf_response(api_pb2.WriteOperationsResult())

    async def _handle_events(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(Route.EVENTS, request, self._events_response)

    async def _events_response(self, request: web.Request, body: bytes) -> web.Response:
        # The JSON endpoint authenticates with the secret in the body, not a header (§4.5).
        if request.content_type != "application/json":
            return web.Response(status=415, text="expected a JSON body")
        try:
            message = json_format.Parse(body.decode("utf-8"), events_pb2.PublishEventsRequest())
        except (json_format.ParseError, UnicodeDecodeError):
            return web.Response(status=400, text="invalid PublishEventsRequest")
        if message.client_secret != self.client_secret:
            return web.Response(status=401, text="missing or invalid client secret")
        response = events_pb2.PublishEventsResponse()
        with self._lock:
            self._event_requests.append(message)
            rejected = self._rejected_event_definitions
            for index, event in enumerate(message.events):
                if event.event_definition in rejected:
                    response.errors.add(
                        index=index,
                        reason=events_pb2.EventError.EVENT_DEFINITION_NOT_FOUND,
                        message=f"{event.event_definition} not found",
                    )
        return web.Response(
            text=json_format.MessageToJson(response, indent=None), content_type="application/json"
        )

    async def _handle_explain(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(Route.EXPLAIN, request, self._explain_response)

    async def _explain_response(self, request: web.Request, body: bytes) -> web.Response:
        if request.headers.get("Authorization") != f"ClientSecret {self.client_secret}":
            return web.Response(status=401, text="missing or invalid client secret")
        try:
            query = json.loads(body)
            flag, context = query["flag"], query.get("context", {})
            if not isinstance(flag, str) or not isinstance(context, dict):
                raise TypeError
        except (ValueError, KeyError, TypeError):
            return web.Response(
                status=400, text='expected {"flag": "name", "context": {...}} as JSON'
            )
        try:
            doc = self._explain_document(flag, context)
        except LookupError as exc:
            return web.Response(status=404, text=str(exc))
        except ValueError as exc:
            return web.Response(status=400, text=str(exc))
        return web.Response(text=json.dumps(doc), content_type="application/json")

    def explain(self, flag: str, context: dict[str, Any] | None = None) -> Any:
        """The resolver's trace (``confidence.explain.Explanation``) of ``flag`` for
        ``context`` over the served state and the emulator's materializations; nothing is
        logged. ``print(emulator.explain("my-flag", ctx).render())`` shows why a test got
        the value it got."""
        from confidence.explain import Explanation

        return Explanation.from_document(self._explain_document(flag, context or {}))

    def _explain_document(self, flag: str, context: dict[str, Any]) -> dict[str, Any]:
        from confidence._wasm.abi import (
            MaterializationMode,
            MaterializationRecord,
            ResolveRequest,
            ResolverError,
        )
        from confidence._wasm.pool import ResolverPool

        with self._lock:
            served = self._served
            records = tuple(
                MaterializationRecord(u, m, r, v) for (u, m, r), v in self._variants.items()
            ) + tuple(MaterializationRecord(u, m, "", "") for u, m in self._inclusions)
        if served is None:
            raise LookupError("no state is served")
        explainer = self._explainer
        if explainer is None or explainer[0] is not served:
            decoded = decode_client_resolver_state(served.client_state)
            pool = ResolverPool(1, enable_apply_dedup=False, disable_exposure_collection=True)
            pool.set_state(decoded.state, decoded.account)
            if explainer is not None:
                explainer[1].close()
            explainer = self._explainer = (served, pool)
        name = flag if flag.startswith("flags/") else f"flags/{flag}"
        request = ResolveRequest(
            flags=(name,),
            context_json=json.dumps(context).encode("utf-8"),
            client_secret=self.client_secret,
            apply=False,
            materialization_mode=MaterializationMode.COMPLETE,
            materializations=records,
            skip_logging=True,
        )
        try:
            with explainer[1].borrow() as instance:
                result = instance.explain(request)
        except ResolverError as exc:
            raise ValueError(str(exc).replace(self.client_secret, "***")) from None
        assert isinstance(result, dict)  # COMPLETE mode never suspends
        return result

    def summary(self) -> str:
        """What the emulator received, per route (the CLI prints it at exit)."""
        requests = self.requests
        by_route: dict[Route, list[RecordedRequest]] = {route: [] for route in Route}
        for r in requests:
            by_route[r.route].append(r)
        resolves = sum(sum(v.values()) for v in self.resolve_counts().values())
        with self._lock:
            mat_reads = len(self._materialization_reads)
            mat_writes = len(self._materialization_writes)
        lines = [
            f"state fetches: {len(by_route[Route.STATE])}",
            f"flag-log requests: {len(by_route[Route.FLAG_LOGS]) + len(by_route[Route.INGEST])}"
            f" ({len(self.all_flag_log_batches())} accepted)",
            f"exposures: {self.exposure_count()}",
            f"resolve counts: {resolves}",
            f"events: {len(self.events())}",
            f"materialization calls: {mat_reads} reads, {mat_writes} writes",
            f"explain requests: {len(by_route[Route.EXPLAIN])}",
        ]
        return "\n".join(lines)

    @staticmethod
    def _protobuf_response(message: Any) -> web.Response:
        return web.Response(body=message.SerializeToString(), content_type="application/x-protobuf")


# -- CLI ------------------------------------------------------------------------------------


def _looks_like_client_state(data: bytes) -> bool:
    """Heuristic for ``--format auto``: a ClientResolverState has only fields 1, 2 and 4, a
    non-empty state and a non-empty printable account. A ResolverState practically always has
    clients (6) and credentials (7), which rules it out."""
    try:
        fields = {number for number, _, _ in iter_fields(data)}
        decoded = decode_client_resolver_state(data)
    except ProtoDecodeError:
        return False
    return (
        fields <= {1, 2, 4}
        and bool(decoded.state)
        and bool(decoded.account)
        and decoded.account.isprintable()
    )


def _load_state_file(
    data: bytes, fmt: str, key: bytes
) -> tuple[str, bytes]:  # (kind, bytes to serve)
    if fmt == "encrypted" or (fmt == "auto" and len(data) >= NONCE_SIZE + TAG_SIZE):
        try:
            return "client-state", decrypt_state(data, key)
        except StateDecryptionError:
            if fmt == "encrypted":
                raise
    if fmt == "client-state" or (fmt == "auto" and _looks_like_client_state(data)):
        return "client-state", data
    return "resolver-state", data


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m confidence.testing.emulator",
        description="Serve a resolver state (and accept flag logs) like Confidence, locally.",
    )
    parser.add_argument("--state", required=True, help="state file (.pb)")
    parser.add_argument(
        "--format",
        choices=("auto", "resolver-state", "client-state", "encrypted"),
        default="auto",
        help="raw ResolverState, ClientResolverState, or an encrypted ClientResolverState "
        "(auto-detected by default)",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 = pick a free port")
    parser.add_argument("--secret", default=DEFAULT_CLIENT_SECRET, help="client secret")
    parser.add_argument(
        "--encryption-key", default=None, help="64 hex characters (random if omitted)"
    )
    parser.add_argument("--account", default=DEFAULT_ACCOUNT_ID, help="account id")
    parser.add_argument(
        "--log-destination",
        type=int,
        action="append",
        default=[],
        help="LogDestination number (repeatable: primary, fallback); 2 = Cloudflare",
    )
    parser.add_argument(
        "--quiet", action="store_true", help="no access log (the summary at exit stays)"
    )
    return parser.parse_args(argv)


async def _serve_forever(args: argparse.Namespace) -> None:
    key = (
        parse_encryption_key(args.encryption_key)
        if args.encryption_key is not None
        else os.urandom(32)
    )
    with open(args.state, "rb") as f:
        data = f.read()
    kind, payload = _load_state_file(data, args.format, key)
    emulator = ConfidenceEmulator(
        client_secret=args.secret,
        encryption_key=key,
        host=args.host,
        port=args.port,
        access_log=None if args.quiet else (lambda line: print(line, flush=True)),
    )
    if kind == "client-state":
        emulator.set_client_state(payload)
    else:
        emulator.set_state(payload, account_id=args.account, log_destinations=args.log_destination)
    async with emulator:
        # The key is printed because this is a local test tool and the user needs it to point
        # a provider at the server; never do this with production credentials.
        print(f"Confidence emulator on {emulator.base_url}", flush=True)
        print(f"  state ({kind}): {emulator.state_url(encrypted=True)}", flush=True)
        print(f"  encryption key: {emulator.encryption_key_hex}", flush=True)
        print(f"  explain: POST {emulator.base_url}{EXPLAIN_PATH}", flush=True)
        print("  Ctrl-C to stop", flush=True)
        try:
            await _until_stopped()
        finally:
            print("summary:", flush=True)
            for line in emulator.summary().splitlines():
                print(f"  {line}", flush=True)


async def _until_stopped() -> None:
    """Return on SIGINT or SIGTERM, inside the loop, so the server closes cleanly (and the
    summary prints on either).

    Waiting in sleep_forever() instead leaves Ctrl-C to the interpreter, and before 3.11
    asyncio lets that KeyboardInterrupt escape from wherever the loop was (a traceback).
    """
    if sys.platform == "win32":  # no signal receivers: Ctrl-C is main()'s KeyboardInterrupt
        await anyio.sleep_forever()
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            return


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    try:
        anyio.run(_serve_forever, args)
    except KeyboardInterrupt:
        return 0
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
