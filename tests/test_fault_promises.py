"""Issue 21: connections cut after a request went upstream, and the promises that must hold anyway.

The service under test (``make_client``'s `api`) talks to the emulator through the fault
proxy (``tests/faultproxy.py``), which cuts a share of Firestore calls after the request
went upstream: the write may have landed, the service sees UNAVAILABLE, and the client
library may resend it. Every promise is checked on the emulator directly, off the proxy:
with a second app for "does this token work", and with the stored documents.

| group | the promise |
|---|---|
| sessions | a login, re-authentication or password change answered 200 gave a token that works afterwards |
| definite outcomes | a change answered 200 happened; a change answered 4xx did not |
| unknown outcomes | a change answered 503 happened once or not at all (password: exactly one of old and new works) |
| lockout | judged guesses never exceed the limit; counters never go below zero; right passwords never meet 429 |
| cap | a user never has more live sessions than the cap |
| the service | no answer is a 500, and it answers at once when the proxy stops cutting |

Each test ends with ``audit`` (in process, off the proxy): nothing may need attention.
The cut rates and trial counts keep the file well under two minutes on two CPUs.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from google.cloud import firestore
from starlette.testclient import TestClient

from session import liveness, tokens
from session.audit import Audit, Report
from session.audit_store import AuditStore
from session.clock import utc_now
from session.config import load_settings
from session.models import AttemptsRecord, SessionRecord, UserRecord
from session.passwords import Passwords
from session.store import FirestoreStore
from tests.conftest import ROOT, AppFactory, bearer
from tests.faultproxy import FaultProxy

pytestmark = pytest.mark.slow

PASSWORD = "correct horse battery"
RATE = 0.3
# Broken promises this suite found that are not issue 19 (see the strict xfails of the sweeps below, which
# reproduce each with one cut placed exactly). The random trials report them without failing; remove an entry
# once its sweep passes.
# Both found on f663ab5 were fixed with their sweeps (test_sweep_register, test_sweep_patch_with_if_match):
# "register_409" (a registration that landed answered 409) and "patch_412" (a PATCH with If-Match that landed
# answered 412).
KNOWN: dict[str, str] = {}
CAP = 3
LIMIT = 2
# What the service under test is told: a short store deadline (a cut costs a retry, not five seconds).
SERVICE_ENV = {
    "SESSION_FIRESTORE_TIMEOUT_SECONDS": "2",
    "SESSION_MAX_PER_USER": str(CAP),
    "SESSION_LOGIN_MAX_FAILURES": str(LIMIT),
}


@dataclass
class Rig:
    """The service behind the proxy (``through``), a checker app straight on the emulator, and the answers seen."""

    proxy: FaultProxy
    through: TestClient
    direct: TestClient
    db: firestore.Client
    emulator_host: str
    answers: Counter[tuple[str, int]] = field(default_factory=Counter)
    broken: list[str] = field(default_factory=list)
    known: list[str] = field(default_factory=list)

    def call(self, name: str, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request to the service behind the proxy, with no cookie (the bearer token alone speaks)."""
        self.through.cookies.clear()
        response = self.through.request(method, path, **kwargs)
        self.through.cookies.clear()
        self.answers[(name, response.status_code)] += 1
        assert response.status_code != 500, f"{name}: 500 {response.text}"
        if response.status_code >= 400:
            assert response.headers["content-type"] == "application/problem+json", response.text
        return response

    def works(self, token: str) -> bool:
        """Whether the token is accepted, asked of the checker app (off the proxy)."""
        response = self.direct.get("/profile", headers=bearer(token))
        assert response.status_code in (200, 401), response.text
        return response.status_code == 200

    def user(self, username: str) -> UserRecord | None:
        snap = self.db.collection("users").document(username).get()
        return UserRecord.model_validate(snap.to_dict()) if snap.exists else None

    def live_sessions(self, username: str) -> int:
        user = self.user(username)
        assert user is not None
        query = self.db.collection("sessions").where(filter=firestore.FieldFilter("user_id", "==", user.user_id))
        records = [SessionRecord.model_validate(s.to_dict()) for s in query.stream()]
        return sum(liveness.is_live(r, user, utc_now()) for r in records)

    def counter(self, username: str) -> AttemptsRecord | None:
        snap = self.db.collection("login_attempts").document(tokens.counter_key(username)).get()
        return AttemptsRecord.model_validate(snap.to_dict()) if snap.exists else None

    def events(self, username: str) -> dict[str, dict[str, Any]]:
        """The user's stored security events, by id."""
        found = self.db.collection("users").document(username).collection("events").stream()
        return {e.id: e.to_dict() or {} for e in found}

    def session_ids(self, username: str) -> set[str]:
        """The public ids of every session document of the user (live or not)."""
        user = self.user(username)
        assert user is not None
        query = self.db.collection("sessions").where(filter=firestore.FieldFilter("user_id", "==", user.user_id))
        return {str((s.to_dict() or {})["public_id"]) for s in query.stream()}

    def events_match(
        self,
        what: str,
        before: dict[str, dict[str, Any]],
        after: dict[str, dict[str, Any]],
        opened: set[str],
        types: set[str],
    ) -> None:
        """Issue 22: an event exists if and only if its change happened, once, whatever the cut.

        ``opened``: the sessions this operation's change created (each has exactly one new event of ``types``);
        an operation that opened none has no new event of those types.
        """
        new = [e for i, e in after.items() if i not in before]
        self.promise(all(e["type"] in types for e in new), f"{what}: unexpected events {[e['type'] for e in new]}")
        self.promise(
            sorted(str(e["session_id"]) for e in new) == sorted(opened),
            f"{what}: new events {[(e['type'], e['session_id']) for e in new]}, new sessions {sorted(opened)}",
        )

    def promise(self, holds: bool, what: str, known: str | None = None) -> None:
        """Record a broken promise (all are reported together at the end of the test).

        ``known``: the ``KNOWN`` bug this would be; reported, not failed, when the caller tolerates it.
        """
        if not holds:
            (self.known if known in KNOWN else self.broken).append(what)

    def login_direct(self, username: str, password: str = PASSWORD) -> str:
        """A session opened off the proxy (set-up, not under test)."""
        answer = self.direct.post("/login", json={"username": username, "password": password})
        assert answer.status_code == 200, answer.text
        self.direct.cookies.clear()
        return str(answer.json()["token"])

    def relogin(self, username: str, password: str) -> str:
        """Set-up: a session off the proxy, the username's counter cleared first (issue 19 aside: right
        passwords that met a 503 keep their guesses, which ``test_right_passwords_alone_never_meet_429`` shows).
        """
        self.db.collection("login_attempts").document(tokens.counter_key(username)).delete()
        return self.login_direct(username, password)

    def register_direct(self, username: str) -> None:
        answer = self.direct.post("/register", json={"username": username, "password": PASSWORD})
        assert answer.status_code == 201, answer.text

    def sweep(self, run: Callable[[int | None], int]) -> int:
        """``run(None)`` counts the Firestore calls of one operation; then ``run(k)`` cuts its k-th call, for each k.

        ``run`` sets up off the proxy, calls ``self.proxy.cut_nth(k)`` (when k is given) right before
        the operation, and returns how many calls the operation made. Returns that count.
        """
        calls = run(None)
        for k in range(1, calls + 1):
            run(k)
        return calls

    def through_calls(self) -> int:
        return self.proxy.stats.requests

    def finish(self) -> None:
        """The service recovers at once without cuts; the audit finds nothing; no promise was broken."""
        self.proxy.cut_rate = 0.0
        recovered = self.call("recovery", "POST", "/login", json=_nobody())
        assert recovered.status_code == 401, recovered.text
        report = audit(self.emulator_host)
        print(f"\nanswers: {dict(sorted(self.answers.items()))}; cuts: {self.proxy.stats.cuts}")
        for line in self.known:
            print(f"KNOWN: {line}")
        print("\n".join(report.lines()))
        assert report.unrepaired() == 0, report.lines()
        assert not self.broken, "broken promises:\n" + "\n".join(self.broken)


def _nobody() -> dict[str, str]:
    """A login that reaches the store and answers 401 (a fresh unknown name: never locked out)."""
    return {"username": f"nobody-{uuid.uuid4().hex[:8]}", "password": "x"}


def audit(emulator_host: str) -> Report:
    """``python -m session audit`` in process, straight on the emulator."""
    os.environ["FIRESTORE_EMULATOR_HOST"] = emulator_host
    settings = load_settings()
    store = FirestoreStore(settings)

    async def run() -> Report:
        try:
            return await Audit(AuditStore(store), settings, utc_now).run()
        finally:
            await store.close()

    return asyncio.run(run())


@pytest.fixture
def rig(make_client: AppFactory, emulator_host: str, project: str) -> Iterator[Rig]:
    with FaultProxy(emulator_host, seed=21) as proxy:
        direct = make_client("api", **SERVICE_ENV)
        assert direct.post("/login", json={"username": "warm-up", "password": "x"}).status_code == 401
        # The Firestore client is made on the first call, from FIRESTORE_EMULATOR_HOST as it is then.
        through = make_client("api", FIRESTORE_EMULATOR_HOST=proxy.host, **SERVICE_ENV)
        assert through.post("/login", json={"username": "warm-up", "password": "x"}).status_code == 401
        os.environ["FIRESTORE_EMULATOR_HOST"] = emulator_host
        yield Rig(proxy, through, direct, firestore.Client(project=project), emulator_host)


def _register(rig: Rig, username: str, *, tolerate: bool = True) -> bool:
    """Register ``username`` behind the proxy, check the outcome promise; True when the user exists after it."""
    answer = rig.call("register", "POST", "/register", json={"username": username, "password": PASSWORD})
    exists = rig.user(username) is not None
    if answer.status_code == 201:
        rig.promise(exists, f"register {username}: 201 but no user stored")
    elif answer.status_code != 503:
        rig.promise(
            not exists,
            f"register {username}: {answer.status_code} {answer.json()['code']} but it landed",
            "register_409" if tolerate else None,
        )
    return exists


def test_register_login_logout(rig: Rig) -> None:
    with rig.proxy.cutting(RATE):
        for n in range(3):
            username = f"u{n}-{uuid.uuid4().hex[:6]}"
            if not _register(rig, username):
                continue
            for _ in range(CAP + 1):  # past the cap: logins evict, under cuts too
                before = rig.live_sessions(username)
                answer = rig.call("login", "POST", "/login", json={"username": username, "password": PASSWORD})
                after = rig.live_sessions(username)
                rig.promise(after <= CAP, f"login {username}: {after} live sessions, cap {CAP}")
                if answer.status_code == 200:
                    token = answer.json()["token"]
                    rig.promise(rig.works(token), f"login {username}: 200 but its token is refused")
                    logout = rig.call("logout", "POST", "/logout", headers=bearer(token))
                    if logout.status_code == 204:
                        rig.promise(not rig.works(token), f"logout {username}: 204 but the token still works")
                elif answer.status_code in (401, 429):
                    rig.promise(
                        after <= before,
                        f"login {username}: {answer.status_code} but a session landed ({before} -> {after} live)",
                    )
    rig.finish()


def test_profile_password_reauthentication_and_revocations(rig: Rig) -> None:
    username = f"p-{uuid.uuid4().hex[:6]}"
    assert _register(rig, username)
    token = rig.call("login", "POST", "/login", json={"username": username, "password": PASSWORD}).json()["token"]
    password = PASSWORD
    hasher = Passwords(load_settings())
    with rig.proxy.cutting(RATE):
        for step in range(3):
            # PATCH with If-Match: 200 → stored at version + 1; 4xx → nothing stored; 503 → once or not at all.
            before = rig.user(username)
            assert before is not None
            name = f"step {step}"
            patch = rig.call(
                "patch",
                "PATCH",
                "/profile",
                headers={**bearer(token), "If-Match": f'"{before.version}"'},
                json={"display_name": name},
            )
            after = rig.user(username)
            assert after is not None
            landed = after.version == before.version + 1 and after.display_name == name
            if patch.status_code == 200:
                rig.promise(landed and patch.json()["version"] == after.version, f"patch {step}: 200, stored {after}")
            elif patch.status_code == 503:
                rig.promise(landed or after.version == before.version, f"patch {step}: 503, version {after.version}")
            else:
                rig.promise(
                    after.version == before.version,
                    f"patch {step}: {patch.status_code} {patch.json()['code']} but it landed (version"
                    f" {before.version} -> {after.version})",
                    "patch_412",
                )

            # Password change: 200 → the new password and token work, the old token not; 503 → exactly one works.
            new = f"password number {step} {uuid.uuid4().hex[:4]}"
            change = rig.call(
                "password",
                "POST",
                "/profile/password",
                headers=bearer(token),
                json={"current_password": password, "new_password": new},
            )
            stored = rig.user(username)
            assert stored is not None
            old_ok, new_ok = hasher.verify(stored.password_hash, password), hasher.verify(stored.password_hash, new)
            rig.promise(old_ok != new_ok, f"password {step}: old works {old_ok}, new works {new_ok}")
            if change.status_code == 200:
                rig.promise(new_ok, f"password {step}: 200 but the new password does not work")
                fresh = change.json()["token"]
                rig.promise(rig.works(fresh), f"password {step}: 200 but its token is refused")
                rig.promise(not rig.works(token), f"password {step}: 200 but the old token still works")
                token = fresh
            elif change.status_code != 503:
                rig.promise(old_ok, f"password {step}: {change.status_code} {change.json()['code']} but it landed")
            if new_ok:
                password = new
            if not rig.works(token):  # the change landed unseen (503): log in again with what is stored now
                token = rig.relogin(username, password)

            # Re-authentication: 200 → the new token works and the old one not; 4xx → the old one still works.
            reauth = rig.call("reauth", "POST", "/reauthenticate", headers=bearer(token), json={"password": password})
            if reauth.status_code == 200:
                fresh = reauth.json()["token"]
                rig.promise(rig.works(fresh), f"reauth {step}: 200 but its token is refused")
                rig.promise(not rig.works(token), f"reauth {step}: 200 but the old token still works")
                token = fresh
            elif reauth.status_code != 503:
                rig.promise(
                    rig.works(token), f"reauth {step}: {reauth.status_code} {reauth.json()['code']} but it landed"
                )
            if not rig.works(token):
                token = rig.relogin(username, password)

            # Revoke one other session, then all others: 204 → they are refused and this one is not.
            others = [{"token": rig.relogin(username, password)} for _ in range(2)]
            listed = rig.direct.get("/sessions", headers=bearer(others[0]["token"])).json()["sessions"]
            public_id = next(s["id"] for s in listed if s["current"])
            one = rig.call("revoke_one", "DELETE", f"/sessions/{public_id}", headers=bearer(token))
            if one.status_code == 204:
                rig.promise(not rig.works(others[0]["token"]), f"revoke one {step}: 204 but the session works")
            elif one.status_code != 503:
                rig.promise(rig.works(others[0]["token"]), f"revoke one {step}: {one.status_code} but it landed")
            every = rig.call("revoke_all", "DELETE", "/sessions", headers=bearer(token))
            if every.status_code == 204:
                rig.promise(not rig.works(others[1]["token"]), f"revoke all {step}: 204 but another session works")
                rig.promise(rig.works(token), f"revoke all {step}: 204 but the caller's own session was ended")
            elif every.status_code != 503:
                rig.promise(rig.works(others[1]["token"]), f"revoke all {step}: {every.status_code} but it landed")
            rig.promise(rig.works(token) or every.status_code == 401, f"step {step}: the caller's session was lost")
    rig.finish()


def test_lockout_counts_wrong_guesses_and_never_goes_below_zero(rig: Rig) -> None:
    username = f"l-{uuid.uuid4().hex[:6]}"
    assert _register(rig, username)
    judged = 0
    with rig.proxy.cutting(0.4):
        for _ in range(LIMIT + 4):
            answer = rig.call("wrong", "POST", "/login", json={"username": username, "password": "wrong guess"})
            judged += answer.status_code == 401
            counter = rig.counter(username)
            rig.promise(counter is None or counter.count >= 0, f"counter below zero: {counter}")
    rig.promise(judged <= LIMIT, f"{judged} wrong guesses judged, limit {LIMIT}")
    rig.finish()


def test_right_passwords_alone_never_meet_429(rig: Rig) -> None:
    """Right passwords whose session commit is cut, and whose resends meet refused connections, must not use up
    the limit.

    The refusal ends within the store's deadline: the promise holds for faults the request outlives. When Firestore
    stays unreachable past a request's deadline, its guess cannot be given back then and stays counted until the
    window ends, erring towards the lockout (docs/operations.md, Robustness). With a 2.5 s refusal this test met
    429 in 1 of 4 fresh-clone runs: the channel's reconnect backoff decides whether the give-back gets through.
    """
    username = f"r-{uuid.uuid4().hex[:6]}"
    rig.register_direct(username)
    for _ in range(3 * LIMIT):
        counter = rig.counter(username)
        if counter is not None and counter.count >= LIMIT:
            break
        # A login's third call is its session's commit (after the counting commit and the read sent together).
        rig.proxy.cut_nth(3, then_refuse=1.5)
        rig.call("right", "POST", "/login", json={"username": username, "password": PASSWORD})
        time.sleep(0.6)  # past the refusal, whatever the answer was
        for _ in range(10):  # until the channel is back (gRPC reconnects with a backoff after refusals)
            if rig.call("warm-up", "POST", "/login", json=_nobody()).status_code == 401:
                break
    answer = rig.call("right", "POST", "/login", json={"username": username, "password": PASSWORD})
    rig.promise(answer.status_code != 429, f"a right password met 429 (counter {rig.counter(username)})")
    counter = rig.counter(username)
    rig.promise(counter is None or counter.count >= 0, f"counter below zero: {counter}")
    rig.finish()


def _cli(rig: Rig, *args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """``python -m session ARGS`` behind the proxy."""
    env = {**os.environ, "FIRESTORE_EMULATOR_HOST": rig.proxy.host, **SERVICE_ENV}
    return subprocess.run(
        [sys.executable, "-m", "session", *args],
        input=stdin,
        stdin=subprocess.DEVNULL if stdin is None else None,
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=60,
        start_new_session=True,
    )


def _outcome(result: subprocess.CompletedProcess[str]) -> str:
    """``done``, ``unknown`` (the store was unavailable) or ``refused`` (any other failure)."""
    assert "Traceback" not in result.stderr, result.stderr
    if result.returncode == 0:
        return "done"
    return "unknown" if "unavailable" in result.stderr else "refused"


def test_admin_commands(rig: Rig, tmp_path: Path) -> None:
    os.environ["XDG_STATE_HOME"] = str(tmp_path / "state")
    username = f"a-{uuid.uuid4().hex[:6]}"
    assert _register(rig, username)
    token = rig.call("login", "POST", "/login", json={"username": username, "password": PASSWORD}).json()["token"]
    with rig.proxy.cutting(0.4):
        steps: list[tuple[list[str], str | None]] = [
            (["users", "set-permissions", username, "read", "orders:write"], None),
            (["users", "disable", username], None),
            (["users", "enable", username], None),
            (["users", "set-password", username, "--password-stdin"], "a brand new long password\n"),
            (["sessions", "revoke-all", username], None),
            (["users", "delete", username], None),
        ]
        for args, stdin in steps:
            before = rig.user(username)
            result = _cli(rig, *args, stdin=stdin)
            outcome = _outcome(result)
            rig.answers[(" ".join(args[:2]), result.returncode)] += 1
            after = rig.user(username)
            what = f"{' '.join(args[:2])}: {outcome} ({result.stderr.strip().splitlines()[-1:]})"
            if args[1] == "set-permissions":
                landed = after is not None and after.permissions == ["read", "orders:write"]
            elif args[1] in ("disable", "enable"):
                landed = after is not None and after.disabled == (args[1] == "disable")
            elif args[1] == "set-password":
                landed = after is not None and before is not None and after.password_hash != before.password_hash
            elif args[1] == "revoke-all":
                landed = after is not None and before is not None and after.auth_epoch > before.auth_epoch
            else:
                landed = after is None
            if outcome == "done":
                rig.promise(landed, f"{what} but it did not land")
            elif outcome == "refused":
                rig.promise(not landed, f"{what} but it landed")
            if args[1] in ("disable", "set-password", "revoke-all") and landed:
                rig.promise(not rig.works(token), f"{what}: the old session still works")
    rig.finish()


# --- sweeps: one cut placed on each Firestore call of an operation in turn ---------------------------------


def test_sweep_register(rig: Rig) -> None:
    def run(k: int | None) -> int:
        username = f"s-{uuid.uuid4().hex[:8]}"
        start = rig.through_calls()
        if k:
            rig.proxy.cut_nth(k)
        _register(rig, username, tolerate=False)
        return rig.through_calls() - start

    rig.sweep(run)
    rig.finish()


def test_sweep_patch_with_if_match(rig: Rig) -> None:
    username = f"s-{uuid.uuid4().hex[:8]}"
    rig.register_direct(username)
    token = rig.login_direct(username)

    def run(k: int | None) -> int:
        before = rig.user(username)
        assert before is not None
        name = f"cut {k}"
        start = rig.through_calls()
        if k:
            rig.proxy.cut_nth(k)
        answer = rig.call(
            "patch",
            "PATCH",
            "/profile",
            headers={**bearer(token), "If-Match": f'"{before.version}"'},
            json={"display_name": name},
        )
        calls = rig.through_calls() - start
        after = rig.user(username)
        assert after is not None
        landed = after.version == before.version + 1 and after.display_name == name
        if answer.status_code == 200:
            rig.promise(landed, f"patch, cut {k}: 200 but not stored")
        elif answer.status_code != 503:
            rig.promise(not landed, f"patch, cut {k}: {answer.status_code} {answer.json()['code']} but it landed")
        return calls

    rig.sweep(run)
    rig.finish()


def test_sweep_login_and_logout(rig: Rig) -> None:
    username = f"s-{uuid.uuid4().hex[:8]}"
    rig.register_direct(username)

    def login(k: int | None) -> int:
        rig.db.collection("login_attempts").document(tokens.counter_key(username)).delete()  # issue 19 aside
        before = rig.live_sessions(username)
        events, sessions = rig.events(username), rig.session_ids(username)
        start = rig.through_calls()
        if k:
            rig.proxy.cut_nth(k)
        answer = rig.call("login", "POST", "/login", json={"username": username, "password": PASSWORD})
        calls = rig.through_calls() - start
        after = rig.live_sessions(username)
        opened = rig.session_ids(username) - sessions
        rig.events_match(f"login, cut {k}", events, rig.events(username), opened, {"login", "login_new_device"})
        rig.promise(after <= CAP, f"login, cut {k}: {after} live sessions, cap {CAP}")
        if answer.status_code == 200:
            rig.promise(rig.works(answer.json()["token"]), f"login, cut {k}: 200 but its token is refused")
        elif answer.status_code != 503:
            rig.promise(after <= before, f"login, cut {k}: {answer.status_code} but a session landed")
        counter = rig.counter(username)
        rig.promise(counter is None or counter.count >= 0, f"login, cut {k}: counter {counter}")
        return calls

    def logout(k: int | None) -> int:
        token = rig.login_direct(username)
        start = rig.through_calls()
        if k:
            rig.proxy.cut_nth(k)
        answer = rig.call("logout", "POST", "/logout", headers=bearer(token))
        if answer.status_code == 204:
            rig.promise(not rig.works(token), f"logout, cut {k}: 204 but the token works")
        return rig.through_calls() - start

    rig.sweep(login)
    rig.sweep(logout)
    rig.finish()


def test_sweep_password_change_and_reauthentication(rig: Rig) -> None:
    hasher = Passwords(load_settings())

    def change(k: int | None) -> int:
        username = f"s-{uuid.uuid4().hex[:8]}"
        rig.register_direct(username)
        token, other = rig.login_direct(username), rig.login_direct(username)
        new = f"the new password {k}"
        events, sessions = rig.events(username), rig.session_ids(username)
        start = rig.through_calls()
        if k:
            rig.proxy.cut_nth(k)
        answer = rig.call(
            "password",
            "POST",
            "/profile/password",
            headers=bearer(token),
            json={"current_password": PASSWORD, "new_password": new},
        )
        calls = rig.through_calls() - start
        stored = rig.user(username)
        assert stored is not None
        old_ok, new_ok = hasher.verify(stored.password_hash, PASSWORD), hasher.verify(stored.password_hash, new)
        rig.promise(old_ok != new_ok, f"password, cut {k}: old works {old_ok}, new works {new_ok}")
        opened = rig.session_ids(username) - sessions
        rig.events_match(f"password, cut {k}", events, rig.events(username), opened, {"password_changed"})
        rig.promise(bool(opened) == new_ok, f"password, cut {k}: changed {new_ok}, sessions opened {opened}")
        if answer.status_code == 200:
            rig.promise(new_ok and rig.works(answer.json()["token"]), f"password, cut {k}: 200 but not in force")
            rig.promise(not rig.works(token) and not rig.works(other), f"password, cut {k}: 200, old sessions live")
        elif answer.status_code != 503:
            rig.promise(old_ok, f"password, cut {k}: {answer.status_code} {answer.json()['code']} but it landed")
        return calls

    def reauthenticate(k: int | None) -> int:
        username = f"s-{uuid.uuid4().hex[:8]}"
        rig.register_direct(username)
        token = rig.login_direct(username)
        events, sessions = rig.events(username), rig.session_ids(username)
        start = rig.through_calls()
        if k:
            rig.proxy.cut_nth(k)
        answer = rig.call("reauth", "POST", "/reauthenticate", headers=bearer(token), json={"password": PASSWORD})
        calls = rig.through_calls() - start
        opened = rig.session_ids(username) - sessions
        rig.events_match(f"reauth, cut {k}", events, rig.events(username), opened, {"reauthenticated"})
        if answer.status_code == 200:
            rig.promise(rig.works(answer.json()["token"]), f"reauth, cut {k}: 200 but its token is refused")
            rig.promise(not rig.works(token), f"reauth, cut {k}: 200 but the old token works")
        elif answer.status_code != 503:
            rig.promise(rig.works(token), f"reauth, cut {k}: {answer.status_code} {answer.json()['code']}, token lost")
        return calls

    rig.sweep(change)
    rig.sweep(reauthenticate)
    rig.finish()


def test_sweep_revocations(rig: Rig) -> None:
    username = f"s-{uuid.uuid4().hex[:8]}"
    rig.register_direct(username)

    def revoke_one(k: int | None) -> int:
        token, other = rig.login_direct(username), rig.login_direct(username)
        listed = rig.direct.get("/sessions", headers=bearer(other)).json()["sessions"]
        public_id = next(s["id"] for s in listed if s["current"])
        events = rig.events(username)
        start = rig.through_calls()
        if k:
            rig.proxy.cut_nth(k)
        answer = rig.call("revoke_one", "DELETE", f"/sessions/{public_id}", headers=bearer(token))
        new = [e for i, e in rig.events(username).items() if i not in events]
        ended = public_id not in rig.session_ids(username)
        rig.promise(
            [(e["type"], e["session_id"]) for e in new] == ([("session_revoked", public_id)] if ended else []),
            f"revoke one, cut {k}: ended {ended}, new events {[e['type'] for e in new]}",
        )
        if answer.status_code == 204:
            rig.promise(not rig.works(other), f"revoke one, cut {k}: 204 but the session works")
        elif answer.status_code != 503:
            rig.promise(rig.works(other), f"revoke one, cut {k}: {answer.status_code} but it landed")
        rig.promise(rig.works(token), f"revoke one, cut {k}: the caller's own session ended")
        return rig.through_calls() - start

    def revoke_all(k: int | None) -> int:
        token, other = rig.login_direct(username), rig.login_direct(username)
        start = rig.through_calls()
        if k:
            rig.proxy.cut_nth(k)
        answer = rig.call("revoke_all", "DELETE", "/sessions", headers=bearer(token))
        if answer.status_code == 204:
            rig.promise(not rig.works(other), f"revoke all, cut {k}: 204 but another session works")
        elif answer.status_code != 503:
            rig.promise(rig.works(other), f"revoke all, cut {k}: {answer.status_code} but it landed")
        rig.promise(rig.works(token), f"revoke all, cut {k}: the caller's own session ended")
        return rig.through_calls() - start

    rig.sweep(revoke_one)
    rig.sweep(revoke_all)
    rig.finish()
