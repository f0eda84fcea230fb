"""The WebAssembly engine: the one module that imports wasmtime.

Everything wasmtime-specific lives here so the choice of runtime is visible in one place
(wasmer's wheels stop at CPython 3.10). The rest of the package sees `CompiledResolver`
(a compiled, disk-cached module) and `WasmInstance` (one Store + instance speaking the
byte-level call convention of resolver/README.md).

Speed: wasmtime-py's `Func.__call__` re-reads the function type through ctypes on every
call (~25-40 µs here). We call exports through `wasmtime_func_call_unchecked` with a
preallocated raw-value buffer and move bytes with `ctypes.memmove` on the memory base,
which costs a few µs. ctypes releases the GIL for the duration of the foreign call, so
instances in different threads run wasm in parallel.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import wasmtime
from wasmtime import _ffi as _wffi

__all__ = [
    "CompiledResolver",
    "Export",
    "WasmInstance",
    "WasmTrap",
    "default_cache_dir",
    "load_resolver_wasm",
]

#: Memory cap per instance (wasmtime store limit). A state is a few MB decoded; a
#: runaway allocation traps instead of eating the host.
DEFAULT_MEMORY_LIMIT: Final = 512 * 1024 * 1024

_WASMTIME_VERSION: Final = getattr(wasmtime, "__version__", "unknown")


class WasmTrap(Exception):
    """The guest trapped (panic, out of memory, out of bounds). The instance is poisoned."""


class Export:
    """Names of the guest's call exports (resolver/README.md)."""

    CONFIGURE: Final = "cr_configure"
    SET_STATE: Final = "cr_set_state"
    RESOLVE: Final = "cr_resolve"
    FLUSH_LOGS: Final = "cr_flush_logs"

    ALL: Final = (CONFIGURE, SET_STATE, RESOLVE, FLUSH_LOGS)


def load_resolver_wasm() -> bytes:
    """The packaged resolver.wasm, or the repo root's when running from a checkout."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "resolver.wasm", here.parent / "resolver.wasm"):
        if candidate.is_file():
            return candidate.read_bytes()
    raise FileNotFoundError(
        "resolver.wasm not found next to the confidence package or at the repository root; "
        "build it with `nox -s wasm`"
    )


def default_cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "confidence-openfeature-provider"


_ENGINE_LOCK = threading.Lock()
_ENGINE: wasmtime.Engine | None = None


def _engine() -> wasmtime.Engine:
    # One Engine per process: compiled code is shared by every Store.
    global _ENGINE
    with _ENGINE_LOCK:
        if _ENGINE is None:
            config = wasmtime.Config()
            config.cranelift_opt_level = "speed"
            _ENGINE = wasmtime.Engine(config)
        return _ENGINE


def _reset_after_fork() -> None:
    # A forked child must not share the parent's engine lock state.
    global _ENGINE_LOCK
    _ENGINE_LOCK = threading.Lock()


os.register_at_fork(after_in_child=_reset_after_fork)


class CompiledResolver:
    """resolver.wasm compiled once per process (and cached on disk across processes)."""

    def __init__(self, module: wasmtime.Module, engine: wasmtime.Engine, digest: str) -> None:
        self._module = module
        self._engine = engine
        self.digest = digest

    @classmethod
    def load(
        cls,
        wasm: bytes | None = None,
        *,
        cache_dir: Path | None = None,
        use_cache: bool = True,
    ) -> CompiledResolver:
        """Compile `wasm` (default: the packaged resolver.wasm), reusing a disk cache.

        The cache key covers the wasm bytes and the wasmtime version; a corrupt or stale
        cache file is ignored and rewritten.
        """
        wasm_bytes = load_resolver_wasm() if wasm is None else wasm
        engine = _engine()
        digest = hashlib.sha256(wasm_bytes).hexdigest()
        if not use_cache:
            return cls(wasmtime.Module(engine, wasm_bytes), engine, digest)
        directory = cache_dir if cache_dir is not None else default_cache_dir()
        path = directory / f"resolver-{digest[:32]}-wasmtime-{_WASMTIME_VERSION}.cwasm"
        module = _read_cached(engine, path)
        if module is None:
            module = wasmtime.Module(engine, wasm_bytes)
            _write_cache(path, module)
        return cls(module, engine, digest)

    def instantiate(self, *, memory_limit: int = DEFAULT_MEMORY_LIMIT) -> WasmInstance:
        return WasmInstance(self._module, self._engine, memory_limit=memory_limit)


def _read_cached(engine: wasmtime.Engine, path: Path) -> wasmtime.Module | None:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    try:
        return wasmtime.Module.deserialize(engine, data)
    except Exception:  # stale/corrupt cache: recompile
        return None


def _write_cache(path: Path, module: wasmtime.Module) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".resolver-", suffix=".tmp")
        with os.fdopen(fd, "wb") as fh:
            fh.write(module.serialize())
        os.replace(tmp, path)  # atomic: concurrent processes never read half a file
    except OSError:
        pass  # a read-only home is fine: we just compile next time


class WasmInstance:
    """One Store + instance. Not thread-safe: the pool hands it to one caller at a time."""

    def __init__(self, module: wasmtime.Module, engine: wasmtime.Engine, *, memory_limit: int):
        store = wasmtime.Store(engine)
        store.set_limits(memory_size=memory_limit)
        instance = wasmtime.Instance(store, module, [])
        exports = instance.exports(store)
        memory = exports["memory"]
        if not isinstance(memory, wasmtime.Memory):
            raise TypeError("resolver.wasm exports no memory")
        self._store = store
        self._instance = instance
        self._memory = memory
        self._context = store._context()
        self._memory_ref = ctypes.byref(memory._memory)
        self._input_func = exports["cr_input"]
        self._funcs: dict[str, Any] = {name: exports[name] for name in Export.ALL}
        abi = exports["cr_abi_version"]
        if not isinstance(abi, wasmtime.Func):
            raise TypeError("resolver.wasm exports no cr_abi_version function")
        self.abi_version: int = int(abi(store))
        self._input_ptr = 0
        self._input_cap = 0
        self._call_input = self._make_caller(self._input_func)
        self._calls: dict[str, Callable[[int], int]] = {
            name: self._make_caller(func) for name, func in self._funcs.items()
        }

    # -- the byte-level call convention ---------------------------------------------------

    def call(self, export: str, payload: bytes) -> bytes:
        """Write `payload` into the guest, call `export`, return the response bytes.

        Raises WasmTrap when the guest traps; the caller must then drop this instance.
        """
        n = len(payload)
        if n > self._input_cap:
            self._input_ptr = self._call_input(n) & 0xFFFFFFFF
            self._input_cap = n
        ctypes.memmove(self._base() + self._input_ptr, payload, n)
        packed = self._calls[export](n) & 0xFFFFFFFFFFFFFFFF
        ptr, length = packed >> 32, packed & 0xFFFFFFFF
        # Re-read the base: the call may have grown (and moved) linear memory.
        if ptr + length > self._data_size():
            raise WasmTrap(f"{export} returned an out-of-bounds response")
        return ctypes.string_at(self._base() + ptr, length)

    def memory_size(self) -> int:
        return self._data_size()

    # -- internals -------------------------------------------------------------------------

    def _base(self) -> int:
        ptr = _wffi.wasmtime_memory_data(self._context, self._memory_ref)
        return ctypes.cast(ptr, ctypes.c_void_p).value or 0

    def _data_size(self) -> int:
        return int(_wffi.wasmtime_memory_data_size(self._context, self._memory_ref))

    def _make_caller(self, func: Any) -> Callable[[int], int]:
        unchecked = getattr(_wffi, "wasmtime_func_call_unchecked", None)
        if unchecked is None:  # pragma: no cover - a wasmtime-py without the raw call
            store = self._store

            def slow_call(arg: int) -> int:
                try:
                    return int(func(store, arg))
                except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
                    raise WasmTrap(str(exc)) from None

            return slow_call
        raw = (_wffi.wasmtime_val_raw_t * 1)()
        trap = ctypes.POINTER(_wffi.wasm_trap_t)()
        trap_ref = ctypes.byref(trap)
        context = self._context
        func_ref = ctypes.byref(func._func)
        slot = raw[0]

        def call(arg: int) -> int:
            slot.i64 = arg
            error = unchecked(context, func_ref, raw, 1, trap_ref)
            if error:
                raise WasmTrap(_error_message(error))
            if trap:
                raise WasmTrap(_trap_message(trap))
            return int(slot.i64)

        return call


def _trap_message(trap: Any) -> str:
    # The Trap object takes ownership of the pointer (and frees it); the instance that
    # trapped is never called again, so its trap slot need not be reset.
    try:
        owned = ctypes.cast(trap, ctypes.POINTER(_wffi.wasm_trap_t))
        return str(wasmtime.Trap._from_ptr(owned))
    except Exception:  # pragma: no cover - defensive
        return "wasm trap"


def _error_message(error: Any) -> str:
    try:
        return str(wasmtime.WasmtimeError._from_ptr(error))
    except Exception:  # pragma: no cover - defensive
        return "wasmtime error"
