"""The WebAssembly engine: the one module that imports wasmtime.

Everything wasmtime-specific lives here so the choice of runtime is visible in one place
(wasmer's wheels stop at CPython 3.10). The rest of the package sees `CompiledResolver`
(a compiled, disk-cached module) and `WasmInstance` (one Store + instance speaking the
byte-level call convention of resolver/README.md).

Speed: wasmtime-py's `Func.__call__` re-reads the function type through ctypes on every
call (~25-40 µs here). We call exports through `wasmtime_func_call_unchecked` with a
preallocated raw-value buffer, through our own integer-only ctypes prototype, and move bytes
through a memoryview over linear memory; see `WasmInstance`. ctypes releases the GIL for the
duration of the wasm call (and only that one), so instances in different threads run wasm in
parallel.
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
from wasmtime import _bindings as _wbindings
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
            if _FORKED:
                # The parent's compile threads (rayon) did not survive the fork: a parallel
                # compile in this child would wait for them forever.
                config.parallel_compilation = False
            _ENGINE = wasmtime.Engine(config)
        return _ENGINE


_FORKED = False


def _reset_after_fork() -> None:
    # A forked child must not share the parent's engine lock state, nor its engine (see
    # _engine()). The parent's modules and Stores keep their own reference to the old
    # engine; a child never uses them (see _fork).
    global _ENGINE_LOCK, _ENGINE, _FORKED
    _ENGINE_LOCK = threading.Lock()
    _ENGINE = None
    _FORKED = True


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
    """One Store + instance. Not thread-safe: the pool hands it to one caller at a time.

    The call path is tuned for the GIL (see the module docstring and bench/README.md):

    - exports are called through `wasmtime_func_call_unchecked` via our own ctypes
      prototype taking plain integers (no per-call argument conversion objects); it is the
      only foreign call per resolve that releases the GIL, so a second thread runs Python
      while this one runs wasm, and there is one GIL hand-off per call instead of five;
    - guest memory is a `memoryview` over the linear memory: the request is copied in
      with a slice assignment and the response out with `tobytes()`, no ctypes calls;
    - the memory size is read (GIL held, ~0.3 µs) after each call; when it changed the view
      is rebuilt, because growing may move the memory.
    """

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
        self._context_addr: int = ctypes.cast(self._context, ctypes.c_void_p).value or 0
        self._memory_addr: int = ctypes.addressof(memory._memory)
        self._input_func = exports["cr_input"]
        self._funcs: dict[str, Any] = {name: exports[name] for name in Export.ALL}
        abi = exports["cr_abi_version"]
        if not isinstance(abi, wasmtime.Func):
            raise TypeError("resolver.wasm exports no cr_abi_version function")
        self.abi_version: int = int(abi(store))
        self._view = memoryview(b"")
        self._view_size = -1
        self._refresh_view()
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
            self._refresh_view()
        ptr = self._input_ptr
        self._view[ptr : ptr + n] = payload
        packed = self._calls[export](n)
        out = (packed >> 32) & 0xFFFFFFFF
        end = out + (packed & 0xFFFFFFFF)
        if _memory_size(self._context_addr, self._memory_addr) != self._view_size:
            self._refresh_view()  # the call grew (and may have moved) linear memory
        if end > self._view_size:
            raise WasmTrap(f"{export} returned an out-of-bounds response")
        return self._view[out:end].tobytes()

    def memory_size(self) -> int:
        return int(_memory_size(self._context_addr, self._memory_addr))

    # -- internals -------------------------------------------------------------------------

    def _refresh_view(self) -> None:
        size = int(_memory_size(self._context_addr, self._memory_addr))
        base = _memory_data(self._context_addr, self._memory_addr) or 0
        self._view.release()
        if size and base:
            self._view = memoryview((ctypes.c_ubyte * size).from_address(base)).cast("B")
        else:  # pragma: no cover - resolver.wasm always has memory
            self._view = memoryview(bytearray(0))
        self._view_size = size

    def _make_caller(self, func: Any) -> Callable[[int], int]:
        if _call_unchecked is None:  # pragma: no cover - a wasmtime-py without the raw call
            store = self._store

            def slow_call(arg: int) -> int:
                try:
                    return int(func(store, arg))
                except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
                    raise WasmTrap(str(exc)) from None

            return slow_call
        # One wasmtime_val_raw_t (16 bytes) holds the i32 argument and the i64 result.
        raw = (ctypes.c_int64 * 2)()
        trap = ctypes.c_void_p()
        keep = (raw, trap, func)  # the addresses below must stay valid
        args = (
            self._context_addr,
            ctypes.addressof(func._func),
            ctypes.addressof(raw),
            1,
            ctypes.addressof(trap),
        )
        unchecked = _call_unchecked

        def call(arg: int) -> int:
            raw[0] = arg
            error = unchecked(*args)
            if error:
                raise WasmTrap(_error_message(error))
            if trap.value:
                raise WasmTrap(_trap_message(trap.value))
            return raw[0] & 0xFFFFFFFFFFFFFFFF

        call.keep = keep  # type: ignore[attr-defined]
        return call


def _function(name: str, factory: Any, restype: Any, *argtypes: Any) -> Any:
    """`name` from wasmtime-py's loaded library, with our own (integer) prototype."""
    bound = getattr(_wbindings, f"_{name}", None)
    if bound is None:  # pragma: no cover - very old or new wasmtime-py
        return None
    address = ctypes.cast(bound, ctypes.c_void_p).value
    return factory(restype, *argtypes)(address)


_P = ctypes.c_void_p
#: Runs wasm: CFUNCTYPE releases the GIL for the duration of the call.
_call_unchecked: Final = _function(
    "wasmtime_func_call_unchecked", ctypes.CFUNCTYPE, _P, _P, _P, _P, ctypes.c_size_t, _P
)
#: Trivial getters: PYFUNCTYPE keeps the GIL (releasing it would invite a thread switch).
_memory_data: Final = _function("wasmtime_memory_data", ctypes.PYFUNCTYPE, _P, _P, _P)
_memory_size: Final = _function(
    "wasmtime_memory_data_size", ctypes.PYFUNCTYPE, ctypes.c_size_t, _P, _P
)


def _trap_message(trap: int) -> str:
    # The Trap object takes ownership of the pointer (and frees it); the instance that
    # trapped is never called again, so its trap slot need not be reset.
    try:
        owned = ctypes.cast(ctypes.c_void_p(trap), ctypes.POINTER(_wffi.wasm_trap_t))
        return str(wasmtime.Trap._from_ptr(owned))
    except Exception:  # pragma: no cover - defensive
        return "wasm trap"


def _error_message(error: int) -> str:
    try:
        owned = ctypes.cast(ctypes.c_void_p(error), ctypes.POINTER(_wffi.wasmtime_error_t))
        return str(wasmtime.WasmtimeError._from_ptr(owned))
    except Exception:  # pragma: no cover - defensive
        return "wasmtime error"
