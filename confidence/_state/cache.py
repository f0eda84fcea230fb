"""Last-known resolver state on disk (`state_cache_dir=`): survive a cold start while
Confidence is unreachable.

- **Write**: every state the provider applies from the CDN is written as received (the
  encrypted `.enc` body when an encryption key is configured: the disk never holds more than
  the CDN serves), atomically (temp file in the same directory, fsync, `os.replace`), mode
  0600. One file per client secret, named by a short prefix of the secret's SHA-256 (which
  alone does not locate the CDN object).
- **Read**: on a cold start, when the first fetch fails for a reason that waiting may heal
  (timeout, connection error, 5xx; not 401/403/404 or a wrong key, which must surface), or
  gives no answer within a short grace period, the runtime loads the file and serves it as
  STALE until the first successful sync. A missing or unusable file is not an error: the
  provider simply keeps waiting for the CDN.

Blocking file I/O: call `save`/`load` from a worker thread.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Final

from confidence._config import BootstrapState

__all__ = ["CachedState", "StateCache"]

logger = logging.getLogger("confidence.state_cache")

#: How long a cold start waits for the CDN's first answer before using the cache anyway.
DEFAULT_GRACE: Final = 2.0


@dataclass(frozen=True, slots=True)
class CachedState:
    state: BootstrapState
    saved_at: float  # wall-clock time the file was written (its mtime)


@dataclass(frozen=True, slots=True)
class StateCache:
    """Where and how the provider keeps its last applied state."""

    directory: Path
    client_secret: str = field(repr=False)
    encryption_key: bytes | None = field(repr=False, default=None)
    grace: float = DEFAULT_GRACE

    @property
    def path(self) -> Path:
        digest = hashlib.sha256(self.client_secret.encode("utf-8")).hexdigest()[:16]
        suffix = ".enc" if self.encryption_key is not None else ".pb"
        return self.directory / f"confidence-state-{digest}{suffix}"

    def save(self, body: bytes) -> bool:
        """Atomically replace the cached state with `body`; False (logged) on failure."""
        if not body:
            return False
        target = self.path
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".confidence-state-", dir=self.directory)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(body)
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(tmp, 0o600)
                os.replace(tmp, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
                raise
        except OSError as exc:
            # A cache that cannot be written must never disturb serving flags.
            logger.warning("Could not write the state cache %s: %s", target, exc.strerror or exc)
            return False
        logger.debug("Wrote the state cache %s (%d bytes)", target, len(body))
        return True

    def load(self) -> CachedState | None:
        """The cached state, or None when there is none or it is unusable (logged)."""
        from confidence._state.file import StateFileError, parse_state_bytes

        target = self.path
        try:
            data = target.read_bytes()
            saved_at = target.stat().st_mtime
        except FileNotFoundError:
            return None
        except OSError as exc:
            logger.warning("Could not read the state cache %s: %s", target, exc.strerror or exc)
            return None
        try:
            state = parse_state_bytes(data, encryption_key=self.encryption_key, account_id=None)
        except StateFileError as exc:
            logger.warning("Ignoring the state cache %s: %s", target, exc)
            return None
        return CachedState(state=state, saved_at=saved_at)


def age_text(saved_at: float) -> str:
    seconds = max(0.0, time.time() - saved_at)
    if seconds < 120:
        return f"{seconds:.0f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}min"
    return f"{seconds / 3600:.1f}h"
