"""Fork-safe lazy imports for background threads.

Start-up loads wasmtime, cryptography, aiohttp and the protobuf runtime lazily, in worker
threads (the compile, the decrypt, flag-log delivery, the first drain). A fork while such a
thread is inside an import would leave the child with a module lock owned by a thread that
does not exist there: the child's next import of that module hangs forever (gunicorn
`--preload` forks right after READY, while delivery is importing aiohttp). So these imports
hold `_LOCK`, and a fork waits for it (`os.register_at_fork`): a child never inherits a
half-done import of ours.
"""

from __future__ import annotations

import importlib
import os
import sys
import threading
from types import ModuleType

__all__ = ["load"]

_LOCK = threading.RLock()


def load(name: str) -> ModuleType:
    """`importlib.import_module(name)`, never concurrently with a fork."""
    module = sys.modules.get(name)
    spec = getattr(module, "__spec__", None)
    if module is not None and not getattr(spec, "_initializing", False):
        return module  # (the common case: already imported, no lock)
    with _LOCK:
        return importlib.import_module(name)


def _reset_in_child() -> None:
    global _LOCK
    _LOCK = threading.RLock()  # the parent's is held by the forking thread


os.register_at_fork(
    before=lambda: _LOCK.acquire(),
    after_in_parent=lambda: _LOCK.release(),
    after_in_child=_reset_in_child,
)
