"""The engine's names that need no wasmtime: errors, export names and compile tiers.

Split from `_wasm.engine` so that importing the ABI, the pool or the runtime does not load
wasmtime (~15 ms): the compile imports it in its worker thread, where the import overlaps
the first state download (`_runtime`).
"""

from __future__ import annotations

import enum
from typing import Final

from confidence.errors import ConfidenceError

__all__ = ["Export", "Tier", "WasmTrap"]


class WasmTrap(ConfidenceError):
    """The guest trapped (panic, out of memory, out of bounds). The instance is poisoned."""


class Export:
    """Names of the guest's call exports (resolver/README.md)."""

    CONFIGURE: Final = "cr_configure"
    SET_STATE: Final = "cr_set_state"
    RESOLVE: Final = "cr_resolve"
    FLUSH_LOGS: Final = "cr_flush_logs"
    EXPLAIN: Final = "cr_explain"

    ALL: Final = (CONFIGURE, SET_STATE, RESOLVE, FLUSH_LOGS, EXPLAIN)


class Tier(enum.Enum):
    """How resolver.wasm is compiled.

    OPTIMIZED is what serves: Cranelift at `speed`, cached on disk. QUICK is for starts with
    a cold cache: no optimization passes and the single-pass register allocator compile in
    about 55 % of the time, for code that resolves about 1.5x slower (bench/README.md). A
    provider that starts cold becomes READY on QUICK code and moves to OPTIMIZED code once
    a background compile (which also fills the disk cache) finishes.
    """

    OPTIMIZED = "optimized"
    QUICK = "quick"
