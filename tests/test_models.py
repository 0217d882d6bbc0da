"""The models' own rules that the schema must state."""

from __future__ import annotations

import re

import email_validator
import pytest
from pydantic import ValidationError

from session.models import _EMAIL_PATTERN, SPECIAL_USE_DOMAINS, RegisterRequest


def test_special_use_domains_match_email_validator() -> None:
    assert set(SPECIAL_USE_DOMAINS) == set(email_validator.SPECIAL_USE_DOMAIN_NAMES)


@pytest.mark.parametrize(
    ("email", "accepted"),
    [
        ("alice@example.com", True),
        ("alice@test.example.com", True),
        ("alice@testing.com", True),
        ("__main__@j41h4em.d88ioz79.test", False),  # found by schemathesis (seed 5)
        ("alice@HOST.LOCAL", False),
        ("alice@localhost", False),
    ],
)
def test_schema_pattern_and_validator_agree(email: str, accepted: bool) -> None:
    assert bool(re.match(_EMAIL_PATTERN, email)) is accepted
    body = {"username": "alice", "password": "correct horse battery", "email": email}
    if accepted:
        assert RegisterRequest.model_validate(body).email is not None
    else:
        with pytest.raises(ValidationError):
            RegisterRequest.model_validate(body)
