"""session.dbsc: challenges, headers, instructions, and the proofs a browser signs, good and forged.

The keys are made here (joserfc, as a browser's would be: P-256); forged tokens
are assembled by hand where no library would sign them (``alg: none``, HS256
with a public key as its secret, a P-384 key under ES256).
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from http.cookies import SimpleCookie
from typing import Any

import pytest
from joserfc import jws
from joserfc.jwk import ECKey, RSAKey

from session import dbsc
from tests.conftest import ROOT

NOW = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
MINUTES = timedelta(minutes=5)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def b64json(value: object) -> str:
    return b64(json.dumps(value).encode())


def sign(key: ECKey, payload: object, **header: Any) -> str:
    """An ES256 JWT signed by ``key``, with ``header`` (default: typ dbsc+jwt and the key's public JWK)."""
    protected = {"alg": "ES256", "typ": "dbsc+jwt", "jwk": key.as_dict(private=False), **header}
    protected = {name: value for name, value in protected.items() if value is not None}
    return jws.serialize_compact(protected, json.dumps(payload).encode(), key, algorithms=["ES256"])


def rfc7638(jwk: dict[str, Any]) -> str:
    """RFC 7638's thumbprint of an EC key, computed here without the library under test's help."""
    canonical = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True)
    return b64(hashlib.sha256(canonical.encode()).digest())


@pytest.fixture
def key() -> ECKey:
    return ECKey.generate_key("P-256")


@pytest.fixture
def challenge() -> dbsc.Challenge:
    return dbsc.mint_challenge(NOW, MINUTES)


# --- challenges and headers ------------------------------------------------------------------------------


def test_a_challenge_is_random_stored_as_its_hash_and_expires() -> None:
    first, second = dbsc.mint_challenge(NOW, MINUTES), dbsc.mint_challenge(NOW, MINUTES)
    assert first.value != second.value
    assert len(first.value) == 43  # 256 bits, base64url
    assert first.stored == dbsc.StoredChallenge(dbsc.hash_challenge(first.value), NOW + MINUTES)
    assert first.value not in first.stored.hash
    assert dbsc.hash_challenge(first.value) != hashlib.sha256(first.value.encode()).hexdigest()  # domain-separated


def test_the_registration_and_challenge_headers() -> None:
    assert dbsc.registration_header("/dbsc/register", "abc_-1") == '(ES256);path="/dbsc/register";challenge="abc_-1"'
    assert dbsc.challenge_header("abc_-1", "sid-1") == '"abc_-1";id="sid-1"'
    assert dbsc.challenge_header('a"b\\c', "s") == '"a\\"b\\\\c";id="s"'  # sf-string escapes


@pytest.mark.parametrize("value", ["é", "a\nb", "\x00", "tab\t"])
def test_a_header_value_that_cannot_be_an_sf_string_is_a_programming_error(value: str) -> None:
    with pytest.raises(ValueError, match="structured-field string"):
        dbsc.registration_header("/r", value)
    with pytest.raises(ValueError, match="structured-field string"):
        dbsc.challenge_header("c", value)


# --- the bound cookie and the instructions ---------------------------------------------------------------


def test_the_bound_cookie_declares_exactly_what_it_sets() -> None:
    cookie = dbsc.BoundCookie("__Host-bound")
    assert cookie.attributes == "Path=/; Secure; HttpOnly; SameSite=Lax"
    header = cookie.set_cookie("v4lue", 600)
    assert header == "__Host-bound=v4lue; Max-Age=600; Path=/; Secure; HttpOnly; SameSite=Lax"
    parsed = SimpleCookie()
    parsed.load(header)
    morsel = parsed["__Host-bound"]
    assert (morsel.value, morsel["max-age"], morsel["path"], morsel["samesite"]) == ("v4lue", "600", "/", "Lax")
    assert morsel["secure"] is True and morsel["httponly"] is True
    assert "Max-Age" not in cookie.attributes
    assert cookie.clear() == "__Host-bound=; Max-Age=0; Path=/; Secure; HttpOnly; SameSite=Lax"
    strict = dbsc.BoundCookie("b", path="/api", same_site="Strict", http_only=False)
    assert strict.attributes == "Path=/api; Secure; SameSite=Strict"


@pytest.mark.parametrize(
    "fields",
    [{"name": "a b"}, {"name": ""}, {"name": "x=y"}, {"name": "b", "same_site": "lax"}, {"name": "b", "path": "x"}],
)
def test_a_bound_cookie_that_could_not_be_declared_is_refused(fields: dict[str, str]) -> None:
    with pytest.raises(ValueError, match="cookie"):
        dbsc.BoundCookie(**fields)


def test_the_session_instructions() -> None:
    cookie = dbsc.BoundCookie("__Host-bound")
    assert dbsc.session_instructions("sid", "/dbsc/refresh", "https://app.example.test", cookie) == {
        "session_identifier": "sid",
        "refresh_url": "/dbsc/refresh",
        "scope": {"origin": "https://app.example.test", "include_site": False},
        "credentials": [
            {"type": "cookie", "name": "__Host-bound", "attributes": "Path=/; Secure; HttpOnly; SameSite=Lax"}
        ],
    }


# --- registration ----------------------------------------------------------------------------------------


def test_a_registration_signed_by_its_own_key_binds_that_key(key: ECKey, challenge: dbsc.Challenge) -> None:
    token = sign(key, {"jti": challenge.value})
    bound = dbsc.verify_registration(token, challenge.stored, NOW)
    public = key.as_dict(private=False)
    assert bound.jwk == {k: public[k] for k in ("kty", "crv", "x", "y")}
    assert "d" not in bound.jwk
    assert bound.thumbprint == rfc7638(public)
    # Just before the challenge expires it still counts; at its expiry it does not.
    assert dbsc.verify_registration(token, challenge.stored, NOW + MINUTES - timedelta(microseconds=1)) == bound
    with pytest.raises(dbsc.ChallengeExpired) as caught:
        dbsc.verify_registration(token, challenge.stored, NOW + MINUTES)
    assert caught.value.reason == "challenge_expired"


def _hs256(header: dict[str, Any], payload: object, secret: bytes) -> str:
    signing_input = f"{b64json(header)}.{b64json(payload)}"
    return f"{signing_input}.{b64(hmac.new(secret, signing_input.encode(), 'sha256').digest())}"


def _forged(key: ECKey, other: ECKey, jti: str) -> dict[str, tuple[str, str]]:
    """Tokens that must be refused, each with the reason expected."""
    public = key.as_dict(private=False)
    good = sign(key, {"jti": jti})
    head, _, signature = good.split(".")
    p384 = ECKey.generate_key("P-384")
    rsa = RSAKey.generate_key(2048).as_dict(private=False)
    off_curve = {**public, "y": public["x"]}
    return {
        "another key signs, the header names mine": (sign(other, {"jti": jti}, jwk=public), "bad_signature"),
        "the payload changed after signing": (f"{head}.{b64json({'jti': jti, 'x': 1})}.{signature}", "bad_signature"),
        "the signature of another token": (
            f"{head}.{good.split('.')[1]}.{sign(key, {'jti': 'x'})[-86:]}",
            "bad_signature",
        ),
        "a truncated signature": (good[:-10], "bad_signature"),
        "the other challenge": (sign(key, {"jti": "another-challenge"}), "challenge_mismatch"),
        "no jti": (sign(key, {"nonce": jti}), "malformed"),
        "jti not a string": (sign(key, {"jti": 12}), "malformed"),
        "HS256 keyed with the public key": (
            _hs256({"alg": "HS256", "typ": "dbsc+jwt", "jwk": public}, {"jti": jti}, json.dumps(public).encode()),
            "wrong_alg",
        ),
        "alg none": (
            f"{b64json({'alg': 'none', 'typ': 'dbsc+jwt', 'jwk': public})}.{b64json({'jti': jti})}.",
            "wrong_alg",
        ),
        "alg es256 in lower case": (
            f"{b64json({'alg': 'es256', 'typ': 'dbsc+jwt'})}.{b64json({'jti': jti})}.x",
            "wrong_alg",
        ),
        "no alg": (f"{b64json({'typ': 'dbsc+jwt'})}.{b64json({'jti': jti})}.{signature}", "wrong_alg"),
        "typ JWT": (sign(key, {"jti": jti}, typ="JWT"), "wrong_typ"),
        "typ missing": (f"{b64json({'alg': 'ES256', 'jwk': public})}.{b64json({'jti': jti})}.{signature}", "wrong_typ"),
        "a P-384 jwk": (sign(key, {"jti": jti}, jwk=p384.as_dict(private=False)), "not_p256"),
        "an RSA jwk": (sign(key, {"jti": jti}, jwk=rsa), "not_p256"),
        "a private jwk": (sign(key, {"jti": jti}, jwk=key.as_dict(private=True)), "not_p256"),
        "a point off the curve": (sign(key, {"jti": jti}, jwk=off_curve), "not_p256"),
        "no jwk": (sign(key, {"jti": jti}, jwk=None), "not_p256"),
        "an oct jwk": (sign(key, {"jti": jti}, jwk={"kty": "oct", "k": "c2VjcmV0"}), "not_p256"),
        "no signature": (f"{head}.{b64json({'jti': jti})}.", "malformed"),
        "two segments": (f"{head}.{b64json({'jti': jti})}", "malformed"),
        "four segments": (good + ".x", "malformed"),
        "empty": ("", "malformed"),
        "header not base64url": (f"{head}!.{b64json({'jti': jti})}.{signature}", "malformed"),
        "header not JSON": (f"{b64(b'{nope')}.{b64json({'jti': jti})}.{signature}", "malformed"),
        "header a list": (f"{b64json(['ES256'])}.{b64json({'jti': jti})}.{signature}", "malformed"),
        "100 kB": (sign(key, {"jti": jti, "pad": "x" * 100_000}), "too_large"),
    }


FORGERIES = list(_forged(ECKey.generate_key("P-256"), ECKey.generate_key("P-256"), "c").keys())


@pytest.mark.parametrize("case", FORGERIES)
def test_a_forged_or_malformed_registration_is_refused(case: str, key: ECKey, challenge: dbsc.Challenge) -> None:
    token, reason = _forged(key, ECKey.generate_key("P-256"), challenge.value)[case]
    with pytest.raises(dbsc.DbscError) as caught:
        dbsc.verify_registration(token, challenge.stored, NOW)
    assert caught.value.reason == reason, caught.value.detail


def test_a_challenge_is_tied_to_its_session(key: ECKey) -> None:
    """A proof made for one session's challenge does not register another session (nor a new challenge)."""
    mine, theirs = dbsc.mint_challenge(NOW, MINUTES), dbsc.mint_challenge(NOW, MINUTES)
    token = sign(key, {"jti": mine.value})
    assert dbsc.verify_registration(token, mine.stored, NOW)
    with pytest.raises(dbsc.ChallengeMismatch):
        dbsc.verify_registration(token, theirs.stored, NOW)


def test_every_refusal_is_a_dbsc_error_with_its_reason() -> None:
    reasons = {cls.reason for cls in _subclasses(dbsc.DbscError)}
    assert reasons == {
        "malformed",
        "too_large",
        "wrong_alg",
        "wrong_typ",
        "not_p256",
        "bad_signature",
        "challenge_mismatch",
        "challenge_expired",
    }
    assert issubclass(dbsc.ProofTooLarge, dbsc.MalformedProof)


def _subclasses(cls: type[dbsc.DbscError]) -> list[type[dbsc.DbscError]]:
    return [sub for direct in cls.__subclasses__() for sub in (direct, *_subclasses(direct))]


# --- refresh ---------------------------------------------------------------------------------------------


def test_a_refresh_signed_by_the_bound_key_is_accepted(key: ECKey, challenge: dbsc.Challenge) -> None:
    registration = dbsc.mint_challenge(NOW, MINUTES)
    bound = dbsc.verify_registration(sign(key, {"jti": registration.value}), registration.stored, NOW)
    proof = jws.serialize_compact({"alg": "ES256", "typ": "dbsc+jwt"}, json.dumps({"jti": challenge.value}), key)
    assert dbsc.verify_refresh(proof, bound, challenge.stored, NOW) is None
    # The registration's challenge is not this refresh's.
    with pytest.raises(dbsc.ChallengeMismatch):
        dbsc.verify_refresh(proof, bound, registration.stored, NOW)


@pytest.mark.parametrize(
    ("case", "reason"),
    [
        ("another key", "bad_signature"),
        ("another key, named in the header", "bad_signature"),
        ("an old challenge", "challenge_mismatch"),
        ("typ JWT", "wrong_typ"),
        ("alg none", "wrong_alg"),
        ("100 kB", "too_large"),
    ],
)
def test_a_forged_refresh_is_refused(case: str, reason: str, key: ECKey, challenge: dbsc.Challenge) -> None:
    bound = dbsc.BoundKey(jwk=key.as_dict(private=False), thumbprint=key.thumbprint())
    thief = ECKey.generate_key("P-256")
    token = {
        "another key": sign(thief, {"jti": challenge.value}, jwk=None),
        "another key, named in the header": sign(thief, {"jti": challenge.value}),
        "an old challenge": sign(key, {"jti": dbsc.mint_challenge(NOW, MINUTES).value}, jwk=None),
        "typ JWT": sign(key, {"jti": challenge.value}, typ="JWT", jwk=None),
        "alg none": f"{b64json({'alg': 'none', 'typ': 'dbsc+jwt'})}.{b64json({'jti': challenge.value})}.",
        "100 kB": sign(key, {"jti": challenge.value, "pad": "x" * 100_000}, jwk=None),
    }[case]
    with pytest.raises(dbsc.DbscError) as caught:
        dbsc.verify_refresh(token, bound, challenge.stored, NOW)
    assert caught.value.reason == reason, caught.value.detail


def test_the_jose_library_is_loaded_only_when_a_proof_is_checked() -> None:
    code = "import sys, session.dbsc, main; assert 'joserfc' not in sys.modules, sorted(sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
