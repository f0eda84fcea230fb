"""A durable spool for flag-log batches (`log_spool_dir=`): what cannot be delivered now is
written to disk, and the next start of any process with the same directory delivers it first.

Files (one per batch): ``<time_ns>-<pid>-<random>.spool``, each ``MAGIC``, the batch's
exposure and resolve counts, the body's length and SHA-256, then the body. Invariants:

- **atomic**: written to a ``.tmp-*`` file (``O_EXCL``, mode 0600), fsynced, then renamed to
  its ``.spool`` name; a reader never sees a partial file under a ``.spool`` name (a crash
  mid-write leaves only a ``.tmp-*``, removed once its writer is gone);
- **bounded**: ``save`` refuses a batch that would take the ``.spool`` files over
  ``max_bytes`` (the caller counts it as dropped);
- **claimed once**: a reader claims a file by renaming it to ``.claimed-<pid>-<random>``
  (``rename`` is atomic: of two processes sharing the directory exactly one succeeds), so no
  file is ever sent twice by two processes. A delivered claim is deleted; an undelivered one
  is renamed back to ``.spool`` at shutdown. Claims left by a process that died are taken
  over (same host: the pid is checked);
- **corrupt or truncated files** (bad magic, short, wrong length or digest) are renamed to
  ``.corrupt`` and reported in one WARNING; they never stop start-up.

Delivery from the spool is at least once: a batch delivered just before a crash, whose claim
was not yet deleted, is sent again by the next process.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import secrets
import struct
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from confidence._logs.exposures import LogBatch

__all__ = ["DEFAULT_MAX_SPOOL_BYTES", "LogSpool", "SpooledBatch"]

logger = logging.getLogger("confidence.flag_logs")

MAGIC: Final = b"CFLOGSP1"
_HEADER: Final = struct.Struct(">8sQQQ32s")  # magic, exposures, resolves, length, sha256
DEFAULT_MAX_SPOOL_BYTES: Final = 256 * 1024 * 1024
_SUFFIX: Final = ".spool"


@dataclass(frozen=True, slots=True)
class SpooledBatch:
    batch: LogBatch
    claim: Path  # the claimed file; delete it once delivered


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # exists, but not ours to signal
    return True


def _owner_pid(name: str, marker: str) -> int | None:
    # "<...>.claimed-<pid>-<token>" / ".tmp-<pid>-<token>"
    try:
        return int(name.split(marker, 1)[1].split("-", 1)[0])
    except (IndexError, ValueError):
        return None


class LogSpool:
    """One spool directory. Thread-safe as far as the file system is (each call is a
    sequence of atomic renames); methods do blocking I/O: call them off the event loop."""

    def __init__(self, directory: Path, *, max_bytes: int = DEFAULT_MAX_SPOOL_BYTES) -> None:
        if max_bytes < 1:
            raise ValueError("log spool max_bytes must be >= 1")
        self.directory = directory
        self.max_bytes = max_bytes

    def _ensure_dir(self) -> None:
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _spooled_bytes(self) -> int:
        total = 0
        for path in self.directory.glob(f"*{_SUFFIX}"):
            with contextlib.suppress(FileNotFoundError):  # claimed meanwhile
                total += path.stat().st_size
        return total

    # -- writing -------------------------------------------------------------------------

    def save(self, batches: list[LogBatch]) -> tuple[list[LogBatch], list[LogBatch]]:
        """Write each batch to its own file; returns (saved, refused). Refused: over the
        byte bound, or the write failed (logged once)."""
        saved: list[LogBatch] = []
        refused: list[LogBatch] = []
        if not batches:
            return saved, refused
        try:
            self._ensure_dir()
            used = self._spooled_bytes()
        except OSError as exc:
            logger.warning("Flag-log spool %s unusable: %s", self.directory, exc)
            return saved, list(batches)
        failed: OSError | None = None
        for batch in batches:
            size = _HEADER.size + len(batch.body)
            if failed is not None or used + size > self.max_bytes:
                refused.append(batch)
                continue
            try:
                self._write(batch)
            except OSError as exc:
                failed = exc
                refused.append(batch)
                continue
            used += size
            saved.append(batch)
        if failed is not None:
            logger.warning("Could not write to the flag-log spool %s: %s", self.directory, failed)
        return saved, refused

    def _write(self, batch: LogBatch) -> None:
        token = secrets.token_hex(6)
        pid = os.getpid()
        tmp = self.directory / f".tmp-{pid}-{token}"
        final = self.directory / f"{time.time_ns():020d}-{pid}-{token}{_SUFFIX}"
        header = _HEADER.pack(
            MAGIC,
            batch.exposures,
            batch.resolves,
            len(batch.body),
            hashlib.sha256(batch.body).digest(),
        )
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(header)
                out.write(batch.body)
                out.flush()
                os.fsync(out.fileno())
            os.rename(tmp, final)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        self._sync_dir()

    def _sync_dir(self) -> None:
        # The rename is durable only once the directory entry is.
        try:
            fd = os.open(self.directory, os.O_RDONLY)
        except OSError:
            return
        try:
            with contextlib.suppress(OSError):
                os.fsync(fd)
        finally:
            os.close(fd)

    # -- reading -------------------------------------------------------------------------

    def claim_all(
        self, *, max_batches: int | None = None, max_bytes: int | None = None
    ) -> list[SpooledBatch]:
        """Claim spooled batches (oldest first), including claims of dead processes, up to
        `max_batches` / `max_bytes` (the rest stays for a later call). Corrupt files are
        set aside (one WARNING per call for all of them)."""
        if not self.directory.is_dir():
            return []
        taken_bytes = 0
        pid = os.getpid()
        claimed: list[SpooledBatch] = []
        corrupt: list[str] = []
        try:
            names = sorted(os.listdir(self.directory))
        except OSError as exc:
            logger.warning("Flag-log spool %s unreadable: %s", self.directory, exc)
            return []
        for name in names:
            if max_batches is not None and len(claimed) >= max_batches:
                break
            if max_bytes is not None and claimed and taken_bytes >= max_bytes:
                break
            path = self.directory / name
            if name.startswith(".tmp-"):
                owner = _owner_pid(name, ".tmp-")
                if owner is not None and not _pid_alive(owner):
                    path.unlink(missing_ok=True)  # a write that never finished
                continue
            if ".claimed-" in name:
                owner = _owner_pid(name, ".claimed-")
                if owner is None or _pid_alive(owner):
                    continue  # another live process is delivering it
                base = name.split(".claimed-", 1)[0]
            elif name.endswith(_SUFFIX):
                base = name
            else:
                continue
            claim = self.directory / f"{base}.claimed-{pid}-{secrets.token_hex(4)}"
            try:
                os.rename(path, claim)  # atomic: exactly one claimant wins
            except FileNotFoundError:
                continue  # claimed by another process just now
            except OSError as exc:
                logger.warning("Could not claim spooled flag logs %s: %s", name, exc)
                continue
            batch = self._read(claim)
            if batch is None:
                corrupt.append(name)
                with contextlib.suppress(OSError):
                    os.rename(claim, self.directory / f"{base}.corrupt")
                continue
            claimed.append(SpooledBatch(batch, claim))
            taken_bytes += len(batch.body)
        if corrupt:
            logger.warning(
                "Set aside %d corrupt or truncated flag-log spool file(s) in %s (renamed to "
                "*.corrupt): %s",
                len(corrupt),
                self.directory,
                ", ".join(corrupt[:5]) + (" ..." if len(corrupt) > 5 else ""),
            )
        return claimed

    @staticmethod
    def _read(path: Path) -> LogBatch | None:
        try:
            data = path.read_bytes()
        except OSError:
            return None
        if len(data) < _HEADER.size:
            return None
        magic, exposures, resolves, length, digest = _HEADER.unpack_from(data)
        body = data[_HEADER.size :]
        if magic != MAGIC or len(body) != length or hashlib.sha256(body).digest() != digest:
            return None
        return LogBatch(body=body, exposures=exposures, resolves=resolves)

    def has_files(self) -> bool:
        """Whether unclaimed batches are waiting (cheap: one directory scan)."""
        try:
            return any(n.endswith(_SUFFIX) for n in os.listdir(self.directory))
        except OSError:
            return False

    @staticmethod
    def done(claim: Path) -> None:
        """The claimed batch was delivered."""
        claim.unlink(missing_ok=True)

    @staticmethod
    def release(claim: Path) -> bool:
        """The claimed batch was not delivered: back into the spool for the next start."""
        base = claim.name.split(".claimed-", 1)[0]
        try:
            os.rename(claim, claim.with_name(base))
        except OSError:
            return False
        return True
