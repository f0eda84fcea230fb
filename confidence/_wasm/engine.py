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

import atexit
import contextlib
import ctypes
import functools
import hashlib
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

import wasmtime
from wasmtime import _bindings as _wbindings
from wasmtime import _ffi as _wffi

from confidence._wasm.engine_types import Export, Tier, WasmTrap

__all__ = [
    "CompiledResolver",
    "Export",
    "Tier",
    "WasmInstance",
    "WasmTrap",
    "cache_path",
    "default_cache_dir",
    "load_resolver_wasm",
]

#: Memory cap per instance (wasmtime store limit). A state is a few MB decoded; a
#: runaway allocation traps instead of eating the host.
DEFAULT_MEMORY_LIMIT: Final = 512 * 1024 * 1024


@functools.cache
def _wasmtime_version() -> str:
    # wasmtime-py has no __version__; the distribution's version keys the module cache.
    # Read from the name of its dist-info folder: importlib.metadata costs ~15 ms of imports
    # (zipfile, email, csv...) on every start.
    site = Path(wasmtime.__file__).resolve().parent.parent
    try:
        for entry in os.scandir(site):
            name = entry.name
            if name.startswith("wasmtime-") and name.endswith(".dist-info"):
                return name[len("wasmtime-") : -len(".dist-info")]
    except OSError:
        pass
    import importlib.metadata

    try:
        return importlib.metadata.version("wasmtime")
    except Exception:  # pragma: no cover - not installed as a distribution
        return "unknown"


def load_resolver_wasm() -> bytes:
    """The packaged resolver.wasm, or the repo root's when running from a checkout."""
    here = Path(__file__).resolve().parent.parent
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


_ENGINES: dict[Tier, wasmtime.Engine] = {}
#: Compiled modules by (wasm digest, tier): every pool in the process shares them.
_MODULES: dict[tuple[str, Tier], wasmtime.Module] = {}


def _engine(tier: Tier = Tier.OPTIMIZED) -> wasmtime.Engine:
    # One Engine per tier and process: compiled code is shared by every Store.
    with _ENGINE_LOCK:
        engine = _ENGINES.get(tier)
        if engine is None:
            config = wasmtime.Config()
            if tier is Tier.QUICK:
                config.cranelift_opt_level = "none"
                if _single_pass_checked():
                    config.cranelift_flag_set("regalloc_algorithm", "single_pass")
            else:
                config.cranelift_opt_level = "speed"
            if _FORKED:
                # The parent's compile threads (rayon) did not survive the fork: a parallel
                # compile in this child would wait for them forever.
                config.parallel_compilation = False
            engine = _ENGINES[tier] = wasmtime.Engine(config)
        return engine


#: wasmtime-py versions (major) on which `regalloc_algorithm=single_pass` was checked to
#: work. Before 45 `Config.cranelift_flag_set` does not exist; on a version that did not
#: know the setting, creating the Engine would panic and abort the process, so newer majors
#: get the QUICK tier without it until checked.
_SINGLE_PASS_MAJORS: Final = range(45, 51)


def _single_pass_checked() -> bool:
    try:
        return int(_wasmtime_version().split(".")[0]) in _SINGLE_PASS_MAJORS
    except ValueError:
        return False


def _module(
    tier: Tier, digest: str, build: Callable[[wasmtime.Engine], wasmtime.Module]
) -> wasmtime.Module:
    key = (digest, tier)
    module = _MODULES.get(key)
    if module is None:
        # Two pools starting at once may both build; one result is kept.
        module = _MODULES.setdefault(key, build(_engine(tier)))
    return module


_FORKED = False


def _reset_after_fork() -> None:
    # A forked child must not share the parent's engine lock state, nor its engines (see
    # _engine()). The parent's modules and Stores keep their own reference to the old
    # engines; a child never uses them (see _fork).
    global _ENGINE_LOCK, _FORKED
    _ENGINE_LOCK = threading.Lock()
    _ENGINES.clear()
    _MODULES.clear()
    _FORKED = True


os.register_at_fork(after_in_child=_reset_after_fork)


@atexit.register
def _release_modules() -> None:
    # Dropped while wasmtime's bindings still exist: at interpreter teardown their
    # finalizers would find them gone and print "Exception ignored" noise.
    _MODULES.clear()
    _ENGINES.clear()


class CompiledResolver:
    """resolver.wasm compiled once per process (and cached on disk across processes)."""

    def __init__(
        self,
        module: wasmtime.Module,
        engine: wasmtime.Engine,
        digest: str,
        tier: Tier = Tier.OPTIMIZED,
    ) -> None:
        self._module = module
        self._engine = engine
        self.digest = digest
        self.tier = tier

    @classmethod
    def load(
        cls,
        wasm: bytes | None = None,
        *,
        cache_dir: Path | None = None,
        use_cache: bool = True,
        quick_if_cold: bool = False,
    ) -> CompiledResolver:
        """Compile `wasm` (default: the packaged resolver.wasm), reusing a disk cache.

        The cache key covers the wasm bytes and the wasmtime version; a corrupt or stale
        cache file is ignored and rewritten. With `quick_if_cold`, when neither this
        process nor the disk cache has the OPTIMIZED code, the QUICK tier is compiled
        instead (and cached under its own name); `load()` again later for OPTIMIZED code.
        """
        wasm_bytes = load_resolver_wasm() if wasm is None else wasm
        digest = hashlib.sha256(wasm_bytes).hexdigest()

        def compile_only(engine: wasmtime.Engine) -> wasmtime.Module:
            return wasmtime.Module(engine, wasm_bytes)

        if not use_cache:
            return cls(_module(Tier.OPTIMIZED, digest, compile_only), _engine(), digest)
        directory = cache_dir if cache_dir is not None else default_cache_dir()
        tier = Tier.OPTIMIZED
        path = cache_path(directory, digest, tier)
        if quick_if_cold and (digest, tier) not in _MODULES and not path.is_file():
            tier = Tier.QUICK
            path = cache_path(directory, digest, tier)

        def cached(engine: wasmtime.Engine) -> wasmtime.Module:
            module = _read_cached(engine, path)
            if module is None:
                module = wasmtime.Module(engine, wasm_bytes)
                _write_cache(path, module)
            if tier is Tier.OPTIMIZED:
                # QUICK code is only a stand-in: let it go once the real thing exists (pool
                # instances still running it keep it alive until they retire). Once per
                # process, not on every load.
                _MODULES.pop((digest, Tier.QUICK), None)
                with contextlib.suppress(OSError):
                    cache_path(directory, digest, Tier.QUICK).unlink(missing_ok=True)
            return module

        return cls(_module(tier, digest, cached), _engine(tier), digest, tier)

    def instantiate(self, *, memory_limit: int = DEFAULT_MEMORY_LIMIT) -> WasmInstance:
        return WasmInstance(self._module, self._engine, memory_limit=memory_limit)


def cache_path(directory: Path, digest: str, tier: Tier = Tier.OPTIMIZED) -> Path:
    """Where the compiled module for `digest` lives in the cache `directory`."""
    suffix = "" if tier is Tier.OPTIMIZED else f"-{tier.value}"
    return directory / f"resolver-{digest[:32]}-wasmtime-{_wasmtime_version()}{suffix}.cwasm"


def _read_cached(engine: wasmtime.Engine, path: Path) -> wasmtime.Module | None:
    if not path.is_file():
        return None
    try:
        # Mapped, not read: no 1 MB copy. Safe because the cache file is only ever
        # replaced (a new inode), never rewritten in place.
        return wasmtime.Module.deserialize_file(engine, str(path))
    except Exception:  # stale/corrupt cache (or unreadable): recompile
        return None


def _write_cache(path: Path, module: wasmtime.Module) -> None:
    import tempfile  # (only when the cache is written: ~5 ms of imports)

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

    def bind(self, export: str) -> Callable[[bytes], bytes]:
        """`call` for one export, as one closure (the resolve hot path): no export lookup
        and no second Python frame for the raw call. Same contract as `call`."""
        if _call_unchecked is None:  # pragma: no cover - a wasmtime-py without the raw call
            return functools.partial(self.call, export)
        func = self._funcs[export]
        raw, trap, args = self._raw_call(func)
        unchecked = _call_unchecked
        size_of = _memory_size
        context, memory = self._context_addr, self._memory_addr

        def call(payload: bytes) -> bytes:
            n = len(payload)
            if n > self._input_cap:
                self._input_ptr = self._call_input(n) & 0xFFFFFFFF
                self._input_cap = n
                self._refresh_view()
            ptr = self._input_ptr
            self._view[ptr : ptr + n] = payload
            raw[0] = n
            error = unchecked(*args)
            if error or trap.value:
                raise _failure(error, trap.value)
            packed = raw[0]
            out = (packed >> 32) & 0xFFFFFFFF
            end = out + (packed & 0xFFFFFFFF)
            if size_of(context, memory) != self._view_size:
                self._refresh_view()  # the call grew (and may have moved) linear memory
            if end > self._view_size:
                raise WasmTrap(f"{export} returned an out-of-bounds response")
            return self._view[out:end].tobytes()

        call.keep = (raw, trap, func)  # type: ignore[attr-defined]  # the addresses above
        return call

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

    def _raw_call(
        self, func: Any
    ) -> tuple[ctypes.Array[ctypes.c_int64], ctypes.c_void_p, tuple[int, int, int, int, int]]:
        """The buffers and the argument tuple of one raw `wasmtime_func_call_unchecked` of
        `func`: one wasmtime_val_raw_t (16 bytes) holds the i32 argument and the i64 result.
        The caller keeps `raw`, `trap` and `func` alive as long as it uses `args`."""
        raw = (ctypes.c_int64 * 2)()
        trap = ctypes.c_void_p()
        args = (
            self._context_addr,
            ctypes.addressof(func._func),
            ctypes.addressof(raw),
            1,
            ctypes.addressof(trap),
        )
        return raw, trap, args

    def _make_caller(self, func: Any) -> Callable[[int], int]:
        if _call_unchecked is None:  # pragma: no cover - a wasmtime-py without the raw call
            store = self._store

            def slow_call(arg: int) -> int:
                try:
                    return int(func(store, arg))
                except (wasmtime.Trap, wasmtime.WasmtimeError) as exc:
                    raise WasmTrap(str(exc)) from None

            return slow_call
        raw, trap, args = self._raw_call(func)
        keep = (raw, trap, func)  # the addresses in `args` must stay valid
        unchecked = _call_unchecked

        def call(arg: int) -> int:
            raw[0] = arg
            error = unchecked(*args)
            if error or trap.value:
                raise _failure(error, trap.value)
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


def _failure(error: int | None, trap: int | None) -> WasmTrap:
    """The WasmTrap for a raw call that failed: wasmtime's error if it set one, else the trap.

    The Error or Trap object takes ownership of the pointer (and frees it); the instance
    that failed is never called again, so its trap slot need not be reset."""
    try:
        if error:
            owned = ctypes.cast(ctypes.c_void_p(error), ctypes.POINTER(_wffi.wasmtime_error_t))
            return WasmTrap(str(wasmtime.WasmtimeError._from_ptr(owned)))
        trapped = ctypes.cast(ctypes.c_void_p(trap), ctypes.POINTER(_wffi.wasm_trap_t))
        return WasmTrap(str(wasmtime.Trap._from_ptr(trapped)))
    except Exception:  # pragma: no cover - defensive
        return WasmTrap("wasmtime error" if error else "wasm trap")
