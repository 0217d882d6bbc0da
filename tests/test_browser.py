"""The browser page in a real headless Chromium (Debian's `chromium`, driven by Playwright), against `make run`.

Three origins, all on 127.0.0.1 (one site, so the SameSite=Lax cookie travels
between them): the API itself (A), a static copy of the page on an origin in
SESSION_ALLOWED_ORIGINS (B), and one on an origin that is not listed (C). The
copies are the page as A serves it with SESSION_PAGE_API_ORIGIN=A, as a
deployment would copy it. A fourth server (D) only counts what reaches it: a
link's ?api= pointing there must send it nothing.
Screenshots of every step go to test-artifacts/browser/<test>/.

No request of any test may answer 404: the browser's own (the favicon's included,
which Playwright does not see) are read from the servers' side, the API's from its
request log. A test parametrized with ``server_env`` starts the API with those extra settings.

Skipped with a reason when Chromium or Playwright is missing; under CI (env CI
set) that is a failure instead.
"""

from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx2 as httpx
import pytest

from devtools.launch import free_port

ROOT = Path(__file__).resolve().parent.parent
ARTIFACTS = ROOT / "test-artifacts" / "browser"
CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "correct horse battery"


def _missing() -> str | None:
    if not (shutil.which(CHROMIUM) or Path(CHROMIUM).is_file()):
        return f"Chromium not found at {CHROMIUM} (install it with scripts/ci-browser.sh)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "Playwright for Python is not installed (pip install -r requirements-dev.txt)"
    return None


@pytest.fixture(scope="module")
def playwright_browser() -> Iterator[Any]:
    reason = _missing()
    if reason is not None:
        if os.environ.get("CI"):
            pytest.fail(f"browser tests cannot run under CI: {reason}")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


class _Quiet(http.server.SimpleHTTPRequestHandler):
    """Serves B's and C's copy of the page, and records what it answered in ``served``."""

    served: list[tuple[str, str, int]]

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        self.served.append((self.command, self.path, int(code)))

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Counting(http.server.BaseHTTPRequestHandler):
    """D: answers every request with 204 and records it; the tests expect it to see none."""

    hits: list[str]

    def _record(self) -> None:
        self.hits.append(f"{self.command} {self.path}")
        self.send_response(204)
        self.send_header("Access-Control-Allow-Origin", "*")
        self.end_headers()

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _record

    def log_message(self, format: str, *args: Any) -> None:
        pass


@dataclass(frozen=True)
class Origins:
    api: str  # A: the API, serving the page at /
    allowed: str  # B: the page on another port, listed in SESSION_ALLOWED_ORIGINS
    foreign: str  # C: the page on a port that is not listed
    elsewhere: str  # D: an origin that is neither the page's nor the API's
    elsewhere_hits: list[str]  # what reached D
    static_served: list[tuple[str, str, int]]  # (method, path, status) of every answer B and C gave

    def not_found(self) -> list[tuple[str, str, int]]:
        """Every 404 any server here answered: the API's (from its request log), B's and C's.

        Leaves out conftest's probe for the server being up (GET /nope).
        """
        answered = _api_served(self.api)
        assert ("POST", "/login", 200) in answered, "no request read from the API's log"
        return [r for r in [*answered, *self.static_served] if r[2] == 404 and r[:2] != ("GET", "/nope")]


@pytest.fixture
def server_env() -> dict[str, str]:
    """Extra settings for the API server; a test overrides it with ``@pytest.mark.parametrize``."""
    return {}


@pytest.fixture
def origins(project: str, server_env: dict[str, str], request: pytest.FixtureRequest) -> Iterator[Origins]:
    """`make run` with B allowed (and A itself, for the page it serves), static servers for B and C, and D."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "static").symlink_to(ROOT / "session" / "static")
        servers = []
        served: list[tuple[str, str, int]] = []
        handler = type("Recording", (_Quiet,), {"served": served})
        for _ in range(2):
            server = http.server.ThreadingHTTPServer(
                ("127.0.0.1", free_port()), functools.partial(handler, directory=tmp)
            )
            threading.Thread(target=server.serve_forever, daemon=True).start()
            servers.append(server)
        allowed, foreign = (f"http://127.0.0.1:{s.server_address[1]}" for s in servers)
        hits: list[str] = []
        counting = http.server.ThreadingHTTPServer(
            ("127.0.0.1", free_port()), type("Counting", (_Counting,), {"hits": hits})
        )
        threading.Thread(target=counting.serve_forever, daemon=True).start()
        servers.append(counting)
        elsewhere = f"http://127.0.0.1:{counting.server_address[1]}"
        api_port = free_port()
        api = f"http://127.0.0.1:{api_port}"
        os.environ["PORT"] = str(api_port)
        os.environ["SESSION_ALLOWED_ORIGINS"] = f"{api},{allowed}"
        os.environ["SESSION_PAGE_API_ORIGIN"] = api
        os.environ["SESSION_COOKIE_SECURE"] = "true"
        # A cold emulator (or a loaded machine) can take longer than the 5 s default on its first write.
        os.environ["SESSION_FIRESTORE_TIMEOUT_SECONDS"] = "30"
        os.environ["PYTHONUNBUFFERED"] = "1"  # the server's log is read for its security events and statuses
        os.environ.update(server_env)
        try:
            live = request.getfixturevalue("live_server")
            assert live == api, (live, api)
            _warm_up(api)
            # The copy B and C serve: the page as the `api` function serves it.
            (Path(tmp) / "index.html").write_text(httpx.get(f"{api}/", timeout=30).text)
            yield Origins(api, allowed, foreign, elsewhere, hits, served)
        finally:
            for server in servers:
                server.shutdown()
                server.server_close()


@pytest.fixture
def live_server(project: str, emulator_host: str) -> Iterator[str]:
    """conftest's `make run` server, on the port chosen by `origins`."""
    import tests.conftest as conftest

    wanted = int(os.environ["PORT"])
    original = conftest.free_port
    conftest.free_port = lambda: wanted
    try:
        yield from conftest.live_server.__wrapped__(project, emulator_host)  # type: ignore[attr-defined]
    finally:
        conftest.free_port = original


def _warm_up(api: str) -> None:
    """One write through the server, so the browser steps do not pay for the first connection."""
    reply = httpx.post(f"{api}/register", json={"username": "warm-up", "password": PASSWORD}, timeout=60)
    assert reply.status_code == 201, reply.text


class Shots:
    """Numbered screenshots of one test."""

    def __init__(self, name: str) -> None:
        self.folder = ARTIFACTS / name
        shutil.rmtree(self.folder, ignore_errors=True)
        self.folder.mkdir(parents=True)
        self.count = 0

    def __call__(self, page: Any, step: str) -> None:
        self.count += 1
        page.screenshot(path=str(self.folder / f"{self.count:02d}-{step}.png"), full_page=True)


@pytest.fixture
def shots(request: pytest.FixtureRequest, capsys: pytest.CaptureFixture[str]) -> Shots:
    made = Shots(request.node.name)
    with capsys.disabled():
        print(f"\nscreenshots: {made.folder}")
    return made


def _open(context: Any, url: str, console: list[str] | None = None) -> Any:
    page = context.new_page()
    page.set_default_timeout(15_000)
    lines = console if console is not None else []
    # Printed lines are shown with a failing test's captured output.
    page.on("console", lambda message: (lines.append(message.text), print(f"console {message.type}: {message.text}")))
    page.on("pageerror", lambda error: print(f"page error: {error}"))
    page.goto(url)
    page.wait_for_selector("body[data-ready=true]")
    return page


def _problem(page: Any) -> tuple[str, str]:
    page.wait_for_selector("#problem:not([hidden])")
    return page.inner_text("#problem-title"), page.inner_text("#problem-detail")


def _login(page: Any, username: str = "alice", password: str = PASSWORD) -> None:
    page.fill("#login-form input[name=username]", username)
    page.fill("#login-form input[name=password]", password)
    page.click("#login-button")


def _session_cookies(context: Any) -> list[dict[str, Any]]:
    return [c for c in context.cookies() if c["name"] == "__session"]


# Controls that act for a logged-in user, hidden while logged out; and the forms only a logged-out page shows.
LOGGED_IN_ONLY = (
    "#profile-button",
    "#profile-form",
    "#password-form",
    "#sessions-button",
    "#revoke-others-button",
    "#revoke-all-button",
    "#logout-button",
)
LOGGED_OUT_ONLY = ("#register-form", "#login-form")


def _assert_logged_out(page: Any) -> None:
    from playwright.sync_api import expect

    for selector in LOGGED_OUT_ONLY:
        expect(page.locator(selector)).to_be_visible()
    for selector in LOGGED_IN_ONLY:
        expect(page.locator(selector)).to_be_hidden()


def _assert_logged_in(page: Any) -> None:
    from playwright.sync_api import expect

    for selector in LOGGED_IN_ONLY:
        expect(page.locator(selector)).to_be_visible()
    for selector in LOGGED_OUT_ONLY:
        expect(page.locator(selector)).to_be_hidden()


def _hint(page: Any) -> str:
    page.wait_for_selector("#problem-hint:not([hidden])")
    return str(page.inner_text("#problem-hint"))


def _rows(page: Any, count: int) -> list[Any]:
    from playwright.sync_api import expect

    rows = page.locator("#sessions tbody tr")
    expect(rows).to_have_count(count)  # not wait_for_function: the page's CSP forbids eval
    return list(rows.all())


def _other_device(api: str, headers: dict[str, str] | None = None) -> str:
    """A session opened elsewhere (not in this browser), sending ``headers``; returns its token."""
    reply = httpx.post(
        f"{api}/login",
        json={"username": "alice", "password": PASSWORD},
        headers=headers or {"User-Agent": "other-device/1.0"},
        timeout=30,
    )
    assert reply.status_code == 200, reply.text
    return str(reply.json()["token"])


def _security_events(api: str, name: str) -> list[dict[str, Any]]:
    """The ``name`` events the `make run` server has logged so far (from its log file)."""
    port = api.rsplit(":", 1)[1]
    found = []
    for line in (ROOT / f".pytest-make-run-{port}.log").read_text().splitlines():
        if line.startswith("{") and f'"event": "{name}"' in line:
            record = json.loads(line)
            found.append({k: record[k] for k in ("origin", "path")})
    return found


def _api_served(api: str) -> list[tuple[str, str, int]]:
    """(method, path, status) of every request the `make run` server has logged so far."""
    port = api.rsplit(":", 1)[1]
    found = []
    for line in (ROOT / f".pytest-make-run-{port}.log").read_text().splitlines():
        if line.startswith("{"):
            request = json.loads(line).get("httpRequest")
            if request:
                found.append((request["requestMethod"], request["requestUrl"], int(request["status"])))
    return found


def _alive(api: str, token: str) -> bool:
    status = httpx.get(f"{api}/profile", headers={"Authorization": f"Bearer {token}"}, timeout=30).status_code
    assert status in (200, 401)
    return status == 200


def test_the_page_register_login_profile_sessions_logout(
    playwright_browser: Any, origins: Origins, shots: Shots
) -> None:
    context = playwright_browser.new_context()
    try:
        page = _open(context, origins.api + "/")
        assert page.inner_text("#api-url") == origins.api
        assert page.inner_text("#status") == "Not logged in"
        _assert_logged_out(page)
        assert page.is_hidden("#problem")  # no cookie yet: not an error to show
        shots(page, "start")

        page.fill("#register-form input[name=username]", "alice")
        page.fill("#register-form input[name=password]", PASSWORD)
        page.fill("#register-form input[name=display_name]", "Alice")
        page.fill("#register-form input[name=email]", "alice@example.com")
        page.click("#register-button")
        page.wait_for_selector("#message:not([hidden])")
        assert page.inner_text("#message") == "Registered alice. You can log in now."
        shots(page, "registered")

        page.fill("#register-form input[name=username]", "alice")
        page.fill("#register-form input[name=password]", PASSWORD)
        page.click("#register-button")
        assert _problem(page) == ("The username is taken", "the username 'alice' is taken")
        shots(page, "register-taken")

        _login(page, password="wrong password!")
        assert _problem(page) == ("Invalid username or password", "invalid username or password")
        assert _session_cookies(context) == []
        shots(page, "login-wrong-password")

        _login(page)
        page.wait_for_selector("text=Logged in as alice")
        assert page.is_hidden("#problem")
        assert page.inner_text("dd[data-field=username]") == "alice"
        assert page.inner_text("dd[data-field=display_name]") == "Alice"
        assert page.inner_text("dd[data-field=email]") == "alice@example.com"
        assert page.inner_text("dd[data-field=permissions]") == "read"
        rows = _rows(page, 1)
        assert "(this browser)" in rows[0].inner_text()
        _assert_logged_in(page)
        shots(page, "logged-in")

        # The cookie: HttpOnly, Secure (accepted on http://127.0.0.1), Lax, and invisible to JavaScript.
        (cookie,) = _session_cookies(context)
        assert cookie["httpOnly"] is True
        assert cookie["secure"] is True
        assert cookie["sameSite"] == "Lax"
        assert cookie["domain"] == "127.0.0.1"
        assert "__session" not in page.evaluate("document.cookie")
        assert page.evaluate("document.cookie") == ""

        # Revoke one: a session opened on another device.
        other = _other_device(origins.api)
        page.click("#sessions-button")
        rows = _rows(page, 2)
        (foreign_row,) = [r for r in rows if "other-device/1.0" in r.inner_text()]
        shots(page, "two-sessions")
        foreign_row.locator("button.revoke").click()
        page.wait_for_selector("#message:has-text('revoked')")
        _rows(page, 1)
        assert not _alive(origins.api, other)
        shots(page, "revoked-one")

        # Revoke all others.
        others = [_other_device(origins.api), _other_device(origins.api)]
        page.click("#sessions-button")
        _rows(page, 3)
        page.click("#revoke-others-button")
        page.wait_for_selector("text=All other sessions revoked.")
        _rows(page, 1)
        assert not any(_alive(origins.api, t) for t in others)
        assert page.inner_text("#status") == "Logged in as alice"
        shots(page, "revoked-others")

        # Revoke all, this one too: logged out, cookie cleared.
        page.click("#revoke-all-button")
        page.wait_for_selector("text=Logged out everywhere")
        assert _session_cookies(context) == []
        _assert_logged_out(page)
        assert page.inner_text("#profile") == ""
        assert page.locator("#sessions tbody tr").count() == 0
        # The login form is ready for the same user.
        assert page.input_value("#login-form input[name=username]") == "alice"
        shots(page, "revoked-all")

        # Log in again, reload (the cookie keeps us logged in), log out.
        _login(page)
        page.wait_for_selector("text=Logged in as alice")
        page.reload()
        page.wait_for_selector("body[data-ready=true]")
        page.wait_for_selector("text=Logged in as alice")
        _rows(page, 1)
        page.click("#logout-button")
        page.wait_for_selector("#status:text-is('Logged out')")
        assert _session_cookies(context) == []
        _assert_logged_out(page)
        shots(page, "logged-out")
        # A reload after logging out: still logged out, and no error for the missing cookie.
        page.reload()
        page.wait_for_selector("body[data-ready=true]")
        _assert_logged_out(page)
        assert page.is_hidden("#problem")
    finally:
        context.close()
    assert origins.not_found() == []
    icon = httpx.get(f"{origins.api}/static/favicon.svg", timeout=30)
    assert (icon.status_code, icon.headers["content-type"]) == (200, "image/svg+xml")


def test_an_allowed_origin_can_use_the_api_and_a_foreign_one_cannot(
    playwright_browser: Any, origins: Origins, shots: Shots
) -> None:
    context = playwright_browser.new_context()
    try:
        assert (
            httpx.post(
                f"{origins.api}/register", json={"username": "alice", "password": PASSWORD}, timeout=30
            ).status_code
            == 201
        )

        # B, listed in SESSION_ALLOWED_ORIGINS: login (a preflighted JSON POST), profile, sessions, revoke.
        page_b = _open(context, f"{origins.allowed}/index.html")
        assert page_b.inner_text("#api-url") == origins.api
        _login(page_b)
        page_b.wait_for_selector("text=Logged in as alice")
        _rows(page_b, 1)
        (cookie,) = _session_cookies(context)
        assert cookie["httpOnly"] is True
        assert page_b.evaluate("document.cookie") == ""
        other = _other_device(origins.api)
        page_b.click("#sessions-button")
        _rows(page_b, 2)
        page_b.click("#revoke-others-button")  # a cross-origin DELETE with the cookie: CORS and CSRF allow it
        page_b.wait_for_selector("text=All other sessions revoked.")
        _rows(page_b, 1)
        assert not _alive(origins.api, other)
        shots(page_b, "allowed-origin")

        # C, not listed: the browser holds the same cookie, but CORS hides every answer from the page…
        console: list[str] = []
        failed_urls: list[str] = []
        context.on("requestfailed", lambda r: failed_urls.append(r.url))
        page_c = _open(context, f"{origins.foreign}/index.html", console)
        assert failed_urls == [f"{origins.api}/profile"]  # the page asking, as it loads, who is logged in
        title, detail = _problem(page_c)
        assert title == "The API could not be reached"
        assert "does not allow this page's origin" in detail
        cors = f"from origin '{origins.foreign}' has been blocked by CORS policy"
        assert any(cors in line for line in console), console
        assert page_c.inner_text("#status") == "Not logged in"
        _assert_logged_out(page_c)
        shots(page_c, "foreign-origin-cors")

        # …a JSON POST is stopped at its preflight, before it is sent…
        with page_c.expect_event("requestfailed") as failed:
            _login(page_c)
        assert failed.value.url == f"{origins.api}/login"
        assert _problem(page_c)[0] == "The API could not be reached"
        assert any("Response to preflight request doesn't pass access control check" in line for line in console)

        # …and a "simple" POST, which needs no preflight and carries the cookie, is refused by the CSRF rule.
        # (The page shows no logout button while logged out, so a script on C sends it, as a hostile page would.)
        with page_c.expect_event("requestfailed") as failed:
            outcome = page_c.evaluate(
                "url => fetch(url, {method: 'POST', credentials: 'include'}).then(() => 'read', () => 'blocked')",
                f"{origins.api}/logout",
            )
        assert outcome == "blocked"
        assert failed.value.url == f"{origins.api}/logout"
        assert _security_events(origins.api, "csrf_rejected") == [{"origin": origins.foreign, "path": "/logout"}]
        shots(page_c, "foreign-origin-csrf")

        # The session survived C's attempt: B still works with it.
        assert len(_session_cookies(context)) == 1
        page_b.click("#profile-button")
        page_b.wait_for_selector("dd[data-field=username]")
        assert page_b.is_hidden("#problem")
        page_b.click("#logout-button")
        page_b.wait_for_selector("#status:text-is('Logged out')")
        assert _session_cookies(context) == []
        _assert_logged_out(page_b)
        shots(page_b, "allowed-origin-logged-out")
    finally:
        context.close()
    assert origins.not_found() == []
    # The browser asked for the icon the page names (Playwright does not see that request; B's server does).
    assert ("GET", "/static/favicon.svg", 200) in origins.static_served
    assert not [r for r in origins.static_served if r[1] == "/favicon.ico"]


def _log_out(page: Any) -> None:
    """Click Log out until the page says so (idempotent), printing what it showed instead.

    In two full-suite runs on one day the page on the second origin did not say "Logged out" within 15 s after one
    click, and never alone or in this file (dozens of runs, some under CPU load). Logging out is this test's
    clean-up, not what it proves; what the page showed is printed so the next occurrence can be read.
    """
    for attempt in range(3):
        page.click("#logout-button")
        try:
            page.wait_for_selector("#status:text-is('Logged out')", timeout=10_000)
            return
        except Exception:  # playwright's TimeoutError: say what the page shows, try again
            status = page.inner_text("#status")
            problem = page.evaluate("() => document.querySelector('#problem')?.innerText ?? ''")
            print(f"logout attempt {attempt + 1}: status {status!r}, problem {problem!r}")
    page.wait_for_selector("#status:text-is('Logged out')")


def test_a_link_cannot_point_the_page_at_another_origin(
    playwright_browser: Any, origins: Origins, shots: Shots
) -> None:
    """?api=D on the real page (A) and on its copy (B): the typed password goes to the API, and nothing to D."""
    assert (
        httpx.post(f"{origins.api}/register", json={"username": "alice", "password": PASSWORD}, timeout=30).status_code
        == 201
    )
    context = playwright_browser.new_context()
    sent: list[str] = []
    console: list[str] = []
    context.on("request", lambda r: sent.append(f"{r.method} {r.url}"))
    try:
        for name, page_url in (("a", f"{origins.api}/"), ("b", f"{origins.allowed}/index.html")):
            page = _open(context, f"{page_url}?api={origins.elsewhere}", console)
            assert page.inner_text("#api-url") == origins.api
            _login(page)
            page.wait_for_selector("text=Logged in as alice")
            _rows(page, 1)
            page.click("#profile-button")
            page.wait_for_selector("dd[data-field=username]")
            # Not even a script on the page can reach D: the CSP allows connections to the page and the API only.
            outcome = page.evaluate(
                "url => fetch(url, {method: 'POST', body: 'x'}).then(() => 'sent', (e) => 'blocked')",
                f"{origins.elsewhere}/steal",
            )
            assert outcome == "blocked"
            _log_out(page)
            shots(page, f"api-parameter-ignored-{name}")
            page.close()
    finally:
        context.close()
    assert origins.elsewhere_hits == []
    assert not [line for line in sent if origins.elsewhere in line.split("?", 1)[0]], sent
    allowed_prefixes = (f"{origins.api}/", f"{origins.allowed}/")
    assert all(line.split(" ", 1)[1].startswith(allowed_prefixes) for line in sent), sent
    assert any(line == f"POST {origins.api}/login" for line in sent), sent
    # The script's attempts, stopped by the browser before any request existed.
    csp = f"Connecting to '{origins.elsewhere}/steal' violates the following Content Security Policy directive"
    assert len([line for line in console if line.startswith(csp)]) >= 2, console
    assert origins.not_found() == []


def _register(api: str, username: str = "alice", **fields: str) -> None:
    reply = httpx.post(f"{api}/register", json={"username": username, "password": PASSWORD, **fields}, timeout=30)
    assert reply.status_code == 201, reply.text


def _logged_in_page(context: Any, url: str, sessions: int = 1) -> Any:
    """A page of ``context`` logged in as alice, where alice has ``sessions`` sessions in all."""
    page = _open(context, url)
    _login(page)
    page.wait_for_selector("text=Logged in as alice")
    _rows(page, sessions)
    return page


def test_the_page_changes_the_password(playwright_browser: Any, origins: Origins, shots: Shots) -> None:
    """A wrong current password is refused in words; the right one changes it: the old one no longer logs in."""
    _register(origins.api)
    new_password = "a new long passphrase"
    context = playwright_browser.new_context()
    try:
        page = _logged_in_page(context, origins.api + "/")
        (old_cookie,) = _session_cookies(context)
        other = _other_device(origins.api)

        page.fill("#password-form input[name=current_password]", "not my password")
        page.fill("#password-form input[name=new_password]", new_password)
        page.click("#password-button")
        assert _problem(page) == ("The current password is wrong", "the current password is wrong")
        assert _hint(page) == (
            "The current password you typed is not right, so your password was not changed. You are still logged in."
        )
        assert page.inner_text("#status") == "Logged in as alice"
        assert _alive(origins.api, other)
        shots(page, "wrong-current-password")

        page.fill("#password-form input[name=current_password]", PASSWORD)
        page.fill("#password-form input[name=new_password]", new_password)
        page.click("#password-button")
        page.wait_for_selector("text=Password changed.")
        assert page.is_hidden("#problem")
        assert page.input_value("#password-form input[name=current_password]") == ""
        assert page.input_value("#password-form input[name=new_password]") == ""
        # The server set this browser a new cookie, and ended every other session.
        (new_cookie,) = _session_cookies(context)
        assert new_cookie["value"] != old_cookie["value"]
        assert not _alive(origins.api, other)
        rows = _rows(page, 1)
        assert "(this browser)" in rows[0].inner_text()
        assert page.inner_text("#status") == "Logged in as alice"
        shots(page, "password-changed")

        page.click("#logout-button")
        page.wait_for_selector("#status:text-is('Logged out')")
        _login(page)  # the old password
        assert _problem(page) == ("Invalid username or password", "invalid username or password")
        assert _session_cookies(context) == []
        _assert_logged_out(page)
        shots(page, "old-password-refused")

        _login(page, password=new_password)
        page.wait_for_selector("text=Logged in as alice")
        _rows(page, 1)
        shots(page, "new-password-works")

        # Wrong current passwords until the account's guess limit: a 429 told as a wait, from Retry-After.
        for _ in range(6):
            page.fill("#password-form input[name=current_password]", "still not my password")
            page.fill("#password-form input[name=new_password]", "yet another passphrase")
            page.click("#password-button")
            title, _detail = _problem(page)
            if title != "The current password is wrong":
                break
        assert title == "Too many failed logins"
        hint = _hint(page)
        assert hint.startswith("Too many wrong passwords were tried for this account, so password checks are paused.")
        assert "Try again in 15 minutes (after " in hint, hint  # SESSION_LOGIN_WINDOW_SECONDS: 900
        assert page.inner_text("#status") == "Logged in as alice"
        shots(page, "too-many-attempts")
    finally:
        context.close()
    assert origins.not_found() == []


def test_the_page_edits_the_profile_and_explains_a_conflict(
    playwright_browser: Any, origins: Origins, shots: Shots
) -> None:
    """Edits carry If-Match; an edit made elsewhere meanwhile is a 412 the page explains, then re-applies."""
    _register(origins.api, display_name="Alice", email="alice@example.com")
    first = playwright_browser.new_context()
    second = playwright_browser.new_context()
    patches: list[str | None] = []
    first.on("request", lambda r: patches.append(r.headers.get("if-match")) if r.method == "PATCH" else None)
    try:
        page = _logged_in_page(first, origins.api + "/")
        assert page.input_value("#profile-form input[name=display_name]") == "Alice"
        assert page.input_value("#profile-form input[name=email]") == "alice@example.com"
        assert page.inner_text("#profile-version") == "(version 1)"

        page.fill("#profile-form input[name=display_name]", "Alice Liddell")
        page.click("#profile-save-button")
        page.wait_for_selector("text=Profile saved (version 2).")
        assert page.inner_text("dd[data-field=display_name]") == "Alice Liddell"
        assert patches == ['"1"']
        shots(page, "profile-saved")

        # Removing a field: an empty input sends null.
        page.fill("#profile-form input[name=email]", "")
        page.click("#profile-save-button")
        page.wait_for_selector("text=Profile saved (version 3).")
        assert page.inner_text("dd[data-field=email]") == "—"
        assert patches == ['"1"', '"2"']

        # Another browser changes the email, while the first still shows version 3.
        elsewhere = _logged_in_page(second, origins.api + "/", sessions=2)
        elsewhere.fill("#profile-form input[name=email]", "alice@wonderland.example")
        elsewhere.click("#profile-save-button")
        elsewhere.wait_for_selector("text=Profile saved (version 4).")
        shots(elsewhere, "changed-elsewhere")

        page.fill("#profile-form input[name=display_name]", "Alice in Wonderland")
        page.click("#profile-save-button")
        assert _problem(page) == ("The resource has changed", "the profile is at version 4, not 3")
        assert _hint(page).startswith("Your profile was changed somewhere else since this page showed it")
        assert patches == ['"1"', '"2"', '"3"']
        page.wait_for_selector("#conflict:not([hidden])")
        # The current values are shown, in the profile and the form; the user's change is kept aside.
        assert page.inner_text("dd[data-field=email]") == "alice@wonderland.example"
        assert page.input_value("#profile-form input[name=email]") == "alice@wonderland.example"
        assert page.input_value("#profile-form input[name=display_name]") == "Alice Liddell"
        assert page.inner_text("#profile-version") == "(version 4)"
        assert page.inner_text("#conflict-mine dd[data-field=display_name]") == "Alice in Wonderland"
        assert page.locator("#conflict-mine dd").count() == 1
        shots(page, "conflict")

        page.click("#reapply-button")
        assert page.is_hidden("#conflict")
        assert page.input_value("#profile-form input[name=display_name]") == "Alice in Wonderland"
        assert page.input_value("#profile-form input[name=email]") == "alice@wonderland.example"
        page.click("#profile-save-button")
        page.wait_for_selector("text=Profile saved (version 5).")
        assert patches == ['"1"', '"2"', '"3"', '"4"']
        shots(page, "re-applied")

        # Both edits hold: the other browser's email and this one's display name.
        token = _other_device(origins.api)
        profile = httpx.get(f"{origins.api}/profile", headers={"Authorization": f"Bearer {token}"}, timeout=30).json()
        assert (profile["display_name"], profile["email"], profile["version"]) == (
            "Alice in Wonderland",
            "alice@wonderland.example",
            5,
        )

        # A bad value is the server's problem, shown as it is.
        page.fill("#profile-form input[name=display_name]", "x" * 101)
        page.click("#profile-save-button")
        title, detail = _problem(page)
        assert title == "The request does not match the schema"
        assert detail == "display_name: String should have at most 100 characters"
        shots(page, "invalid-display-name")
    finally:
        first.close()
        second.close()
    assert origins.not_found() == []


@pytest.mark.parametrize("server_env", [{"SESSION_IDLE_SECONDS": "5"}], ids=["idle-5s"])
def test_an_expired_session_returns_the_page_to_login(playwright_browser: Any, origins: Origins, shots: Shots) -> None:
    """An idle session ends: the page is logged out, says why, and has the login form ready; logging in works.

    The cookie's Max-Age is the session's deadline, so the browser drops it as the session expires and the
    API answers 401 `no_credentials` to a page that was logged in. A browser whose clock is behind keeps the
    cookie: then the API's own 401 `expired` is told the same way, as the page loads.
    """
    import time

    _register(origins.api)
    context = playwright_browser.new_context()
    try:
        page = _logged_in_page(context, origins.api + "/")
        (cookie,) = _session_cookies(context)
        shots(page, "logged-in")
        time.sleep(6)
        page.click("#sessions-button")
        assert _problem(page) == (
            "Authentication required",
            "no credentials: send a Bearer token or the session cookie",
        )
        expired = (
            "Your session has expired (it was unused for too long, or reached its maximum age). "
            "Log in again to continue."
        )
        assert _hint(page) == expired
        assert page.inner_text("#status") == "Not logged in: your session has ended"
        _assert_logged_out(page)
        assert page.inner_text("#profile") == ""
        assert page.locator("#sessions tbody tr").count() == 0
        assert page.input_value("#login-form input[name=username]") == "alice"
        assert page.evaluate("document.activeElement.name") == "password"
        shots(page, "expired")

        page.fill("#login-form input[name=password]", PASSWORD)
        page.press("#login-form input[name=password]", "Enter")
        page.wait_for_selector("text=Logged in as alice")
        _rows(page, 1)
        _assert_logged_in(page)
        shots(page, "logged-in-again")

        # The expired session's cookie, still held (a clock behind): the page loads logged out, and says why.
        context.clear_cookies()
        context.add_cookies([{k: cookie[k] for k in ("name", "value", "domain", "path", "httpOnly", "secure")}])
        page.reload()
        page.wait_for_selector("body[data-ready=true]")
        assert _problem(page) == ("Authentication required", "the session has expired")
        assert _hint(page) == expired
        _assert_logged_out(page)
        shots(page, "expired-on-load")
    finally:
        context.close()
    assert origins.not_found() == []


def test_a_session_revoked_elsewhere_returns_the_page_to_login(
    playwright_browser: Any, origins: Origins, shots: Shots
) -> None:
    """Another browser ends this one's session: this page's next request is a 401 whose `reason` it explains."""
    _register(origins.api)
    mine = playwright_browser.new_context()
    theirs = playwright_browser.new_context()
    try:
        page = _logged_in_page(mine, origins.api + "/")
        elsewhere = _logged_in_page(theirs, origins.api + "/", sessions=2)
        elsewhere.click("#revoke-others-button")
        elsewhere.wait_for_selector("text=All other sessions revoked.")
        _rows(elsewhere, 1)

        page.fill("#profile-form input[name=display_name]", "Alice")
        page.click("#profile-save-button")
        assert _problem(page) == ("Authentication required", "the session does not exist or was revoked")
        ended_elsewhere = (
            "Your session was ended elsewhere: logged out, revoked from another device, or closed by a password "
            "change. Log in again to continue."
        )
        assert _hint(page) == ended_elsewhere
        _assert_logged_out(page)
        assert page.input_value("#profile-form input[name=display_name]") == ""
        assert page.input_value("#login-form input[name=username]") == "alice"
        shots(page, "revoked-elsewhere")

        _login(page)
        page.wait_for_selector("text=Logged in as alice")
        _rows(page, 2)

        # A password change elsewhere ends this session too.
        elsewhere.fill("#password-form input[name=current_password]", PASSWORD)
        elsewhere.fill("#password-form input[name=new_password]", "a new long passphrase")
        elsewhere.click("#password-button")
        elsewhere.wait_for_selector("text=Password changed.")
        page.click("#sessions-button")
        assert _problem(page) == ("Authentication required", "the session does not exist or was revoked")
        assert _hint(page) == ended_elsewhere
        _assert_logged_out(page)
        shots(page, "password-changed-elsewhere")
    finally:
        mine.close()
        theirs.close()
    assert origins.not_found() == []


@pytest.mark.parametrize("server_env", [{"SESSION_REAUTH_SECONDS": "5"}], ids=["reauth-5s"])
def test_the_page_asks_for_the_password_then_retries(playwright_browser: Any, origins: Origins, shots: Shots) -> None:
    """A 403 `reauthentication_required` opens the in-page password form; the right password retries the action."""
    import time

    from playwright.sync_api import expect

    _register(origins.api)
    context = playwright_browser.new_context()
    requests: list[str] = []
    context.on("request", lambda r: requests.append(f"{r.method} {r.url.split('/', 3)[3]}"))
    try:
        page = _logged_in_page(context, origins.api + "/")
        other = _other_device(origins.api)
        page.click("#sessions-button")
        rows = _rows(page, 2)
        (old_cookie,) = _session_cookies(context)
        other_row = next(r for r in rows if "(this browser)" not in r.inner_text())
        time.sleep(6)  # the password was typed more than SESSION_REAUTH_SECONDS ago

        other_row.locator("button.revoke").click()
        assert _problem(page)[0] == "Re-enter your password to continue"
        assert (
            _hint(page)
            == "For this, confirm it is you: type your password (it is asked again 5 seconds after you last typed it)."
        )
        expect(page.locator("#reauth-form")).to_be_visible()
        assert page.evaluate("document.activeElement.name") == "password"
        assert _alive(origins.api, other)
        shots(page, "password-asked")

        page.fill("#reauth-form input[name=password]", "not my password")
        page.click("#reauth-button")
        assert _problem(page)[0] == "The current password is wrong"
        assert _hint(page).startswith("The password you typed is not right, so nothing was done.")
        expect(page.locator("#reauth-form")).to_be_visible()
        assert _alive(origins.api, other)
        shots(page, "wrong-password")

        requests.clear()
        page.fill("#reauth-form input[name=password]", PASSWORD)
        page.click("#reauth-button")
        page.wait_for_selector("text=revoked.")
        expect(page.locator("#reauth-section")).to_be_hidden()
        assert not _alive(origins.api, other)
        # One reauthentication, then the one failed request again, then the refreshed list.
        delete = [r for r in requests if r.startswith("DELETE ")]
        assert requests[0] == "POST reauthenticate" and len(delete) == 1, requests
        (new_cookie,) = _session_cookies(context)
        assert new_cookie["value"] != old_cookie["value"]  # the token was rotated: a new cookie
        assert not _alive(origins.api, old_cookie["value"])
        rows = _rows(page, 1)
        assert "(this browser)" in rows[0].inner_text()
        assert page.inner_text("#status") == "Logged in as alice"
        shots(page, "retried")

        # Cancel: nothing is done, and the form goes away.
        time.sleep(6)
        page.click("#revoke-others-button")
        page.wait_for_selector("#reauth-section:not([hidden])")
        page.click("#reauth-cancel-button")
        page.wait_for_selector("text=Nothing was done.")
        expect(page.locator("#reauth-section")).to_be_hidden()
        shots(page, "cancelled")

        # The trusted devices ask the same way; the password confirmed, the list loads.
        page.click("#devices-button")
        assert _problem(page)[0] == "Re-enter your password to continue"
        page.fill("#reauth-form input[name=password]", PASSWORD)
        page.click("#reauth-button")
        devices = page.locator("#devices tbody tr")
        expect(devices).to_have_count(2)  # this browser, and the other device's login (no name: an unknown one)
        names = [_cells(row)[0] for row in devices.all()]
        assert "Unknown browser" in names and [n for n in names if n.endswith(" (this browser)")], names
        expect(page.locator("#reauth-section")).to_be_hidden()
        shots(page, "devices-after-password")
    finally:
        context.close()
    assert origins.not_found() == []


FIREFOX = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:146.0) Gecko/20100101 Firefox/146.0"


def _cells(row: Any) -> list[str]:
    return [str(text) for text in row.locator("td").all_inner_texts()]


@pytest.mark.parametrize("server_env", [{"SESSION_CLIENT_GEO_HEADER": "X-Client-Geo-Location"}], ids=["geo"])
def test_the_page_shows_devices_and_security_activity(playwright_browser: Any, origins: Origins, shots: Shots) -> None:
    """Sessions show a device name; trusted devices are listed and revocable; security events page by 20."""
    from playwright.sync_api import expect

    _register(origins.api)
    context = playwright_browser.new_context()
    try:
        page = _logged_in_page(context, origins.api + "/")
        berlin = {"User-Agent": FIREFOX, "X-Client-Geo-Location": "DE,Berlin"}
        other = _other_device(origins.api, berlin)

        # Sessions: the device's name, the raw User-Agent as its tooltip, the network and the place.
        page.click("#sessions-button")
        rows = _rows(page, 2)
        (firefox,) = [r for r in rows if "(this browser)" not in r.inner_text()]
        device = firefox.locator("td[data-field=device]")
        assert device.inner_text() == "Firefox 146 on Windows"
        assert device.get_attribute("title") == FIREFOX
        assert firefox.locator("td[data-field=network]").inner_text() == "127.0.0.0/24 (DE,Berlin)"
        (mine,) = [r for r in rows if "(this browser)" in r.inner_text()]
        browser_agent = page.evaluate("navigator.userAgent")
        assert mine.locator("td[data-field=device]").get_attribute("title") == browser_agent
        browser_name = mine.locator("td[data-field=device]").inner_text()
        assert browser_name.endswith(" on Linux")  # Chromium's name, not its User-Agent
        assert mine.locator("td[data-field=network]").inner_text() == "127.0.0.0/24"
        shots(page, "sessions-with-devices")

        # Trusted devices: this browser and the other one, each with a Revoke button.
        devices = page.locator("#devices tbody tr")
        page.click("#devices-button")
        expect(devices).to_have_count(2)
        texts = [_cells(r) for r in devices.all()]
        assert sorted(t[0] for t in texts) == sorted(["Firefox 146 on Windows", f"{browser_name} (this browser)"])
        shots(page, "devices")
        page.locator("#devices tbody tr", has_text="Firefox 146 on Windows").locator("button.revoke-device").click()
        page.wait_for_selector("text=Firefox 146 on Windows is no longer trusted.")
        expect(devices).to_have_count(1)
        assert _cells(devices.first)[0].endswith(" (this browser)")
        # The API agrees: one trusted device left, and the other device's session stays (only its trust ended).
        listed = httpx.get(f"{origins.api}/devices", headers={"Authorization": f"Bearer {other}"}, timeout=30)
        assert [d["device"] for d in listed.json()["devices"]] == [browser_name]
        assert _alive(origins.api, other)
        shots(page, "device-revoked")

        # Twenty more events, from the other device, so the activity has a second page.
        for n in range(EVENTS_PAGE):
            reply = httpx.patch(
                f"{origins.api}/profile",
                json={"email": f"alice{n}@example.com"},
                headers={"Authorization": f"Bearer {other}", **berlin},
                timeout=30,
            )
            assert reply.status_code == 200, reply.text

        events = page.locator("#events tbody tr")
        page.click("#events-button")
        expect(events).to_have_count(EVENTS_PAGE)
        assert {r.get_attribute("data-type") for r in events.all()} == {"email_changed"}
        assert _cells(events.first)[1:] == ["Email changed", "Firefox 146 on Windows", "127.0.0.0/24", "DE,Berlin"]
        expect(page.locator("#events-more-button")).to_be_visible()
        shots(page, "events-first-page")

        page.click("#events-more-button")
        expect(events).to_have_count(EVENTS_PAGE + 3)
        expect(page.locator("#events-more-button")).to_be_hidden()
        older = [_cells(r)[1:] for r in events.all()[EVENTS_PAGE:]]
        assert older == [
            ["A device is no longer trusted: Firefox 146 on Windows", browser_name, "127.0.0.0/24", "—"],
            ["Signed in from a new device", "Firefox 146 on Windows", "127.0.0.0/24", "DE,Berlin"],
            ["Signed in from a new device", browser_name, "127.0.0.0/24", "—"],
        ]
        assert [r.get_attribute("data-type") for r in events.all()[EVENTS_PAGE:]] == [
            "device_revoked",
            "login_new_device",
            "login_new_device",
        ]
        shots(page, "events-second-page")

        # Logging out leaves nothing of the account on the page.
        page.click("#logout-button")
        page.wait_for_selector("#status:text-is('Logged out')")
        assert devices.count() == 0
        assert events.count() == 0
        expect(page.locator("#events-more-button")).to_be_hidden()
    finally:
        context.close()
    assert origins.not_found() == []


EVENTS_PAGE = 20  # app.js: EVENTS_PAGE
