"""The state fetch's own HTTP/1.1 GET (confidence/_http.py), against real sockets on loopback.

The emulator covers the plain path (tests/test_net_state_sync.py runs every sync test on
both HTTP stacks); these servers speak the framings the emulator does not: chunked, gzip,
redirects, and answers that are broken in the ways a misbehaving proxy breaks them.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable

import pytest

from confidence._http import HttpProtocolError, LightSession

pytestmark = pytest.mark.anyio

Handler = Callable[[bytes], bytes]


class RawServer:
    """Answers every request with `handler(request head)`, then closes the connection."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.requests: list[bytes] = []
        self._server: asyncio.Server | None = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        self.requests.append(head)
        writer.write(self.handler(head))
        await writer.drain()
        writer.close()

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()


async def fetch(url: str, headers: dict[str, str] | None = None) -> tuple[int, str | None, bytes]:
    async with LightSession().get(url, headers=headers or {}) as resp:
        body = b""
        async for chunk in resp.content.iter_chunked(7):  # small: exercises the loops
            body += chunk
        return resp.status, resp.headers.get("ETag"), body


async def test_content_length_body_headers_and_request_line() -> None:
    body = b"x" * 1000
    srv = RawServer(
        lambda head: b'HTTP/1.1 200 OK\r\nContent-Length: 1000\r\netag: "v1"\r\n\r\n' + body
    )
    async with srv as base:
        status, etag, got = await fetch(f"{base}/state/abc.enc?x=1", {"If-None-Match": '"v0"'})
    assert (status, etag, got) == (200, '"v1"', body)
    head = srv.requests[0].decode()
    assert head.startswith("GET /state/abc.enc?x=1 HTTP/1.1\r\n")
    assert '\r\nIf-None-Match: "v0"\r\n' in head
    assert f"\r\nHost: {base.removeprefix('http://')}\r\n" in head


async def test_chunked_and_gzip() -> None:
    payload = bytes(range(256)) * 50
    packed = gzip.compress(payload)
    chunks = [packed[i : i + 300] for i in range(0, len(packed), 300)]
    framed = b"".join(b"%x;ext=1\r\n%s\r\n" % (len(c), c) for c in chunks) + b"0\r\nX-T: 1\r\n\r\n"
    srv = RawServer(
        lambda head: (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n"
            b"Content-Encoding: gzip\r\n\r\n" + framed
        )
    )
    async with srv as base:
        status, _, got = await fetch(base + "/s")
    assert status == 200 and got == payload


async def test_body_until_close_without_length() -> None:
    srv = RawServer(lambda head: b"HTTP/1.0 200 OK\r\n\r\nall of it")
    async with srv as base:
        assert await fetch(base + "/s") == (200, None, b"all of it")


async def test_not_modified_has_no_body() -> None:
    srv = RawServer(lambda head: b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\n\r\n')
    async with srv as base:
        assert await fetch(base + "/s") == (304, '"v1"', b"")


async def test_redirects_are_followed_and_bounded() -> None:
    async with RawServer(lambda head: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok") as target:
        hop = RawServer(
            lambda head: (
                f"HTTP/1.1 302 Found\r\nLocation: {target}/final\r\n"
                "Content-Length: 0\r\n\r\n".encode()
            )
        )
        async with hop as base:
            assert await fetch(base + "/s") == (200, None, b"ok")
    loop = RawServer(
        lambda head: b"HTTP/1.1 307 Again\r\nLocation: /s\r\nContent-Length: 0\r\n\r\n"
    )
    async with loop as base:
        with pytest.raises(HttpProtocolError, match="redirects"):
            await fetch(base + "/s")
    assert len(loop.requests) == 11


@pytest.mark.parametrize(
    "answer",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",  # ends early
        b"SPDY/9 200 OK\r\n\r\n",  # not HTTP/1.x
        b"HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nContent-Length: ten\r\n\r\n",
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",  # bad chunk size
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",  # chunk ends early
        b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 4\r\n\r\nnope",
        b"HTTP/1.1 200",  # no end of line
    ],
)
async def test_broken_answers_are_protocol_errors(answer: bytes) -> None:
    async with RawServer(lambda head: answer) as base:
        with pytest.raises(HttpProtocolError):
            await fetch(base + "/s")


async def test_errors_are_oserrors_and_urls_are_checked() -> None:
    # The syncer reports OSErrors as network errors (HttpProtocolError is one).
    assert issubclass(HttpProtocolError, OSError)
    srv = RawServer(lambda head: b"")
    async with srv as base:
        pass  # closed: nothing listens on that port any more
    with pytest.raises(OSError):
        await fetch(base + "/s")
    with pytest.raises(ValueError, match="http"):
        await fetch("ftp://127.0.0.1/s")
