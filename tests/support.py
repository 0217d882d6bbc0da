"""What the tests share: the clocks, the app under test's service, logins, liveness probes, problem assertions,
and the timed-login race harness.

Time is set one way: build a clock here and hand it to ``use_clock``, which puts it on the service of the
app the last ``make_client`` built (every rule reads the time from there). No test assigns ``service.clock``.
"""

from __future__ import annotations

import concurrent.futures
import contextvars
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from starlette.testclient import TestClient

from session.admin import AdminService
from session.clock import Clock, utc_now
from session.service import SessionService
from tests.conftest import bearer, main_module

PASSWORD = "correct horse battery"
C = TypeVar("C", bound=Clock)


# --- time ---------------------------------------------------------------------------------------------------


class FakeClock:
    """A stopped clock the test moves; starts at the real time so Firestore timestamps stay sensible."""

    def __init__(self) -> None:
        self.now = datetime.now(UTC)
        self._lock = threading.Lock()

    def __call__(self) -> datetime:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += timedelta(seconds=seconds)


class Ahead:
    """The real clock, ``seconds`` ahead: time still passes (races need it); the test moves it instead of sleeping."""

    def __init__(self) -> None:
        self.seconds = 0.0  # one float: thread-safe enough

    def __call__(self) -> datetime:
        return utc_now() + timedelta(seconds=self.seconds)


class Monotonic:
    """The session cache's clock (monotonic seconds), moved by the test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def service() -> SessionService:
    """The service of the app the last ``make_client`` (or ``create_app``) built."""
    built: SessionService = main_module().api_instance.service
    return built


def use_clock(clock: C) -> C:
    """Make ``clock`` the time of the app the last ``make_client`` built; returns it."""
    service().clock = clock
    return clock


def use_cache_clock(clock: Monotonic) -> Monotonic:
    """Make ``clock`` the monotonic time of that app's session cache (``SESSION_CACHE_SECONDS`` > 0); returns it."""
    cache = service().cache
    assert cache is not None, "the app was built without a cache (SESSION_CACHE_SECONDS=0)"
    cache.monotonic = clock
    return clock


def admin() -> AdminService:
    """The admin operations on the service of the app the last ``make_client`` built."""
    return AdminService(service())


# --- requests -----------------------------------------------------------------------------------------------


def login_attempt(client: TestClient, username: str, password: str = PASSWORD) -> tuple[int, str | None]:
    """A login's status, and its token when it succeeded (unlike ``conftest.login``, any status is fine)."""
    response = client.post("/login", json={"username": username, "password": password})
    return response.status_code, response.json()["token"] if response.status_code == 200 else None


def live_tokens(client: TestClient, tokens: list[str | None] | list[str]) -> list[str]:
    """The tokens among ``tokens`` (``None`` skipped) whose session the service accepts now, in order."""
    return [t for t in tokens if t and client.get("/profile", headers=bearer(t)).status_code == 200]


def still_working(client: TestClient, tokens: list[str]) -> list[str]:
    """The tokens not refused as unauthenticated (anything but 401: a 503 is not a revocation)."""
    return [t for t in tokens if client.get("/profile", headers=bearer(t)).status_code != 401]


def assert_problem(response: Any, status: int, code: str) -> dict[str, Any]:
    """Assert ``response`` is a problem+json document with ``status`` and ``code``; its body."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json"), response.headers
    body: dict[str, Any] = response.json()
    assert (body["status"], body["code"]) == (status, code), body
    return body


# --- races --------------------------------------------------------------------------------------------------


def later(delay: float, call: Callable[[], Any]) -> Any:
    """``call()`` after ``delay`` seconds: a trial of a race starts one side a little later (another order)."""
    time.sleep(delay)
    return call()


def race_logins_against(
    client: TestClient,
    username: str,
    action: Callable[[], None],
    *,
    attackers: int = 4,
    in_flight_of: str | None = None,
    password: str = PASSWORD,
) -> list[str]:
    """Log in as ``username`` with ``password`` from ``attackers`` threads while ``action`` runs.

    The attackers start with ``action`` (a barrier), keep logging in until it has returned,
    and finish the login they have in flight. Returns every token they were given, or with
    ``in_flight_of`` (a ``SessionService`` method that ``action`` calls) those of logins whose
    read of the user had returned before the service began that method: each of those verified
    the credentials as they were before the change, and was in flight when it started. The
    order is taken inside the app, not in the test's threads, whose scheduling is noise. (A
    login that had merely *begun* before the change may read the user after it took effect,
    under load: it is then a new login, legitimately alive, and not counted.)
    """
    start = threading.Barrier(attackers + 1)
    done = threading.Event()
    app = service()
    logins: list[tuple[float, str]] = []
    began: list[float] = []
    lock = threading.Lock()
    real_login = app.login
    read_at: contextvars.ContextVar[list[float]] = contextvars.ContextVar("read_at")

    async def timed_login(*args: Any, **kwargs: Any) -> Any:
        read_at.set(reads := [])
        result = await real_login(*args, **kwargs)
        with lock:
            logins.append((reads[0], result.token))
        return result

    def timed_read(real: Callable[..., Any]) -> Callable[..., Any]:
        async def read(*args: Any, **kwargs: Any) -> Any:
            result = await real(*args, **kwargs)
            read_at.get([]).append(time.monotonic())  # the user as this login verified it has been read
            return result

        return read

    def attack() -> None:
        start.wait()
        while not done.is_set():
            status, _ = login_attempt(client, username, password)
            assert status in (200, 401, 403, 429), status  # 403: the account is disabled

    def act() -> None:
        start.wait()
        time.sleep(0.02)  # let the first logins get under way
        try:
            action()
        finally:
            done.set()

    patched: dict[str, Callable[..., Any]] = {"login": timed_login}
    store_patched = {"reserve_and_read_login": timed_read(app.store.reserve_and_read_login)}
    if in_flight_of is not None:
        real_action = getattr(app, in_flight_of)

        async def timed_action(*args: Any, **kwargs: Any) -> Any:
            began.append(time.monotonic())
            return await real_action(*args, **kwargs)

        patched[in_flight_of] = timed_action
    for name, wrapper in patched.items():
        setattr(app, name, wrapper)
    for name, wrapper in store_patched.items():
        setattr(app.store, name, wrapper)
    try:
        with concurrent.futures.ThreadPoolExecutor(max_workers=attackers + 1) as pool:
            futures = [pool.submit(attack) for _ in range(attackers)]
            owner = pool.submit(act)
            owner.result()
            for future in futures:
                future.result()
    finally:
        for name in patched:
            delattr(app, name)  # back to the class's method
        for name in store_patched:
            delattr(app.store, name)
    if in_flight_of is None:
        return [token for _, token in logins]
    assert began, f"the action never called {in_flight_of}"
    return [token for read, token in logins if read < began[0]]
