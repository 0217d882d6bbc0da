"""The origin rule of session/credentials.py (CORS and CSRF alike): plain values in, a verdict out, no emulator."""

from __future__ import annotations

import pytest

from session import credentials, errors
from session.config import load_settings

ALLOWED = frozenset(
    load_settings({"SESSION_ALLOWED_ORIGINS": "https://App.example.com,http://localhost:8080"}).allowed_origins
)


def test_the_settings_give_the_rule_lower_cased_origins() -> None:
    assert sorted(ALLOWED) == ["http://localhost:8080", "https://app.example.com"]


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("https://app.example.com", True),
        ("HTTPS://APP.EXAMPLE.COM", True),  # scheme and host are case-insensitive
        ("http://localhost:8080", True),
        ("http://app.example.com", False),  # another scheme is another origin
        ("https://app.example.com:443", False),  # compared as sent, not normalised: a browser never sends :443
        ("https://app.example.com.evil.test", False),  # no prefix match
        ("https://evil.test", False),
        ("http://localhost:8081", False),
        ("http://localhost", False),
        ("null", False),  # what a sandboxed frame or a file: page sends
        ("", False),
        (None, False),
    ],
)
def test_origin_allowed(origin: str | None, allowed: bool) -> None:
    assert credentials.origin_allowed(origin, ALLOWED) is allowed


def test_no_allowed_origins_allows_none() -> None:
    assert credentials.origin_allowed("https://app.example.com", frozenset()) is False


@pytest.mark.parametrize(
    ("origin", "referer", "claimed"),
    [
        ("https://App.example.com", None, "https://app.example.com"),
        ("https://a.test", "https://b.test/page", "https://a.test"),  # Origin wins over Referer
        (None, "https://App.example.com/path?q=1", "https://app.example.com"),
        (None, "/relative/path", None),
        (None, None, None),
    ],
)
def test_request_origin(origin: str | None, referer: str | None, claimed: str | None) -> None:
    assert credentials.request_origin(origin, referer) == claimed


@pytest.mark.parametrize(
    ("method", "origin", "referer", "rejected"),
    [
        ("GET", None, None, False),  # reading changes nothing
        ("POST", "https://app.example.com", None, False),
        ("DELETE", None, "https://app.example.com/settings", False),
        ("POST", "https://evil.test", None, True),
        ("PATCH", None, "https://evil.test/", True),
        ("DELETE", None, None, True),  # neither header: a browser would have sent Origin
    ],
)
def test_csrf_uses_the_same_rule(method: str, origin: str | None, referer: str | None, rejected: bool) -> None:
    if rejected:
        with pytest.raises(errors.CsrfRejected):
            credentials.enforce_csrf(method, origin, referer, "/sessions", ALLOWED)
    else:
        credentials.enforce_csrf(method, origin, referer, "/sessions", ALLOWED)
