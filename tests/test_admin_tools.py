"""The admin's tools of issue 14 (part 4), against the emulator: real CLI processes, real HTTP, real races.

`users list`, `users set-password`, `users delete`, `sessions revoke-everyone`, and the
one audit line that every admin command writes. The races release real threads with a
barrier against one app built by functions-framework and repeat over several trials,
as tests/test_races.py does.
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from session import tokens
from session.models import SessionRecord, UserRecord
from tests.conftest import AppFactory, bearer, emulator_get, login, main_module, register
from tests.support import admin, race_logins_against, still_working
from tests.test_cli import cli, error_lines, log_events

PASSWORD = "correct horse battery"
NEW_PASSWORD = "an admin-chosen passphrase"
TRIALS = 8


@pytest.fixture(autouse=True)
def _state_home(tmp_path: Path) -> None:
    os.environ["XDG_STATE_HOME"] = str(tmp_path / "state")


def _run(client: TestClient, work: Callable[[], Awaitable[Any]]) -> Any:
    """Run a coroutine on the app's own event loop (the store's client belongs to it)."""
    return client.portal.call(work)  # type: ignore[union-attr]


def _all_sessions(client: TestClient) -> list[tuple[str, SessionRecord]]:
    store = main_module().api_instance.service.store
    return list(_run(client, lambda: store.scan_sessions(10_000)))


def _user(client: TestClient, name: str) -> UserRecord | None:
    store = main_module().api_instance.service.store
    found = _run(client, lambda: store.read_user(name))
    return None if found is None else found.record


def _exists(host: str, project: str, path: str) -> bool:
    try:
        emulator_get(host, project, path)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            return False
        raise
    return True


def _emulator(host: str, project: str, path: str, method: str = "GET", body: Any = None) -> dict[str, Any]:
    url = f"http://{host}/v1/projects/{project}/databases/(default)/documents{path}"
    data = None if body is None else json.dumps(body).encode()
    headers = {"Content-Type": "application/json", "Authorization": "Bearer owner"}  # listCollectionIds needs it
    request = urllib.request.Request(url, data=data, method=method, headers=headers)
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read()
    return dict(json.loads(text)) if text else {}


def _subcollections(host: str, project: str, path: str) -> list[str]:
    return list(_emulator(host, project, f"/{path}:listCollectionIds", "POST", {}).get("collectionIds", []))


# --- users list -------------------------------------------------------------------------------------


def test_users_list_pages_through_every_user_once(client: TestClient, tmp_path: Path) -> None:
    names = ["erin", "carol", "alice", "dave", "bob"]
    for name in names:
        register(client, name)
    seen: list[str] = []
    args = ["users", "list", "--limit", "2"]
    for _ in range(5):
        result = cli(*args)
        assert result.returncode == 0, result.stderr
        lines = result.stdout.strip().splitlines()
        assert lines[0].split()[:2] == ["USERNAME", "USER"]
        more = lines[-1].startswith("next page: --page-token ")
        rows = lines[1:-1] if more else lines[1:]
        assert len(rows) == (2 if more else 1)
        seen += [row.split()[0] for row in rows]
        if not more:
            break
        args = ["users", "list", "--limit", "2", "--page-token", lines[-1].split()[-1]]
    assert seen == sorted(names)
    assert "$argon2" not in result.stdout  # never a hash
    events = log_events(tmp_path)
    assert [e["event"] for e in events] == ["users_listed"] * 3
    assert [e["count"] for e in events] == [2, 2, 1]


def test_users_list_refuses_a_foreign_token(client: TestClient) -> None:
    register(client)
    # A sessions page token (of "s1:12:" and a public id): not one of `users list`.
    result = cli("users", "list", "--page-token", "czE6MTI6QUFBQUFBQUFBQUFBQUFBQUFBQUFBQUFB")
    assert result.returncode == 1
    assert error_lines(result) == [
        "error: invalid input: page_token: not a page token of `users list`; start again without it"
    ]


# --- users set-password -------------------------------------------------------------------------------


def test_set_password_ends_every_session_and_only_the_new_password_works(client: TestClient, tmp_path: Path) -> None:
    register(client)
    old = [login(client) for _ in range(2)]
    before = _user(client, "alice")
    assert before is not None
    result = cli("users", "set-password", "Alice", "--password-stdin", stdin=NEW_PASSWORD + "\n")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "alice: password set, 2 session(s) revoked"
    assert still_working(client, old) == []
    assert client.post("/login", json={"username": "alice", "password": PASSWORD}).status_code == 401
    assert login(client, "alice", NEW_PASSWORD)
    after = _user(client, "alice")
    assert after is not None
    assert after.auth_epoch == before.auth_epoch + 1 and after.password_hash != before.password_hash
    [event] = log_events(tmp_path)
    assert (event["event"], event["command"], event["target"]) == ("user_password_set", "users set-password", "alice")
    assert event["sessions_revoked"] == 2 and event["user_id"] == after.user_id
    log_text = (tmp_path / "state" / "session-service" / "admin.jsonl").read_text()
    assert NEW_PASSWORD not in log_text and after.password_hash not in log_text


@pytest.mark.parametrize(
    ("password", "message"),
    [("short", "at least 8 characters"), ("x" * 1025, "at most 1024 characters")],
)
def test_set_password_refuses_what_register_would(client: TestClient, password: str, message: str) -> None:
    register(client)
    token = login(client)
    result = cli("users", "set-password", "alice", "--password-stdin", stdin=password + "\n")
    assert result.returncode == 1
    [line] = error_lines(result)
    assert line.startswith("error: invalid input: password: ") and message in line
    assert client.get("/profile", headers=bearer(token)).status_code == 200  # nothing changed


def test_set_password_without_a_terminal_is_a_usage_error(project: str, tmp_path: Path) -> None:
    result = cli("users", "set-password", "alice")
    assert result.returncode == 2
    assert error_lines(result) == ["error: no terminal to ask for the password: pipe it in and pass --password-stdin"]
    assert not (tmp_path / "state").exists()  # nothing attempted, nothing logged


@pytest.mark.slow
def test_login_in_flight_does_not_survive_set_password(make_client: AppFactory) -> None:
    """Logins with the old password race the admin's set-password: none of their sessions may work after it."""
    client = make_client()
    caught: list[int] = []
    leftovers: list[int] = []
    for trial in range(TRIALS):
        username = f"setpw{trial}"
        register(client, username)

        def change(username: str = username) -> None:
            _run(client, lambda: admin().set_password(username, NEW_PASSWORD))

        stolen = race_logins_against(client, username, change)
        caught.append(len(still_working(client, stolen)))
        user = _user(client, username)
        assert user is not None
        # No void document is left behind either: every stored session of the user is at the new epoch.
        leftovers.append(
            sum(1 for _, s in _all_sessions(client) if s.user_id == user.user_id and s.auth_epoch != user.auth_epoch)
        )
    assert sum(caught) == 0, f"sessions opened with the old password outlived set-password: {caught}"
    assert sum(leftovers) == 0, f"void session documents left behind: {leftovers}"


# --- users delete -----------------------------------------------------------------------------------------


def test_users_delete_removes_the_user_sessions_counter_and_every_subcollection(
    client: TestClient, project: str, emulator_host: str, tmp_path: Path
) -> None:
    from google.cloud import firestore

    alice_id = register(client, "alice")["user_id"]
    register(client, "bob")
    alice = [login(client, "alice") for _ in range(2)]
    bob = login(client, "bob")
    assert client.post("/login", json={"username": "alice", "password": "wrong guess"}).status_code == 401
    counter = f"login_attempts/{tokens.counter_key('alice')}"
    assert _exists(emulator_host, project, counter)

    # Documents other parts add below a user (a session ledger, device documents), at two depths, put there
    # with the client itself; and one below bob, which must stay.
    db = firestore.Client(project=project)
    try:
        users = db.collection("users")
        users.document("alice").collection("ledger").document("e1").set({"at": 1})
        users.document("alice").collection("ledger").document("e2").set({"at": 2})
        users.document("alice").collection("devices").document("d1").set({"name": "laptop"})
        users.document("alice").collection("devices").document("d1").collection("seen").document("s1").set({"n": 1})
        # A document that exists only as the parent of a subcollection ("missing" in Firestore's terms).
        users.document("alice").collection("ghosts").document("g1").collection("deep").document("x").set({"n": 2})
        users.document("bob").collection("ledger").document("e1").set({"at": 1})
    finally:
        db.close()  # type: ignore[no-untyped-call]
    assert set(_subcollections(emulator_host, project, "users/alice")) == {"ledger", "devices", "ghosts", "events"}

    result = cli("users", "delete", "alice")
    assert result.returncode == 0, result.stderr
    # 6 put there above, the device of the browser both logins came from (its device cookie: README
    # "Lockout") and the two logins' security events; the account's ledger goes in the user document's own
    # commit, so it is not counted here.
    assert result.stdout.strip() == "alice: deleted, 2 session(s) and 9 document(s) below the user"
    assert not _exists(emulator_host, project, "users/alice")
    assert _subcollections(emulator_host, project, "users/alice") == []
    assert _subcollections(emulator_host, project, "users/alice/devices/d1") == []
    assert _subcollections(emulator_host, project, "users/alice/ghosts/g1") == []
    assert not _exists(emulator_host, project, counter)
    assert [s.user_id for _, s in _all_sessions(client)] == [_user_id(client, "bob")]
    assert still_working(client, alice) == []
    assert still_working(client, [bob]) == [bob]
    assert _exists(emulator_host, project, "users/bob/ledger/e1")

    # The name is free again; a new alice is a new user, and the old tokens stay dead.
    new_id = register(client, "alice")["user_id"]
    assert new_id != alice_id
    assert still_working(client, alice) == []
    [event] = log_events(tmp_path)
    assert event["event"] == "user_deleted" and event["target"] == "alice" and event["user_id"] == alice_id
    assert (event["sessions_deleted"], event["documents_deleted"]) == (2, 9)


def _user_id(client: TestClient, name: str) -> str:
    user = _user(client, name)
    assert user is not None
    return user.user_id


def test_users_delete_again_after_an_interruption_removes_what_was_left(
    client: TestClient, project: str, emulator_host: str
) -> None:
    register(client)
    for _ in range(2):
        login(client)
    # As if a delete stopped right after removing the user document.
    _emulator(emulator_host, project, "/users/alice", "DELETE")
    result = cli("users", "delete", "alice")
    assert result.returncode == 0, result.stderr
    assert (
        result.stdout.strip()
        # The documents below the user: its session ledger, its device (the device cookie of the logins) and the
        # two logins' security events.
        == "alice: was already deleted; removed what was left, 2 session(s) and 4 document(s) below the user"
    )
    assert _all_sessions(client) == []
    again = cli("users", "delete", "alice")
    assert again.returncode == 1
    assert error_lines(again) == ["error: no user 'alice'"]


@pytest.mark.slow
def test_login_racing_users_delete_leaves_no_live_session_and_no_document(make_client: AppFactory) -> None:
    """Logins that verified the password before the delete race it: none may keep a session, none may leave one."""
    client = make_client()
    caught: list[int] = []
    leftovers: list[int] = []
    for trial in range(TRIALS):
        username = f"del{trial}"
        user_id = register(client, username)["user_id"]

        def delete(username: str = username) -> None:
            _run(client, lambda: admin().delete_user(username))

        stolen = race_logins_against(client, username, delete)
        caught.append(len(still_working(client, stolen)))
        leftovers.append(sum(1 for _, s in _all_sessions(client) if s.user_id == user_id))
        assert _user(client, username) is None
    assert sum(caught) == 0, f"sessions outlived the user's deletion: {caught}"
    assert sum(leftovers) == 0, f"session documents of a deleted user were left behind: {leftovers}"


# --- sessions revoke-everyone ---------------------------------------------------------------------------


def test_revoke_everyone_refuses_without_yes(client: TestClient, tmp_path: Path) -> None:
    register(client)
    token = login(client)
    result = cli("sessions", "revoke-everyone")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: sessions revoke-everyone ends every session of every user: pass --yes to do it"
    ]
    assert client.get("/profile", headers=bearer(token)).status_code == 200
    assert not (tmp_path / "state").exists()


def test_revoke_everyone_ends_every_session_in_batches_with_progress(make_client: AppFactory, tmp_path: Path) -> None:
    client = make_client()
    names = [f"user{i}" for i in range(5)]
    for name in names:
        register(client, name)
    issued = [login(client, name) for name in names for _ in range(2)]
    result = cli("sessions", "revoke-everyone", "--yes", "--batch-size", "2")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "every session ended: 5 user(s); 10 of 10 session document(s) deleted"
    progress = [line for line in result.stderr.splitlines() if line.startswith("revoke-everyone: ")]
    assert progress == [
        "revoke-everyone: users: 2 ended so far (last: user1)",
        "revoke-everyone: users: 4 ended so far (last: user3)",
        "revoke-everyone: users: 5 ended so far (last: user4)",
        "revoke-everyone: sessions: 2 scanned, 2 deleted",
        "revoke-everyone: sessions: 4 scanned, 4 deleted",
        "revoke-everyone: sessions: 6 scanned, 6 deleted",
        "revoke-everyone: sessions: 8 scanned, 8 deleted",
        "revoke-everyone: sessions: 10 scanned, 10 deleted",
    ]
    assert still_working(client, issued) == []
    assert _all_sessions(client) == []
    assert all((_user(client, n) or pytest.fail(n)).auth_epoch == 1 for n in names)
    [event] = log_events(tmp_path)
    assert (event["event"], event["command"], event["target"]) == (
        "sessions_revoked_everyone",
        "sessions revoke-everyone",
        "*",
    )
    assert (event["users"], event["sessions_scanned"], event["sessions_deleted"]) == (5, 10, 10)

    # Users log in again; a re-run (after an interruption, say) ends those sessions too, and only deletes
    # documents that are dead.
    again = [login(client, name) for name in names]
    rerun = cli("sessions", "revoke-everyone", "--yes", "--batch-size", "3")
    assert rerun.returncode == 0, rerun.stderr
    assert still_working(client, again) == []
    assert _all_sessions(client) == []

    # --resume-after continues after the last user a progress line named: the users before it keep theirs.
    kept = [login(client, name) for name in names]
    resumed = cli("sessions", "revoke-everyone", "--yes", "--resume-after", "user2")
    assert resumed.returncode == 0, resumed.stderr
    assert resumed.stdout.strip() == "every session ended: 2 user(s); 2 of 5 session document(s) deleted"
    assert still_working(client, kept) == kept[:3]


def test_revoke_everyone_leaves_sessions_opened_after_it_and_deletes_only_dead_documents(client: TestClient) -> None:
    register(client, "alice")
    register(client, "bob")
    login(client, "alice")

    done = _run(client, lambda: admin().revoke_everyone(page_size=1))
    assert (done.users, done.scanned, done.deleted) == (2, 1, 1)
    fresh = login(client, "bob")
    rerun_sweep = _run(client, lambda: admin().revoke_everyone(page_size=5, resume_after="bob"))
    assert (rerun_sweep.users, rerun_sweep.scanned, rerun_sweep.deleted) == (0, 1, 0)
    assert still_working(client, [fresh]) == [fresh]


def _race_logins_against_everyone(
    client: TestClient, usernames: list[str], attackers: int = 4
) -> tuple[list[str], list[str]]:
    """Log in as the users from ``attackers`` threads while revoke-everyone runs (a barrier starts them).

    Returns the tokens of logins the service had begun before revoke-everyone began (each was in flight
    when it started: none may survive), and all tokens given out.
    """
    start = threading.Barrier(attackers + 1)
    done = threading.Event()
    service = main_module().api_instance.service
    logins: list[tuple[float, str]] = []
    began: list[float] = []
    lock = threading.Lock()
    real_login = service.login

    async def timed_login(*args: Any, **kwargs: Any) -> Any:
        entered = time.monotonic()
        result = await real_login(*args, **kwargs)
        with lock:
            logins.append((entered, result.token))
        return result

    def attack(first: int) -> None:
        start.wait()
        i = first
        while not done.is_set():
            response = client.post("/login", json={"username": usernames[i % len(usernames)], "password": PASSWORD})
            assert response.status_code in (200, 401, 429), response.text
            i += 1

    async def revoke() -> None:
        began.append(time.monotonic())
        await admin().revoke_everyone(page_size=2)

    def act() -> None:
        start.wait()
        time.sleep(0.02)  # let the first logins get under way
        try:
            _run(client, revoke)
        finally:
            done.set()

    service.login = timed_login
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=attackers + 1) as pool:
            futures = [pool.submit(attack, n) for n in range(attackers)]
            pool.submit(act).result()
            for future in futures:
                future.result()
    finally:
        del service.login
    in_flight = [token for entered, token in logins if entered < began[0]]
    return in_flight, [token for _, token in logins]


@pytest.mark.slow
def test_logins_in_flight_do_not_survive_revoke_everyone(make_client: AppFactory) -> None:
    client = make_client()
    caught: list[int] = []
    dead_documents: list[int] = []
    for trial in range(5):
        names = [f"t{trial}u{i}" for i in range(5)]
        for name in names:
            register(client, name)
        in_flight, _ = _race_logins_against_everyone(client, names)
        caught.append(len(still_working(client, in_flight)))
        # Every document left is a live session (one opened after its user's epoch moved): nothing void stays.
        users = {name: _user(client, name) for name in names}
        dead_documents.append(
            sum(
                1
                for _, s in _all_sessions(client)
                if s.username in users and (users[s.username] is None or users[s.username].auth_epoch != s.auth_epoch)  # type: ignore[union-attr]
            )
        )
    assert sum(caught) == 0, f"sessions in flight outlived revoke-everyone: {caught}"
    assert sum(dead_documents) == 0, f"void session documents left behind: {dead_documents}"


# --- one audit line per command ------------------------------------------------------------------------

AUDITED = [
    (("users", "create", "Carol", "--password-stdin"), "user_created", "carol"),
    (("users", "set-permissions", "alice", "read", "orders:write"), "user_permissions_set", "alice"),
    (("users", "disable", "alice"), "user_disabled", "alice"),
    (("users", "enable", "alice"), "user_enabled", "alice"),
    (("users", "list"), "users_listed", "*"),
    (("users", "set-password", "alice", "--password-stdin"), "user_password_set", "alice"),
    (("sessions", "list", "alice"), "sessions_listed", "alice"),
    (("sessions", "list", "alice", "--limit", "1"), "sessions_listed", "alice"),
    (("sessions", "revoke-all", "alice"), "sessions_revoked_all", "alice"),
    (("sessions", "revoke-everyone", "--yes"), "sessions_revoked_everyone", "*"),
    (("users", "delete", "alice"), "user_deleted", "alice"),
    # Failures write one line too.
    (("users", "disable", "nobody"), "admin_command_failed", "nobody"),
    (("users", "delete", "nobody"), "admin_command_failed", "nobody"),
    (("users", "set-password", "nobody", "--password-stdin"), "admin_command_failed", "nobody"),
    (("sessions", "list", "alice", "--page-token", "x"), "admin_command_failed", "alice"),
]


@pytest.mark.parametrize(("args", "event", "target"), AUDITED, ids=[" ".join(a[0][:2]) + f" {a[1]}" for a in AUDITED])
def test_every_admin_command_writes_exactly_one_audit_line(
    client: TestClient, tmp_path: Path, args: tuple[str, ...], event: str, target: str
) -> None:
    register(client)
    login(client)  # a session and a counter-clearing login: each command has something to act on
    result = cli(*args, stdin=NEW_PASSWORD + "\n" if "--password-stdin" in args else None)
    assert result.returncode == (1 if event == "admin_command_failed" else 0), result.stderr
    assert '"event"' not in result.stderr  # never on the terminal
    lines = (tmp_path / "state" / "session-service" / "admin.jsonl").read_text().splitlines()
    assert len(lines) == 1, lines
    line = json.loads(lines[0])
    assert line["event"] == event
    assert line["command"] == " ".join(args[:2])
    assert line["target"] == target
    assert line["severity"] in ("INFO", "WARNING")
    if event == "admin_command_failed":
        assert line["error"] == error_lines(result)[0].removeprefix("error: ")
    assert NEW_PASSWORD not in lines[0] and PASSWORD not in lines[0] and "$argon2" not in lines[0]
