"""GET /sessions and the CLI's listings, one page at a time (issue 14, part 2), against the emulator."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import pytest
from starlette.testclient import TestClient

from session import errors, pages, tokens
from tests.conftest import AppFactory, bearer, login, register
from tests.test_cli import cli, error_lines
from tests.test_lifecycle import FakeClock, use_clock

PASSWORD = "correct horse battery"


def walk(client: TestClient, token: str, limit: int) -> list[dict[str, Any]]:
    """Every page of the caller's sessions; asserts the page rules on the way."""
    pages_seen: list[list[dict[str, Any]]] = []
    page_token: str | None = None
    while True:
        params: dict[str, Any] = {"limit": limit}
        if page_token is not None:
            params["page_token"] = page_token
        response = client.get("/sessions", params=params, headers=bearer(token))
        assert response.status_code == 200, response.text
        body = response.json()
        assert set(body) == {"sessions", "next_page_token"}
        pages_seen.append(body["sessions"])
        page_token = body["next_page_token"]
        if page_token is None:
            break
        assert len(body["sessions"]) == limit  # only the last page may be short
    assert pages_seen[-1] or len(pages_seen) == 1  # a next token never leads to an empty page
    return [s for page in pages_seen for s in page]


def test_pages_hold_every_session_once_even_when_timestamps_tie(make_client: AppFactory) -> None:
    client = make_client()
    clock = FakeClock()
    use_clock(clock)
    register(client)
    tokens = [login(client) for _ in range(7)]  # one frozen clock: all seven share created_at
    clock.advance(1)
    tokens += [login(client) for _ in range(2)]
    me = tokens[-1]
    everything = client.get("/sessions", headers=bearer(me)).json()
    assert len(everything["sessions"]) == 9 and everything["next_page_token"] is None

    for limit in (1, 2, 4, 9, 100):
        walked = walk(client, me, limit)
        assert [s["id"] for s in walked] == [s["id"] for s in everything["sessions"]], limit
    ids = [s["id"] for s in everything["sessions"]]
    assert len(set(ids)) == 9
    created = [s["created_at"] for s in everything["sessions"]]
    assert created == sorted(created, reverse=True)
    assert [s["current"] for s in everything["sessions"]].count(True) == 1


@pytest.mark.slow
def test_the_default_page_is_50(make_client: AppFactory) -> None:
    client = make_client(SESSION_MAX_PER_USER="100")  # 51 sessions: more than the default cap of 20
    register(client)
    tokens = [login(client) for _ in range(51)]
    body = client.get("/sessions", headers=bearer(tokens[-1])).json()
    assert len(body["sessions"]) == 50 and body["next_page_token"]
    rest = client.get("/sessions", params={"page_token": body["next_page_token"]}, headers=bearer(tokens[-1]))
    assert len(rest.json()["sessions"]) == 1 and rest.json()["next_page_token"] is None


def test_dead_sessions_never_fill_a_page(make_client: AppFactory) -> None:
    """Liveness is judged after the query: expired documents (TTL has not removed them) are skipped, and
    the service reads on until the page is full, so a short page is always the last one."""
    client = make_client(SESSION_IDLE_SECONDS="600")
    clock = FakeClock()
    use_clock(clock)
    register(client)
    old = [login(client) for _ in range(5)]
    clock.advance(601)  # those five are now idle-expired, but their documents are still there
    fresh = [login(client) for _ in range(3)]
    clock.advance(1)
    fresh += [login(client) for _ in range(2)]
    me = fresh[-1]
    assert client.get("/profile", headers=bearer(old[0])).status_code == 401
    walked = walk(client, me, 2)
    assert len(walked) == 5
    first = client.get("/sessions", params={"limit": 4}, headers=bearer(me)).json()
    assert len(first["sessions"]) == 4 and first["next_page_token"]
    last = client.get(
        "/sessions", params={"limit": 4, "page_token": first["next_page_token"]}, headers=bearer(me)
    ).json()
    # One live session is left, behind which lie five dead documents: one page, and it is the last.
    assert len(last["sessions"]) == 1 and last["next_page_token"] is None


@pytest.mark.parametrize("value", ["0", "101", "-1", "abc", "1.5", " 5", "+5", "1_0", "²", "", "1000"])
def test_a_bad_limit_is_400_invalid_request(client: TestClient, value: str) -> None:
    register(client)
    token = login(client)
    response = client.get("/sessions", params={"limit": value}, headers=bearer(token))
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "invalid_request"
    assert body["errors"][0]["loc"] == ["query", "limit"]


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


BAD_TOKENS = [
    "",
    "!!!",
    "not-base64-at-all~",
    "a" * 300,
    _b64("s1:12:short"),  # not a public id
    _b64("s1:abc:" + "A" * 24),  # not a number
    _b64("s1:--5:" + "A" * 24),
    _b64("s1:99999999999999999999:" + "A" * 24),  # beyond year 9999
    _b64("s2:12:" + "A" * 24),  # another version
    _b64("u1:alice"),  # a token of `users list`
    _b64("s1:12:" + "A" * 24 + ":x"),
    _b64("s1:12:" + "A" * 24) + "==",  # padded: not the token the service gives out
    "czE6MTI6QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB\n",
]


@pytest.mark.parametrize("value", BAD_TOKENS)
def test_a_malformed_page_token_is_400_never_500(client: TestClient, value: str) -> None:
    register(client)
    token = login(client)
    response = client.get("/sessions", params={"page_token": value}, headers=bearer(token))
    assert response.status_code == 400, response.text
    body = response.json()
    assert body["code"] == "invalid_request"
    assert body["errors"][0]["loc"] == ["query", "page_token"]


def test_bad_paging_parameters_are_judged_before_authentication(client: TestClient) -> None:
    assert client.get("/sessions", params={"limit": "0"}).status_code == 400
    assert client.get("/sessions", params={"page_token": "!"}).status_code == 400


def test_a_token_from_another_users_listing_only_names_a_position(make_client: AppFactory) -> None:
    client = make_client()
    clock = FakeClock()
    use_clock(clock)
    alice_id = register(client, "alice")["user_id"]
    register(client, "bob")
    alice = [login(client, "alice") for _ in range(3)]
    bob = []
    for _ in range(4):
        clock.advance(1)
        bob.append(login(client, "bob"))
    alice_page = client.get("/sessions", params={"limit": 1}, headers=bearer(alice[-1])).json()
    foreign = alice_page["next_page_token"]
    assert foreign
    # What it holds: the page's last created_at and public id (already shown on that page), nothing else.
    created_at, public_id = pages.decode_sessions(foreign)
    shown = alice_page["sessions"][-1]
    assert public_id == shown["id"]
    assert created_at == datetime.fromisoformat(shown["created_at"]).astimezone(UTC)
    decoded = base64.urlsafe_b64decode(foreign + "==").decode()
    for secret in (alice_id, "alice", *(tokens.hash_token(t) for t in alice)):
        assert secret not in decoded

    # Bob presenting it gets his own sessions older than that position: alice's were all created earlier
    # than bob's, so none of his are after it, and none of hers can appear.
    response = client.get("/sessions", params={"page_token": foreign}, headers=bearer(bob[-1]))
    assert response.status_code == 200
    assert response.json() == {"sessions": [], "next_page_token": None}
    # And a position inside bob's range shows bob's, never alice's.
    bob_all = client.get("/sessions", headers=bearer(bob[-1])).json()["sessions"]
    alice_ids = {s["id"] for s in client.get("/sessions", headers=bearer(alice[-1])).json()["sessions"]}
    middle = pages.encode_sessions(datetime.fromisoformat(bob_all[1]["created_at"]), bob_all[1]["id"])
    rest = client.get("/sessions", params={"page_token": middle}, headers=bearer(alice[-1])).json()["sessions"]
    assert {s["id"] for s in rest} <= alice_ids
    rest = client.get("/sessions", params={"page_token": middle}, headers=bearer(bob[-1])).json()["sessions"]
    assert [s["id"] for s in rest] == [s["id"] for s in bob_all[2:]]


def test_page_tokens_round_trip_and_are_url_safe() -> None:
    when = datetime(2026, 11, 30, 6, 0, 0, 123456, tzinfo=UTC)
    token = pages.encode_sessions(when, "A" * 24)
    assert token.replace("-", "").replace("_", "").isalnum()
    assert pages.decode_sessions(token) == (when, "A" * 24)
    assert pages.decode_users(pages.encode_users("al.ice_-1")) == "al.ice_-1"
    with pytest.raises(pages.BadPageToken):
        pages.decode_users(token)
    with pytest.raises(pages.BadPageToken):
        pages.decode_users(_b64("u1:Alice"))  # not a stored (lower-case) username


@pytest.mark.parametrize(("parse", "foreign"), [(pages.sessions_position, "u1:alice"), (pages.users_position, "x")])
def test_one_parser_raises_the_one_error_at_a_neutral_location(parse: Any, foreign: str) -> None:
    """The HTTP edge and the CLI get the same error; only the edge says where it read the token (the query)."""
    assert parse(None) is None
    with pytest.raises(errors.InvalidRequest) as caught:
        parse(_b64(foreign), "`a listing`")
    assert isinstance(caught.value, pages.BadPageToken)
    assert caught.value.status == 400 and caught.value.code == "invalid_request"
    assert caught.value.errors == [
        {"loc": ["page_token"], "msg": "not a page token of `a listing`; start again without it"}
    ]
    assert caught.value.located("query").errors[0]["loc"] == ["query", "page_token"]


# --- the CLI -----------------------------------------------------------------------------------------


def test_cli_sessions_list_pages_and_prints_the_next_token(client: TestClient) -> None:
    register(client)
    for _ in range(3):
        login(client)
    everything = cli("sessions", "list", "alice")
    assert everything.returncode == 0, everything.stderr
    all_rows = everything.stdout.strip().splitlines()[1:]
    assert len(all_rows) == 3 and "next page" not in everything.stdout

    first = cli("sessions", "list", "alice", "--limit", "2")
    assert first.returncode == 0, first.stderr
    lines = first.stdout.strip().splitlines()
    assert lines[-1].startswith("next page: --page-token ")
    token = lines[-1].split()[-1]
    second = cli("sessions", "list", "alice", "--limit", "2", "--page-token", token)
    assert second.returncode == 0, second.stderr
    rows = lines[1:-1] + second.stdout.strip().splitlines()[1:]
    assert rows == all_rows
    assert "next page" not in second.stdout


@pytest.mark.parametrize(
    ("args", "status"),
    [
        (("--limit", "0"), 2),
        (("--limit", "101"), 2),
        (("--limit", "x"), 2),
        (("--page-token", "!!"), 1),
        (("--limit", "2", "--page-token", _b64("u1:alice")), 1),
    ],
)
def test_cli_bad_paging_is_one_line(client: TestClient, args: tuple[str, ...], status: int) -> None:
    register(client)
    result = cli("sessions", "list", "alice", *args)
    assert result.returncode == status
    if status == 1:
        assert error_lines(result) == [
            "error: invalid input: page_token: not a page token of `sessions list`; start again without it"
        ]
    else:
        assert "expected a whole number from 1 to 100" in result.stderr
        assert "Traceback" not in result.stderr
