"""Issue 25's Chromium test: DBSC against the SERVICE itself, ``make run`` behind a TLS proxy.

``make run`` (SESSION_DBSC=on, a 3 s bound cookie, JSON logs to a file) serves the ``api`` function on
plain HTTP; ``tests.tls_proxy.TlsProxy`` puts ``https://app.example.test:<port>`` in front of it, with a
test CA trusted in the NSS database of the browser's HOME. Then:

1. the browser logs in (a ``fetch`` from the service's own page);
2. the service's log shows the session bound (``"dbsc": "bound"``);
3. a copy of the browser's cookies, replayed from httpx after the bound cookie's lifetime, gets 401;
4. the browser itself keeps reading ``/profile`` through refreshes (the log shows them);
5. forged and replayed proofs are refused: a wrong key, a registration proof sent again, another
   session's id.

Skipped with a reason when Chromium, certutil or Playwright is missing; under CI that is a failure.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest
from joserfc import jws
from joserfc.jwk import ECKey

from devtools.launch import free_port, make_run
from session import binding, tokens
from tests.conftest import ROOT
from tests.test_dbsc_browser import CHROMIUM, _artifacts, chromium, dbsc_events
from tests.tls_proxy import TestPki, TlsProxy, missing_tools

BOUND_SECONDS = 3
PASSWORD = "correct horse battery"
BOUND = binding.BOUND_COOKIE.name


class Service:
    """``make run`` behind the TLS proxy: its HTTPS base, its log, and clients for a thief."""

    def __init__(self, proxy: TlsProxy, pki: TestPki, home: Path, plain: str, log: Path) -> None:
        self.proxy, self.pki, self.home, self.plain, self.log = proxy, pki, home, plain, log

    def log_records(self) -> list[dict[str, Any]]:
        records = []
        for line in self.log.read_text(errors="replace").splitlines():
            if line.startswith("{"):
                try:
                    records.append(json.loads(line))
                except ValueError:
                    continue
        return records

    def dbsc_log(self) -> list[str]:
        return [str(r["dbsc"]) for r in self.log_records() if "dbsc" in r and "httpRequest" in r and r["httpRequest"]]

    def requests(self) -> list[str]:
        """Each request line of the log, with what DBSC did (for failure messages)."""
        return [
            f"{r['message']} {r.get('dbsc', '')} {r.get('code', '')}"
            for r in self.log_records()
            if r.get("httpRequest")
        ]

    def thief(self) -> httpx.Client:
        """A client of the same HTTPS front door (127.0.0.1, the proxy's port), trusting the test CA."""
        return httpx.Client(base_url=f"https://127.0.0.1:{self.proxy.port}", verify=self.pki.client_context())


@pytest.fixture
def service(project: str, emulator_host: str) -> Iterator[Service]:
    missing = missing_tools(CHROMIUM)
    if missing:
        if os.environ.get("CI"):
            pytest.fail(f"the DBSC browser test cannot run under CI; missing: {'; '.join(missing)}")
        pytest.skip(f"missing: {'; '.join(missing)}")
    port = free_port()
    log = ROOT / f".pytest-make-run-dbsc-{port}.log"
    with tempfile.TemporaryDirectory() as tmp:
        pki = TestPki.mint(Path(tmp) / "pki")
        home = pki.browser_home(Path(tmp) / "home")
        with TlsProxy(pki, ("127.0.0.1", port)) as proxy:
            env = {
                "FIRESTORE_EMULATOR_HOST": emulator_host,
                "GOOGLE_CLOUD_PROJECT": project,
                "SESSION_DBSC": "on",
                "SESSION_DBSC_COOKIE_SECONDS": str(BOUND_SECONDS),
                "SESSION_LOG_FORMAT": "json",
                "SESSION_ALLOWED_ORIGINS": proxy.base,
            }
            try:
                with make_run(env, port=port, timeout=90, log_path=log) as server:
                    yield Service(proxy, pki, home, server.base, log)
            finally:
                log.unlink(missing_ok=True)


def _fetch(page: Any, path: str, method: str = "GET", body: object = None) -> dict[str, Any]:
    return dict(
        page.evaluate(
            """async ([path, method, body]) => {
                 const init = {method, headers: body === null ? {} : {"Content-Type": "application/json"}};
                 if (body !== null) init.body = JSON.stringify(body);
                 const r = await fetch(path, init);
                 return {status: r.status, body: await r.json()};
               }""",
            [path, method, body],
        )
    )


def _wait(condition: Any, what: str, seconds: float = 20) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not within {seconds} s: {what}")
        time.sleep(0.1)


def _sign(key: ECKey, jti: str, *, with_jwk: bool) -> str:
    header: dict[str, Any] = {"alg": "ES256", "typ": "dbsc+jwt"}
    if with_jwk:
        header["jwk"] = key.as_dict(private=False)
    return jws.serialize_compact(header, json.dumps({"jti": jti}).encode(), key, algorithms=["ES256"])


def test_chromium_binds_its_session_to_the_service_and_a_copied_cookie_dies(service: Service) -> None:
    with httpx.Client(base_url=service.plain) as plain:
        for name in ("alice", "mallory"):
            made = plain.post("/register", json={"username": name, "password": PASSWORD})
            assert made.status_code == 201, made.text
    netlog = _artifacts("service") / "netlog.json"
    with chromium(service.pki, service.home, netlog) as page:
        page.goto(service.proxy.base + "/")
        # 1. The browser logs in.
        logged_in = _fetch(page, "/login", "POST", {"username": "alice", "password": PASSWORD})
        assert logged_in["status"] == 200, logged_in

        # 2. The service's log shows the session bound; the browser holds the bound cookie.
        _wait(lambda: "bound" in service.dbsc_log(), f"the session bound; log: {service.dbsc_log()}")
        _wait(lambda: any(c["name"] == BOUND for c in page.context.cookies()), "the bound cookie in the jar")
        cookies = {c["name"]: c["value"] for c in page.context.cookies()}
        session_id = tokens.public_id(tokens.hash_token(cookies["__session"]))

        # 3. A thief's copy: the session cookie alone never works; the pair only while the bound cookie lives.
        stolen = f"__session={cookies['__session']}; {BOUND}={cookies[BOUND]}"
        with service.thief() as thief:
            pair = thief.get("/profile", headers={"Cookie": stolen})
            assert pair.status_code == 200 and pair.json()["username"] == "alice", pair.text
            alone = thief.get("/profile", headers={"Cookie": f"__session={cookies['__session']}"})
            assert (alone.status_code, alone.json()["reason"]) == (401, "bound_credential_missing")
            as_bearer = thief.get("/profile", headers={"Authorization": f"Bearer {cookies['__session']}"})
            assert (as_bearer.status_code, as_bearer.json()["reason"]) == (401, "bound_session_bearer")
            time.sleep(BOUND_SECONDS + 1)
            replay = thief.get("/profile", headers={"Cookie": stolen})
            assert replay.status_code == 401, replay.text
            assert replay.json()["reason"] in ("bound_credential_expired", "bound_credential_invalid")

            # 5. Forged and replayed proofs, sent with the stolen session cookie.
            refresh = {"Cookie": f"__session={cookies['__session']}", "Sec-Secure-Session-Id": session_id}
            challenged = thief.post("/dbsc/refresh", headers=refresh)
            assert challenged.status_code == 403, challenged.text
            challenge = challenged.headers["secure-session-challenge"].split('"', 2)[1]
            forged = _sign(ECKey.generate_key(), challenge, with_jwk=False)
            wrong_key = thief.post("/dbsc/refresh", headers={**refresh, "Secure-Session-Response": forged})
            assert (wrong_key.status_code, wrong_key.json()["refusal"]) == (400, "bad_signature")
            assert "set-cookie" not in wrong_key.headers

            # The thief's own session (mallory), bound with its own key: a proof cannot be used twice, and
            # its key cannot refresh alice's session by naming alice's id.
            own = thief.post("/login", json={"username": "mallory", "password": PASSWORD})
            registration = own.headers["secure-session-registration"].split(';challenge="', 1)[1].split('"')[0]
            key = ECKey.generate_key()
            proof = _sign(key, registration, with_jwk=True)
            mine = {"Cookie": f"__session={own.json()['token']}", "Secure-Session-Response": proof}
            assert thief.post("/dbsc/register", headers=mine).status_code == 200
            again = thief.post("/dbsc/register", headers=mine)
            assert (again.status_code, again.json()["refusal"]) == (400, "no_registration_pending")
            other_id = thief.post(
                "/dbsc/refresh",
                headers={"Cookie": f"__session={own.json()['token']}", "Sec-Secure-Session-Id": session_id},
            )
            assert (other_id.status_code, other_id.json()) == (200, {"continue": False})

        # 4. The browser itself keeps reading /profile: each read comes after its bound cookie has expired, so
        # each waits for a refresh (a 403 and a signed retry). Three reads only: Chromium signs at most 6 times
        # per 9 minutes per site (kSigningQuota), and with a 3 s cookie it also refreshes ahead of expiry after
        # each read: the registration and five refreshes use the quota up (docs/dbsc.md).
        before = service.dbsc_log().count("refreshed")
        for _ in range(3):
            time.sleep(BOUND_SECONDS + 0.5)
            answer = _fetch(page, "/profile")
            assert answer["status"] == 200, "\n".join([str(answer), *service.requests()])
        assert service.dbsc_log().count("refreshed") - before >= 3, service.requests()
    assert not [r for r in service.log_records() if r.get("severity") == "ERROR"]
    assert service.proxy.errors == [], service.proxy.errors
    events = dbsc_events(netlog)
    assert ("DBSC_REGISTRATION_RESULT", {"status": "registered"}) in events, events
    results = {p["status"] for name, p in events if name == "DBSC_REFRESH_RESULT"}
    assert "refreshed" in results, events
