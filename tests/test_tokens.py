"""session.tokens: shapes are whole-string matches, and a token names only a username the service could have."""

from __future__ import annotations

import base64
import hashlib

import pytest
from pydantic import ValidationError

from session import tokens
from session.models import LoginRequest, RegisterRequest, is_valid_username

SECRET = "A" * 43


def key(username: str) -> str:
    return base64.urlsafe_b64encode(username.encode()).rstrip(b"=").decode()


def test_a_minted_token_parses_back() -> None:
    token = tokens.mint("alice")
    parsed = tokens.parse(token)
    assert parsed is not None
    assert parsed.username == "alice"
    assert parsed.token_hash == tokens.hash_token(token)
    assert tokens.is_public_id(tokens.public_id(parsed.token_hash))


@pytest.mark.parametrize(
    "token",
    [
        pytest.param(key("alice\n") + "." + SECRET, id="user-part-with-trailing-newline"),
        pytest.param(f"{key('alice')}.{SECRET}\n", id="secret-with-trailing-newline"),
        pytest.param(f"{key('__x__')}.{SECRET}", id="reserved-id"),
        pytest.param(f"{key('__name__')}.{SECRET}", id="reserved-name"),
        pytest.param(f"{key('__' + 'a' * 60 + '__')}.{SECRET}", id="reserved-long"),
        pytest.param(f"{key('Alice')}.{SECRET}", id="upper-case"),
        pytest.param(f"{key('al')}.{SECRET}", id="too-short"),
        pytest.param(f"{key('a' * 65)}.{SECRET}", id="too-long"),
        pytest.param(f"{key('al ice')}.{SECRET}", id="space"),
        pytest.param(f"{key('alice')}=.{SECRET}", id="padded-key"),
        pytest.param(f"{key('alice')}.{SECRET[:-1]}", id="short-secret"),
        pytest.param(f"{key('alice')}{SECRET}", id="no-dot"),
        pytest.param(f"{key('alice')}.{SECRET}é", id="not-ascii"),
    ],
)
def test_malformed_tokens_are_none(token: str) -> None:
    assert tokens.parse(token) is None


@pytest.mark.parametrize("value", ["A" * 24 + "\n", "A" * 23, "A" * 25, "A" * 23 + "+"])
def test_public_id_shape_is_the_whole_string(value: str) -> None:
    assert not tokens.is_public_id(value)


@pytest.mark.parametrize(
    ("name", "valid", "stored"),
    [
        ("alice", True, True),
        ("Alice", True, False),
        ("a.b_c-9", True, True),
        ("_x_", True, True),
        ("__x_", True, True),
        ("__x__", False, False),
        ("__", False, False),
        ("____", False, False),
        ("__Name__", False, False),
        ("alice\n", False, False),
        ("\u212aelvin", False, False),
        ("ab", False, False),
        ("a" * 64, True, True),
        ("a" * 65, False, False),
    ],
)
def test_the_one_username_rule(name: str, valid: bool, stored: bool) -> None:
    assert is_valid_username(name) is valid
    # A token names the stored (lower-case) form only.
    assert (tokens.parse(f"{key(name)}.{SECRET}") is not None) is stored
    for model in (RegisterRequest, LoginRequest):
        body = {"username": name, "password": "correct horse battery"}
        if valid:
            assert model.model_validate(body).username == name.lower()
        else:
            with pytest.raises(ValidationError):
                model.model_validate(body)


def test_hash_and_handles_of_a_token() -> None:
    token = tokens.mint("alice")
    token_hash = tokens.hash_token(token)
    assert token_hash == hashlib.sha256(token.encode()).hexdigest()  # the documented storage key
    public = tokens.public_id(token_hash)
    assert public == tokens.public_id(token_hash)  # stable: the same session, the same handle
    assert public not in token_hash and public not in token  # no part of what authenticates
    assert tokens.log_id(token_hash) == token_hash[:12]
    assert tokens.mint("alice") != token  # a fresh secret every time
    assert tokens.public_id(tokens.hash_token(tokens.mint("alice"))) != public


def test_counter_keys_are_per_username_hashes() -> None:
    key = tokens.counter_key("alice")
    assert len(key) == 64 and int(key, 16) >= 0
    assert "alice" not in key
    assert key == tokens.counter_key("alice")
    assert len({key, tokens.counter_key("bob"), tokens.counter_key("alice ")}) == 3


def test_secrets_are_256_random_bits_and_never_repeat() -> None:
    # ASVS 7.2.3: reference tokens from a CSPRNG with at least 128 bits of entropy, unique.
    secrets = [tokens.mint("alice").split(".", 1)[1] for _ in range(2000)]
    assert len(set(secrets)) == len(secrets)
    decoded = [base64.urlsafe_b64decode(s + "=" * (-len(s) % 4)) for s in secrets]
    assert {len(d) for d in decoded} == {32}
    # Every bit position takes both values across the sample: no constant bits (a fixed prefix, a counter).
    for bit in range(256):
        ones = sum((d[bit // 8] >> (bit % 8)) & 1 for d in decoded)
        assert 800 < ones < 1200, f"bit {bit} is set in {ones} of 2000 secrets"
