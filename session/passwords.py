"""Password hashing and verification with argon2id (argon2-cffi).

Hashing is deliberate CPU work: the ``*_async`` methods run it on a small
thread pool of its own, so the event loop keeps serving other requests.
"""

from __future__ import annotations

import asyncio
import base64
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError
from argon2.low_level import ARGON2_VERSION

from session.config import Settings

T = TypeVar("T")


class Passwords:
    """Hash, verify and rehash passwords with the configured argon2id parameters."""

    def __init__(self, settings: Settings) -> None:
        self._hasher = PasswordHasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
            type=Type.ID,
        )
        # Ready before the first request, at no cost: see _unmatchable_hash.
        self._dummy = _unmatchable_hash(self._hasher)
        # As many hashing threads as CPUs: more would not finish sooner, and each
        # thread keeps its last work buffer (memory_cost KiB) in its malloc arena,
        # so the bound is also what caps the instance's memory for hashing.
        self._workers = max(1, os.cpu_count() or 1)
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()

    async def _run(self, fn: Callable[..., T], *args: str) -> T:
        if self._executor is None:  # created in the serving process, not before a fork
            with self._executor_lock:
                if self._executor is None:
                    self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="argon2")
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def hash_async(self, password: str) -> str:
        """``hash`` on the hashing threads."""
        return await self._run(self.hash, password)

    async def verify_async(self, stored_hash: str, password: str) -> bool:
        """``verify`` on the hashing threads."""
        return await self._run(self.verify, stored_hash, password)

    async def verify_dummy_async(self, password: str) -> bool:
        """``verify_dummy`` on the hashing threads."""
        return await self._run(self.verify_dummy, password)

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
        self.verify(self._dummy, password)
        return False


def _b64(data: bytes) -> str:
    return base64.b64encode(data).rstrip(b"=").decode("ascii")


def _unmatchable_hash(hasher: PasswordHasher) -> str:
    """A PHC string with the configured parameters, salt and digest lengths, but a random digest.

    Verifying a password against it runs argon2id exactly as against a real
    hash (same memory, iterations, lanes, salt and output lengths), and no
    password matches it (that would take a 256-bit preimage). It is made from
    random bytes, not by hashing, so it is ready at start-up at no cost: the
    first unknown-user login pays the same as any other.
    """
    return (
        f"$argon2id$v={ARGON2_VERSION}$m={hasher.memory_cost},t={hasher.time_cost},p={hasher.parallelism}"
        f"${_b64(os.urandom(hasher.salt_len))}${_b64(os.urandom(hasher.hash_len))}"
    )
