"""The unknown-user dummy hash: ready at start-up, made without hashing, and as costly to verify as a real one."""

from __future__ import annotations

import threading
from typing import Any, Literal

import argon2
import pytest
from argon2 import PasswordHasher
from argon2.exceptions import VerifyMismatchError

from session.config import load_settings
from session.passwords import Passwords
from tests.conftest import AppFactory


class Spy:
    """Records each hash argon2 is asked to hash with or verify against; the real work still runs."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.hashed: list[str] = []
        self.verified: list[str] = []
        real_hash, real_verify = PasswordHasher.hash, PasswordHasher.verify

        def hash_(hasher: PasswordHasher, password: str | bytes, **kwargs: Any) -> str:
            self.hashed.append(str(password))
            return real_hash(hasher, password, **kwargs)

        def verify(hasher: PasswordHasher, stored: str | bytes, password: str | bytes) -> Literal[True]:
            self.verified.append(str(stored))
            return real_verify(hasher, stored, password)

        monkeypatch.setattr(PasswordHasher, "hash", hash_)
        monkeypatch.setattr(PasswordHasher, "verify", verify)

    def dummy_of(self, passwords: Passwords) -> str:
        """The hash an unknown user's password is verified against, as argon2 is handed it."""
        before = len(self.verified)
        assert passwords.verify_dummy("a real password") is False
        [dummy] = self.verified[before:]
        return dummy


def _argon2_threads() -> int:
    return sum(1 for t in threading.enumerate() if t.name.startswith("argon2"))


def test_the_dummy_is_ready_before_the_first_request(make_client: AppFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = Spy(monkeypatch)
    threads = _argon2_threads()
    client = make_client()
    assert spy.hashed == []  # nothing was hashed to make it ...
    assert _argon2_threads() == threads  # ... and the hashing pool does not even exist yet
    # The very first request is an unknown-user login: it verifies against a dummy made at start-up.
    reply = client.post("/login", json={"username": "nobody", "password": "correct horse battery"})
    assert reply.status_code == 401
    assert spy.hashed == []
    [dummy] = spy.verified
    assert dummy.startswith("$argon2id$")
    # The same dummy every time: nothing is built on the request path.
    reply = client.post("/login", json={"username": "nobody", "password": "another guess"})
    assert spy.verified == [dummy, dummy]


@pytest.mark.parametrize(
    "env",
    [{}, {"SESSION_ARGON2_MEMORY_KIB": "32768", "SESSION_ARGON2_TIME_COST": "3", "SESSION_ARGON2_PARALLELISM": "2"}],
)
def test_the_dummy_costs_what_a_real_hash_costs(env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> None:
    spy = Spy(monkeypatch)
    passwords = Passwords(load_settings(env))
    real = passwords.hash("a real password")
    dummy = spy.dummy_of(passwords)
    assert argon2.extract_parameters(dummy) == argon2.extract_parameters(real)
    assert not passwords.needs_rehash(dummy)
    # A well-formed hash: argon2 runs in full and then finds a mismatch (a malformed one would fail at once).
    with pytest.raises(VerifyMismatchError):
        PasswordHasher.from_parameters(argon2.extract_parameters(real)).verify(dummy, "a real password")


def test_each_instance_has_its_own_random_dummy(monkeypatch: pytest.MonkeyPatch) -> None:
    spy = Spy(monkeypatch)
    settings = load_settings({})
    assert spy.dummy_of(Passwords(settings)) != spy.dummy_of(Passwords(settings))


def test_hash_verify_and_rehash() -> None:
    passwords = Passwords(load_settings({}))
    stored = passwords.hash("correct horse battery")
    assert stored.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert passwords.verify(stored, "correct horse battery") is True
    assert passwords.verify(stored, "correct horse batterY") is False
    assert not passwords.needs_rehash(stored)
    stronger = Passwords(load_settings({"SESSION_ARGON2_TIME_COST": "3"}))
    assert stronger.needs_rehash(stored)
    assert stronger.verify(stored, "correct horse battery") is True  # old hashes keep working until rehashed


@pytest.mark.parametrize("stored", ["", "not a hash", "$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$"])
def test_a_corrupt_stored_hash_is_a_mismatch_and_needs_rehash(stored: str) -> None:
    passwords = Passwords(load_settings({}))
    assert passwords.verify(stored, "correct horse battery") is False
    assert passwords.needs_rehash(stored)
