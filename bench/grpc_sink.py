"""A loopback gRPC sink for the official provider's flag logs (runs in bench/.venv-official).

The official provider ships flag logs over gRPC (protocol.md §1, E2); our emulator speaks
REST only. This server accepts any unary call on 127.0.0.1, answers with an empty message
(an empty `WriteFlagLogsResponse` is zero bytes) and counts calls and bytes. It prints
`PORT <n>` once listening, then serves until stdin closes, printing the counts at the end.
"""

from __future__ import annotations

import sys
import threading
from concurrent import futures
from typing import Any

import grpc

_calls: dict[str, int] = {}
_bytes = 0
_lock = threading.Lock()


def _accept(method: str) -> Any:
    def handler(request: bytes, context: Any) -> bytes:
        global _bytes
        with _lock:
            _calls[method] = _calls.get(method, 0) + 1
            _bytes += len(request)
        return b""

    return grpc.unary_unary_rpc_method_handler(
        handler, request_deserializer=None, response_serializer=None
    )


class _AnyMethod(grpc.GenericRpcHandler):
    def service(self, handler_call_details: Any) -> Any:
        return _accept(handler_call_details.method)


def main() -> int:
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers((_AnyMethod(),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"PORT {port}", flush=True)
    sys.stdin.read()  # until the orchestrator closes our stdin
    server.stop(0.5)
    with _lock:
        print(f"CALLS {_calls} BYTES {_bytes}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
