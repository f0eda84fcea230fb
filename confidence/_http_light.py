"""A minimal HTTP/1.1 GET over asyncio streams: the state fetch's transport for `_http`.

Why not aiohttp: importing it costs more than everything else a start needs together
(~50 ms, a third of it building TLS contexts), and the state fetch is one GET. With this
transport the first state arrives, and the provider is READY, before aiohttp is even
imported; the runtime loads it afterwards for flag logs and events (`_runtime`).

It is a transport, not a client: `_http.attempt` is the one HTTP layer and applies the
policy (deadline, status classification, body cap, exception mapping, the Authorization
rule) to it exactly as to an `aiohttp.ClientSession`. `LightSession.request()` offers the part
of `aiohttp.ClientSession.request()` that `_http.Transport` names, for GET only: an async
context manager yielding a response with `status`, `content_length`, `headers` (a
case-insensitive mapping), `read()` and `content.iter_chunked()`. It never follows a redirect
(a 3xx is returned as it is, and `_http` classifies it), verifies TLS with the default context
(system CAs, `SSL_CERT_FILE`), decodes gzip/deflate bodies and never uses a proxy. One
connection per request (`Connection: close`): a fetch every 30 s outlives any keep-alive.

Errors are `OSError`s (`HttpProtocolError` for a malformed or truncated answer), which `_http`
maps to `FailureKind.NETWORK`; a URL that is not http(s), a method other than GET, a body or
`allow_redirects=True` are `ValueError`s (`INTERNAL`: asking again cannot help). Timeouts are
`_http`'s (`anyio.fail_after` around the whole request).
"""

from __future__ import annotations

import asyncio
import io
import ssl
import zlib
from collections.abc import AsyncIterator, Mapping
from types import TracebackType
from typing import Final
from urllib.parse import urlsplit

from confidence._http import Headers
from confidence._version import __version__
from confidence.errors import ConfidenceError

__all__ = ["HttpProtocolError", "LightResponse", "LightSession"]

_MAX_HEADERS: Final = 100
_MAX_LINE: Final = 64 * 1024
_USER_AGENT: Final = f"confidence-openfeature-provider-python/{__version__}"


class HttpProtocolError(ConfidenceError, OSError):
    """The server's answer is not well-formed HTTP/1.1 (or ended early)."""


class _Body:
    """The response body as decoded chunks (`iter_chunked`, as aiohttp's `content`)."""

    def __init__(self, reader: asyncio.StreamReader, framing: str, length: int, encoding: str):
        self._reader = reader
        self._framing = framing  # "none", "length", "chunked" or "eof"
        self._length = length
        self._inflate = (
            zlib.decompressobj(wbits=47) if encoding in ("gzip", "x-gzip", "deflate") else None
        )

    async def iter_chunked(self, size: int) -> AsyncIterator[bytes]:
        async for raw in self._raw(size):
            if self._inflate is None:
                yield raw
                continue
            try:
                data = self._inflate.decompress(raw)
            except zlib.error as exc:
                raise HttpProtocolError(f"cannot decode the response body: {exc}") from None
            if data:
                yield data
        if self._inflate is not None:
            tail = self._inflate.flush()
            if tail:
                yield tail

    async def _raw(self, size: int) -> AsyncIterator[bytes]:
        reader = self._reader
        try:
            if self._framing == "length":
                left = self._length
                while left > 0:
                    chunk = await reader.read(min(size, left))
                    if not chunk:
                        raise HttpProtocolError("the response body ended early")
                    left -= len(chunk)
                    yield chunk
            elif self._framing == "eof":
                while chunk := await reader.read(size):
                    yield chunk
            elif self._framing == "chunked":
                while True:
                    line = await reader.readuntil(b"\r\n")
                    try:
                        left = int(line.split(b";", 1)[0].strip(), 16)
                    except ValueError:
                        raise HttpProtocolError("malformed chunk size") from None
                    if left < 0:
                        raise HttpProtocolError("malformed chunk size")
                    if left == 0:
                        while await reader.readuntil(b"\r\n") != b"\r\n":
                            pass  # trailers
                        return
                    while left > 0:
                        chunk = await reader.read(min(size, left))
                        if not chunk:
                            raise HttpProtocolError("the response body ended early")
                        left -= len(chunk)
                        yield chunk
                    if await reader.readexactly(2) != b"\r\n":
                        raise HttpProtocolError("malformed chunk")
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            raise HttpProtocolError(f"the response body ended early: {exc}") from None


class LightResponse:
    """One response; the connection closes when its context exits."""

    def __init__(
        self,
        status: int,
        headers: Headers,
        content: _Body,
        writer: asyncio.StreamWriter,
    ) -> None:
        self.status = status
        self.headers = headers
        self.content = content
        self._writer = writer
        length = headers.get("content-length")
        self.content_length: int | None = int(length) if length is not None else None

    async def read(self) -> bytes:
        """The whole (decoded) body."""
        buf = bytearray()
        async for chunk in self.content.iter_chunked(64 * 1024):
            buf += chunk
        return bytes(buf)

    def close(self) -> None:
        self._writer.close()


class _Request:
    def __init__(self, session: LightSession, url: str, headers: Mapping[str, str]) -> None:
        self._session = session
        self._url = url
        self._headers = headers
        self._response: LightResponse | None = None

    async def __aenter__(self) -> LightResponse:
        self._response = await self._session._request(self._url, self._headers)
        return self._response

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._response is not None:
            self._response.close()


class LightSession:
    """Stateless but for a TLS context made on the first https request (loading CAs)."""

    def __init__(self) -> None:
        self._ssl: ssl.SSLContext | None = None

    def request(
        self,
        method: str,
        url: str,
        *,
        data: bytes | io.BytesIO | None = None,
        headers: Mapping[str, str] | None = None,
        allow_redirects: bool = False,
    ) -> _Request:
        """One GET (see the module docstring); `_http.attempt` is the caller."""
        if method != "GET" or data is not None:
            raise ValueError("the light transport sends GET requests without a body only")
        if allow_redirects:
            raise ValueError("the light transport never follows redirects")
        return _Request(self, url, headers or {})

    async def _request(self, url: str, extra: Mapping[str, str]) -> LightResponse:
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"not an http(s) URL: {scheme}://...")
        host = parts.hostname
        port = parts.port or (443 if scheme == "https" else 80)
        context = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = ssl.create_default_context()
            context = self._ssl
        reader, writer = await asyncio.open_connection(
            host, port, ssl=context, server_hostname=host if context else None, limit=_MAX_LINE
        )
        try:
            target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            authority = parts.netloc.rpartition("@")[2]
            lines = [
                f"GET {target} HTTP/1.1",
                f"Host: {authority}",
                "Accept: */*",
                "Accept-Encoding: gzip, deflate",
                f"User-Agent: {_USER_AGENT}",
                "Connection: close",
            ]
            lines += [f"{name}: {value}" for name, value in extra.items()]
            writer.write(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
            status, headers = await _read_head(reader)
            framing, length = "eof", 0
            if status in (204, 304) or 100 <= status < 200:
                framing = "none"
            elif "chunked" in (headers.get("transfer-encoding") or "").lower():
                framing = "chunked"
            elif headers.get("content-length") is not None:
                framing = "length"
                length = int(headers.get("content-length") or 0)
            encoding = (headers.get("content-encoding") or "").strip().lower()
            return LightResponse(status, headers, _Body(reader, framing, length, encoding), writer)
        except BaseException:
            writer.close()
            raise


async def _read_head(reader: asyncio.StreamReader) -> tuple[int, Headers]:
    try:
        while True:
            line = await reader.readuntil(b"\r\n")
            version, _, rest = line.decode("latin-1").partition(" ")
            code = rest[:3]
            if not version.startswith("HTTP/1.") or not code.isdigit():
                raise HttpProtocolError("malformed status line")
            status = int(code)
            items: dict[str, str] = {}
            for _ in range(_MAX_HEADERS + 1):
                raw = await reader.readuntil(b"\r\n")
                if raw == b"\r\n":
                    break
                name, colon, value = raw.decode("latin-1").partition(":")
                if not colon:
                    raise HttpProtocolError("malformed header line")
                items[name.strip().lower()] = value.strip()
            else:
                raise HttpProtocolError(f"more than {_MAX_HEADERS} headers")
            if status != 100:  # (an interim answer; the real one follows)
                break
        headers = Headers(items)
        length = headers.get("content-length")
        if length is not None and not length.isdigit():
            raise HttpProtocolError("malformed Content-Length")
        return status, headers
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
        raise HttpProtocolError(f"the response ended early: {exc}") from None
