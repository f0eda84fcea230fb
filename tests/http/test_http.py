"""The light transport (confidence/_http_light.py) under the one HTTP layer (`_http.attempt`),
against real sockets on loopback.

The emulator covers the plain path (tests/state/test_state_sync.py runs every sync test on
both transports); these servers speak the framings the emulator does not: chunked, gzip,
redirects, and answers that are broken in the ways a misbehaving proxy breaks them. Each
policy (no redirects, status classification, body cap, deadline, exception mapping, the
Authorization rule) is checked through `_http.attempt`, where it is applied for both
transports.
"""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Callable

import pytest

from confidence import _http
from confidence._http import FailureKind, HttpFailure
from confidence._http_light import HttpProtocolError, LightSession

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


async def raw(url: str, headers: dict[str, str] | None = None) -> tuple[int, str | None, bytes]:
    """The transport alone, reading in small chunks (exercises the framing loops)."""
    async with LightSession().request("GET", url, headers=headers or {}) as resp:
        body = b""
        async for chunk in resp.content.iter_chunked(7):
            body += chunk
        return resp.status, resp.headers.get("ETag"), body


async def fetch(
    url: str,
    headers: dict[str, str] | None = None,
    *,
    timeout: float = 5.0,
    authorization: str | None = None,
    max_body_bytes: int | None = None,
) -> tuple[int, str | None, bytes]:
    """Through the one HTTP layer, as the state fetch calls it."""
    response = await _http.attempt(
        LightSession(),
        "GET",
        url,
        timeout=timeout,
        secret="s3cret",
        headers=headers,
        authorization=authorization,
        accept=(304,),
        max_body_bytes=max_body_bytes,
    )
    return response.status, response.headers.get("ETag"), response.body


async def failure(url: str, **kwargs: float | int | str) -> HttpFailure:
    with pytest.raises(HttpFailure) as caught:
        await fetch(url, **kwargs)  # type: ignore[arg-type]
    return caught.value


async def test_content_length_body_headers_and_request_line() -> None:
    body = b"x" * 1000
    srv = RawServer(
        lambda head: b'HTTP/1.1 200 OK\r\nContent-Length: 1000\r\netag: "v1"\r\n\r\n' + body
    )
    async with srv as base:
        status, etag, got = await fetch(f"{base}/state/abc.enc?x=1", {"If-None-Match": '"v0"'})
        assert await raw(f"{base}/s") == (200, '"v1"', body)
    assert (status, etag, got) == (200, '"v1"', body)  # (headers: case-insensitive)
    head = srv.requests[0].decode()
    assert head.startswith("GET /state/abc.enc?x=1 HTTP/1.1\r\n")
    assert '\r\nIf-None-Match: "v0"\r\n' in head
    assert f"\r\nHost: {base.removeprefix('http://')}\r\n" in head
    assert "authorization" not in head.lower()  # the CDN fetch sends none


async def test_authorization_is_added_by_the_layer_only() -> None:
    srv = RawServer(lambda head: b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
    async with srv as base:
        await fetch(base + "/s", authorization="ClientSecret abc")
    assert "\r\nAuthorization: ClientSecret abc\r\n" in srv.requests[0].decode()


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
        status, _, got = await raw(base + "/s")
        assert status == 200 and got == payload
        assert await fetch(base + "/s") == (200, None, payload)


async def test_body_until_close_without_length() -> None:
    srv = RawServer(lambda head: b"HTTP/1.0 200 OK\r\n\r\nall of it")
    async with srv as base:
        assert await raw(base + "/s") == (200, None, b"all of it")
        assert await fetch(base + "/s") == (200, None, b"all of it")


async def test_not_modified_has_no_body() -> None:
    srv = RawServer(lambda head: b'HTTP/1.1 304 Not Modified\r\nETag: "v1"\r\n\r\n')
    async with srv as base:
        assert await fetch(base + "/s") == (304, '"v1"', b"")


async def test_redirects_are_never_followed() -> None:
    # A redirect could carry the Authorization header (or the URL's capability) to a host
    # nobody chose: the transport returns the 3xx as it is and the layer refuses it.
    target_srv = RawServer(lambda head: b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
    async with target_srv as target:
        hop = RawServer(
            lambda head: (
                f"HTTP/1.1 302 Found\r\nLocation: {target}/final\r\n"
                "Content-Length: 0\r\n\r\n".encode()
            )
        )
        async with hop as base:
            assert await raw(base + "/s") == (302, None, b"")
            failed = await failure(base + "/s", authorization="ClientSecret abc")
    assert (failed.kind, failed.status) == (FailureKind.CLIENT, 302)
    assert len(hop.requests) == 2 and target_srv.requests == []
    with pytest.raises(ValueError, match="redirects"):
        LightSession().request("GET", "http://127.0.0.1/", allow_redirects=True)


async def test_statuses_are_classified_by_the_layer() -> None:
    for status, kind in [
        (401, FailureKind.AUTH),
        (404, FailureKind.NOT_FOUND),
        (429, FailureKind.RATE_LIMITED),
        (503, FailureKind.SERVER),
    ]:
        answer = f"HTTP/1.1 {status} X\r\nRetry-After: 3\r\nContent-Length: 4\r\n\r\nnope"
        async with RawServer(lambda head, a=answer: a.encode()) as base:
            failed = await failure(base + "/s")
        assert (failed.kind, failed.status) == (kind, status)
        assert failed.retry_after == 3.0


async def test_the_body_cap_is_the_layers() -> None:
    declared = RawServer(
        lambda head: b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n" + b"x" * 100
    )
    async with declared as base:
        assert (await failure(base + "/s", max_body_bytes=99)).kind is FailureKind.BAD_RESPONSE
        assert (await fetch(base + "/s", max_body_bytes=100))[2] == b"x" * 100
    streamed = RawServer(lambda head: b"HTTP/1.0 200 OK\r\n\r\n" + b"y" * 200_000)
    async with streamed as base:
        failed = await failure(base + "/s", max_body_bytes=100_000)
    assert failed.kind is FailureKind.BAD_RESPONSE


async def test_the_deadline_is_the_layers() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await asyncio.sleep(30)  # never answers (cancelled when the server closes)

    server = await asyncio.start_server(silent, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        failed = await failure(f"http://127.0.0.1:{port}/s", timeout=0.3)
    finally:
        server.close()
    assert failed.kind is FailureKind.TIMEOUT


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
async def test_broken_answers_are_network_failures(answer: bytes) -> None:
    async with RawServer(lambda head: answer) as base:
        with pytest.raises(HttpProtocolError):
            await raw(base + "/s")
        failed = await failure(base + "/s")
    assert failed.kind is FailureKind.NETWORK and failed.retryable


async def test_errors_map_to_failure_kinds_and_urls_are_checked() -> None:
    assert issubclass(HttpProtocolError, OSError)  # (mapped as a network error)
    srv = RawServer(lambda head: b"")
    async with srv as base:
        pass  # closed: nothing listens on that port any more
    assert (await failure(base + "/s")).kind is FailureKind.NETWORK
    refused = await failure("ftp://127.0.0.1/s")
    assert refused.kind is FailureKind.INTERNAL and not refused.retryable
