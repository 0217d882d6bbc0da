"""The unknown-user dummy hash: ready at start-up, made without hashing, and as costly to verify as a real one."""

from __future__ import annotations

import argon2
import pytest
from argon2.exceptions import VerifyMismatchError

from session.config import load_settings
from session.passwords import Passwords
from tests.conftest import AppFactory, main_module


def test_the_dummy_is_ready_before_the_first_request(make_client: AppFactory) -> None:
    client = make_client()
    passwords = main_module().api_instance.service.passwords
    dummy = passwords._dummy
    assert isinstance(dummy, str) and dummy.startswith("$argon2id$")
    assert passwords._executor is None  # nothing was hashed to make it: the pool does not even exist yet
    # The very first request is an unknown-user login: it uses that dummy, and builds nothing.
    reply = client.post("/login", json={"username": "nobody", "password": "correct horse battery"})
    assert reply.status_code == 401
    assert passwords._dummy is dummy


@pytest.mark.parametrize(
    "env",
    [{}, {"SESSION_ARGON2_MEMORY_KIB": "32768", "SESSION_ARGON2_TIME_COST": "3", "SESSION_ARGON2_PARALLELISM": "2"}],
)
def test_the_dummy_costs_what_a_real_hash_costs(env: dict[str, str]) -> None:
    passwords = Passwords(load_settings(env))
    real = passwords.hash("a real password")
    assert argon2.extract_parameters(passwords._dummy) == argon2.extract_parameters(real)
    assert not passwords.needs_rehash(passwords._dummy)
    # A well-formed hash: argon2 runs in full and then finds a mismatch (a malformed one would fail at once).
    with pytest.raises(VerifyMismatchError):
        passwords._hasher.verify(passwords._dummy, "a real password")
    assert passwords.verify_dummy("a real password") is False


def test_each_instance_has_its_own_random_dummy() -> None:
    settings = load_settings({})
    assert Passwords(settings)._dummy != Passwords(settings)._dummy


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
