"""Password hashing and verification with argon2id (argon2-cffi).

Hashing is deliberate CPU work; the async callers run these functions in a
worker thread so the event loop keeps serving other requests.
"""

from __future__ import annotations

import ctypes
import threading

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from session.config import Settings

_M_MMAP_THRESHOLD = -3  # glibc's mallopt parameter number
_released = False


def release_large_buffers(threshold: int = 1 << 20) -> None:
    """Make glibc return argon2's work buffers to the system after each hash. Once per process.

    Each hash allocates ``memory_cost`` KiB (19 MiB by default). glibc serves
    that with mmap, but after the first free it raises its mmap threshold
    above that size, and later buffers come from the heap and stay in the
    process: four parallel logins left a worker 78 MiB larger for good.
    Fixing the threshold keeps such buffers mmap-backed, so they are unmapped
    when freed. Does nothing where the C library is not glibc.
    """
    global _released
    if _released:
        return
    _released = True
    try:
        # The running process's own symbols: libc's, without ctypes.util's ldconfig subprocess.
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return
    mallopt(_M_MMAP_THRESHOLD, threshold)


class Passwords:
    """Hash, verify and rehash passwords with the configured argon2id parameters."""

    def __init__(self, settings: Settings) -> None:
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
            type=Type.ID,
        )
        self._dummy: str | None = None
        self._dummy_lock = threading.Lock()
        release_large_buffers()

    def hash(self, password: str) -> str:
        """Return the PHC string for ``password``."""
        return self._hasher.hash(password)

    def verify(self, stored_hash: str, password: str) -> bool:
        """True when ``password`` matches; a corrupt stored hash counts as a mismatch."""
        try:
            return self._hasher.verify(stored_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored_hash: str) -> bool:
        """True when the stored hash was made with other parameters than the configured ones."""
        try:
            return self._hasher.check_needs_rehash(stored_hash)
        except InvalidHashError:
            return True

    def verify_dummy(self, password: str) -> bool:
        """Spend the same time as a real verification, for a user that does not exist.

        Always returns False.
        """
        if self._dummy is None:
            with self._dummy_lock:
                if self._dummy is None:
                    self._dummy = self._hasher.hash("dummy password for timing equalisation")
        self.verify(self._dummy, password)
        return False
