"""JSON body parsing (session/http.py ``parse_json``): strict where parsers differ. Plain bytes in, no emulator."""

from __future__ import annotations

import pytest

from session import errors
from session.http import parse_json

ACCEPTED = [
    (b'{"username":"alice"}', {"username": "alice"}),
    (b' {"a": [1, 2.5, true, null]} \n', {"a": [1, 2.5, True, None]}),
    ('{"name":"Zoë ✓"}'.encode(), {"name": "Zoë ✓"}),
    (b'{"name":"\\u00e9\\ud83d\\ude00"}', {"name": "é😀"}),  # a surrogate pair is one character
    (b'{"a":{"b":1},"c":{"b":2}}', {"a": {"b": 1}, "c": {"b": 2}}),  # one key in two objects is not a duplicate
    (b"[]", []),  # valid JSON; the model rejects it later (invalid_request, not invalid_json)
    (b'"text"', "text"),
]


@pytest.mark.parametrize(("raw", "value"), ACCEPTED)
def test_accepted(raw: bytes, value: object) -> None:
    assert parse_json(raw) == value


# (the body, what is wrong with it, the detail the client reads)
NOT_JSON = "the body is not valid JSON"
TWICE = "the body has an object with the same key twice"
REJECTED = [
    (b"", NOT_JSON),
    (b"{", NOT_JSON),
    (b"{'a': 1}", NOT_JSON),
    (b'{"a":1,}', NOT_JSON),
    (b'\xef\xbb\xbf{"a":1}', NOT_JSON),  # a UTF-8 BOM
    ('{"a":"é"}'.encode("latin-1"), NOT_JSON),
    ('{"a":1}'.encode("utf-16"), NOT_JSON),
    (b'{"a":NaN}', NOT_JSON),
    (b'{"a":Infinity}', NOT_JSON),
    (b'{"a":-Infinity}', NOT_JSON),
    (b'{"a":"\\ud800"}', NOT_JSON),  # a lone surrogate escape is not text
    (b'{"\\udfff":1}', NOT_JSON),  # in a key too
    (b"[" * 100_000 + b"]" * 100_000, NOT_JSON),  # nesting deep enough to exhaust the recursion limit
    (b'{"username":"alice","username":"admin"}', TWICE),
    (b'{"a":{"k":1,"k":1}}', TWICE),  # nested, and even with the same value
]


@pytest.mark.parametrize(("raw", "detail"), REJECTED)
def test_rejected_as_invalid_json(raw: bytes, detail: str) -> None:
    with pytest.raises(errors.InvalidJson) as caught:
        parse_json(raw)
    assert (caught.value.status, caught.value.code) == (400, "invalid_json")
    assert str(caught.value) == detail
    assert caught.value.__cause__ is None  # nothing of the parser's own message reaches the client
