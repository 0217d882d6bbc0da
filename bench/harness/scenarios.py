"""What ``make bench`` measures, each scenario a function over one ``Bench`` (the running servers).

- read path: GET /profile on every server at every concurrency level, in rotating order per repeat: the service,
  the floor, ``@require_session``, the peers, and the service with ``SESSION_CACHE_SECONDS=30``;
- login at concurrency 1: success against the login floor, and a wrong password against an unknown user;
- fresh instances: spawn to the first 200 on /profile (cold start), then a profile-only load (peak memory), then a
  login load (peak memory with argon2 at work), for the service and the floor, each in a new process;
- profiles: py-spy on the service and the floor under the same loads.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
import urllib.error
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from .common import BENCH, PASSWORD, ROOT, VENV_BIN, log
from .load import Phase, wrk
from .opslog import Ops, count_ops
from .peers import PEER_NAMES, peer_cookie
from .processes import Server, answers_200, call, functions_framework
from .profiling import Profile, Sampling, pyspy_run
from .stats import Figure

SERVICE, FLOOR, DECORATED, CACHED = "service", "floor", "decorated", "service-cache30"
# The failed-login rows need the lockout out of reach; the service itself runs with the default settings.
LENIENT = "service-lockout-off"
TRUSTED = "login, trusted browser"
CACHE_SECONDS = "30"
CACHE_ENV = {"SESSION_CACHE_SECONDS": CACHE_SECONDS}
# The most failures allowed, in a 1 s window: the failed-login rows measure the failure path, not the 429.
CAP = 20  # SESSION_MAX_PER_USER's default
LENIENT_ENV = {"SESSION_LOGIN_MAX_FAILURES": "1000", "SESSION_LOGIN_WINDOW_SECONDS": "1"}
PROFILE_C = 32  # the concurrency of the CPU, throughput and memory targets
LOGIN_LOAD_C = 4  # logins in flight during the login memory run: more than the cores, as under a burst
LOGIN_FIRST = "login, first (no device cookie)"
LOGIN_TRUSTED = "login, trusted browser (its device cookie)"
COST_USERS = 5  # new users whose first and trusted-browser logins are counted, below the cap on sessions
SETUP_ATTEMPTS = 4  # a set-up request (a login for the next phase) is tried this often before the run stops
SETUP_PAUSE_S = 1.0  # first pause between attempts; doubled after each (1 + 2 + 4 s at most)


@dataclass
class Config:
    seconds: int
    repeats: int
    levels: list[int]
    profile: bool
    pyspy: Path | None = None


@dataclass
class Results:
    """Everything one run measured; ``report`` renders it."""

    started: datetime
    config: Config
    workers: str
    threads: str
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load: dict[tuple[str, int], list[Phase]] = field(default_factory=dict)
    login: dict[str, list[Phase]] = field(default_factory=dict)
    cold: dict[str, list[float]] = field(default_factory=dict)
    fresh_profile: dict[str, list[Phase]] = field(default_factory=dict)
    fresh_login: dict[str, list[Phase]] = field(default_factory=dict)
    imports: dict[str, Figure] = field(default_factory=dict)
    ops: dict[str, Ops] = field(default_factory=dict)
    profiles: dict[str, Profile] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    cache_setting_known: bool = False
    setup_retries: list[str] = field(default_factory=list)  # each set-up attempt that failed and was tried again
    elapsed_s: float = 0.0  # the whole run, tools and set-up included


def _transient(status: int) -> bool:
    """A set-up answer worth trying again: the shared emulator or the server stalled for a moment."""
    return status == 429 or status >= 500


def with_retries(what: str, attempt: Callable[[], tuple[int, Any]], ok: int, res: Results) -> Any:
    """``attempt()`` until it answers ``ok``: at most ``SETUP_ATTEMPTS`` tries, pausing between them.

    ``attempt`` returns (status, value); its value is returned once the status is ``ok``. A 429, a 5xx or a
    connection error is tried again after a pause, and each such failure is recorded in ``res.setup_retries``
    (the report lists them). Any other status, or the last failure, raises ``RuntimeError``: a real fault stops
    the run, it is not retried away.
    """
    pause = SETUP_PAUSE_S
    for n in range(1, SETUP_ATTEMPTS + 1):
        try:
            status, value = attempt()
        except (urllib.error.URLError, ConnectionError, TimeoutError) as exc:
            status, value, why = 0, None, f"{type(exc).__name__}: {exc}"
        else:
            if status == ok:
                return value
            why = f"{status} {value}"
            if not _transient(status):
                raise RuntimeError(f"{what}: {why}")
        if n == SETUP_ATTEMPTS:
            raise RuntimeError(f"{what}: {why} (attempt {n} of {SETUP_ATTEMPTS}, giving up)")
        res.setup_retries.append(f"{time.strftime('%H:%M:%S')} {what}: {why}"[:300])
        log(f"{what}: {why}; trying again in {pause:.0f} s (attempt {n} of {SETUP_ATTEMPTS})")
        time.sleep(pause)
        pause *= 2
    raise AssertionError("unreachable")


@dataclass
class Bench:
    """The servers of one run and the users they share (all on one emulator)."""

    config: Config
    env: dict[str, str]
    res: Results
    servers: list[Server]
    peer_headers: dict[str, dict[str, str]] = field(default_factory=dict)
    user: str = "bench"
    wrong_user: str = "bench-wrong"
    device_cookie: str = ""  # "name=value" of the bench user's device cookie (a trusted browser's)

    def server(self, name: str) -> Server:
        return next(s for s in self.servers if s.name == name)

    @property
    def service(self) -> Server:
        return self.server(SERVICE)

    def token(self) -> str:
        """A fresh session of the bench user (a new one per phase keeps every read inside the touch window).

        A login that fails for a moment (a 503 when the shared emulator stalls) is tried again; see
        ``with_retries``.
        """

        def login() -> tuple[int, Any]:
            status, body, _ = call(f"{self.service.base}/login", "POST", {"username": self.user, "password": PASSWORD})
            return status, body

        body = with_retries(f"login {self.user}", login, 200, self.res)
        return str(body["token"])

    def device_login(self, user: str | None = None, cookie: str | None = None) -> tuple[int, str]:
        """One login of ``user`` (sending ``cookie``): (status, the device cookie it set, as ``name=value``)."""
        status, body, headers = call(
            f"{self.service.base}/login",
            "POST",
            {"username": user or self.user, "password": PASSWORD},
            {"Cookie": cookie} if cookie else None,
        )
        if status != 200:
            return status, str(body)
        for raw in headers.get("set-cookie-all", "").split("\n"):
            name, _, rest = raw.partition("=")
            if name.endswith("session-device"):
                return status, f"{name}={rest.partition(';')[0]}"
        return status, cookie or ""

    def bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token()}"}

    def headers_for(self, server: Server) -> dict[str, str]:
        """What a GET /profile to ``server`` must carry: the peer's cookie, or a fresh Bearer token."""
        return self.peer_headers.get(server.name) or self.bearer()


# --- servers -------------------------------------------------------------------------------------


def with_root(env: dict[str, str]) -> dict[str, str]:
    """``env`` with the repository on PYTHONPATH (for modules under ``bench/`` that import ``session``)."""
    return {**env, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH", "")]))}


def service_server(name: str, env: dict[str, str]) -> Server:
    return functions_framework(name, "api", ROOT / "main.py", env)


def floor_server(name: str, env: dict[str, str]) -> Server:
    return functions_framework(name, "floor", BENCH / "floor.py", with_root(env))


def own_servers(env: dict[str, str], with_decorated: bool) -> list[Server]:
    """The service, the floor, the cache-mode service and (when it imports) the ``@require_session`` hook.

    The service runs as deployed: the ``api`` target, JSON request logs, no ``SESSION_*`` variable but
    the project. The lockout-off service (failed logins only) comes last and takes no part in the read path.
    """
    servers = [service_server(SERVICE, env), floor_server(FLOOR, env)]
    if with_decorated:
        servers.append(functions_framework(DECORATED, "profile", BENCH / "decorated.py", with_root(env)))
    servers.append(service_server(CACHED, {**env, **CACHE_ENV}))
    servers.append(service_server(LENIENT, {**env, **LENIENT_ENV}))
    return servers


def cache_setting_known() -> bool:
    """Whether the service knows ``SESSION_CACHE_SECONDS`` yet (its source names it)."""
    return any("SESSION_CACHE_SECONDS" in path.read_text() for path in (ROOT / "session").glob("*.py"))


def require_session_hook(env: dict[str, str]) -> str | None:
    """None when ``bench/decorated.py`` imports (``session.require_session`` exists), else why not."""
    done = subprocess.run(
        [str(VENV_BIN / "python"), "-c", "import decorated"],
        cwd=BENCH,
        env=with_root(env),
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode == 0:
        return None
    return (done.stderr.strip().splitlines() or ["import failed"])[-1]


def compile_sources() -> None:
    """Write the bytecode of the servers' own sources, as a deployment does before any instance starts.

    The Functions Framework buildpack runs ``python3 -m compileall -f -q .`` over the function's source
    (its build log shows the step: GoogleCloudPlatform/buildpacks#302), so no instance compiles its modules.
    Here ``PYTHONDONTWRITEBYTECODE`` may be set, and then every fresh process would compile them again:
    about 45 modules for the service, one for the floor.
    """
    sources = ["main.py", "session", "bench/floor.py", "bench/decorated.py"]
    subprocess.run([str(VENV_BIN / "python"), "-m", "compileall", "-q", *sources], cwd=ROOT, check=True)


def import_time_ms(module: str, cwd: Path, env: dict[str, str], repeats: int) -> Figure:
    """Total of ``python -X importtime -c 'import <module>'`` (sum of the self column), in ms."""
    values = []
    for i in range(repeats + 1):
        done = subprocess.run(
            [str(VENV_BIN / "python"), "-X", "importtime", "-c", f"import {module}"],
            cwd=cwd,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        total = sum(int(m) for m in re.findall(r"^import time:\s+(\d+) \|", done.stderr, re.MULTILINE))
        if i:  # the first run warms the file cache
            values.append(total / 1000)
    return Figure.of(values)


# --- set-up --------------------------------------------------------------------------------------


def prepare(bench: Bench) -> None:
    """Register the bench users, check every server answers GET /profile, log in to the peers, warm up."""
    service = bench.service
    for name in (bench.user, bench.wrong_user):
        status, body, _ = call(f"{service.base}/register", "POST", {"username": name, "password": PASSWORD})
        if status != 201:
            raise RuntimeError(f"register {name}: {status} {body}")
    for server in bench.servers:
        if server.name in PEER_NAMES.values():
            bench.peer_headers[server.name] = peer_cookie(server, bench.user)
        status, body, _ = call(f"{server.base}/profile", headers=bench.headers_for(server))
        if status != 200:
            raise RuntimeError(f"{server.name} GET /profile: {status} {body}")
    log("warm-up")
    for server in bench.servers:
        wrk(server, "/profile", 8, 1, bench.headers_for(server))
    bench.device_cookie = with_retries(f"login {bench.user} for its device cookie", bench.device_login, 200, bench.res)


def _rotate(items: list[Any], rep: int) -> list[Any]:
    k = rep % len(items)
    return items[k:] + items[:k]


# --- scenarios -----------------------------------------------------------------------------------


def read_path(bench: Bench) -> None:
    """GET /profile on every server at every level, ``repeats`` times in rotating order."""
    cfg, res = bench.config, bench.res
    ranges: dict[str, list[tuple[int, int]]] = {SERVICE: [], CACHED: []}
    readers = [server for server in bench.servers if server.name != LENIENT]
    for rep in range(cfg.repeats):
        for level in cfg.levels:
            for server in _rotate(readers, rep):
                log(f"repeat {rep + 1}/{cfg.repeats}: {server.name} GET /profile at concurrency {level}")
                phase = wrk(server, "/profile", level, cfg.seconds, bench.headers_for(server))
                res.load.setdefault((server.name, level), []).append(phase)
                if server.name in ranges:
                    ranges[server.name].append(phase.log_range)
    res.ops["profile"] = count_ops(bench.service.log_path, ranges[SERVICE], "profile")
    res.ops[f"profile, cache {CACHE_SECONDS} s"] = count_ops(bench.server(CACHED).log_path, ranges[CACHED], "profile")


def login_latency(bench: Bench) -> None:
    """POST /login at concurrency 1: a first login and one from a trusted browser on the service, the login floor;
    a wrong password and an unknown user (on the lockout-off service)."""
    cfg, res, service, lenient = bench.config, bench.res, bench.service, bench.server(LENIENT)
    wrong = "not the password at all"
    good = {"username": bench.user, "password": PASSWORD}
    device = {"Cookie": bench.device_cookie}
    cases: list[tuple[str, Server, dict[str, Any], dict[str, str] | None]] = [
        (SERVICE, service, good, None),
        (TRUSTED, service, good, device),
        (FLOOR, bench.server(FLOOR), good, None),
        ("wrong-password", lenient, {"username": bench.wrong_user, "password": wrong}, None),
        ("unknown-user", lenient, {"username": f"nobody-{os.getpid()}", "password": wrong}, None),
    ]
    ranges: dict[str, list[tuple[int, int]]] = {}
    for rep in range(cfg.repeats):
        for name, server, body, headers in _rotate(cases, rep):
            log(f"repeat {rep + 1}/{cfg.repeats}: login {name}")
            phase = wrk(server, "/login", 1, cfg.seconds, headers=headers, body=body)
            res.login.setdefault(name, []).append(phase)
            ranges.setdefault(name, []).append(phase.log_range)
    at_cap = f"(the bench user, at the cap of {CAP} sessions)"
    res.ops[f"login at c=1 {at_cap}"] = count_ops(service.log_path, ranges[SERVICE], "login")
    res.ops[f"login at c=1 from a trusted browser {at_cap}"] = count_ops(service.log_path, ranges[TRUSTED], "login")
    res.ops["failed login (wrong password)"] = count_ops(lenient.log_path, ranges["wrong-password"], "login")
    res.ops["failed login (unknown user)"] = count_ops(lenient.log_path, ranges["unknown-user"], "login")


def login_cost(bench: Bench) -> None:
    """What a login costs below the cap on sessions: ``COST_USERS`` new users, each logs in twice.

    The first login sends no device cookie; the second sends the one the first set (a trusted
    browser). Each request's ``firestore`` counts are read from the service's request log.
    """
    service, res = bench.service, bench.res
    first: list[tuple[int, int]] = []
    trusted: list[tuple[int, int]] = []
    for i in range(COST_USERS):
        user = f"cost-{os.getpid()}-{i}"
        status, body, _ = call(f"{service.base}/register", "POST", {"username": user, "password": PASSWORD})
        if status != 201:
            raise RuntimeError(f"register {user}: {status} {body}")
        start = service.log_size()
        cookie = with_retries(f"first login of {user}", lambda u=user: bench.device_login(u), 200, res)
        first.append((start, service.log_size()))
        start = service.log_size()
        with_retries(f"trusted login of {user}", lambda u=user, c=cookie: bench.device_login(u, c), 200, res)
        trusted.append((start, service.log_size()))
    res.ops[LOGIN_FIRST] = count_ops(service.log_path, first, "login")
    res.ops[LOGIN_TRUSTED] = count_ops(service.log_path, trusted, "login")


def fresh_instances(bench: Bench) -> None:
    """Per repeat, a new service and a new floor process each: cold start, profile-only memory, login memory.

    Cold start is spawn to the first 200 on GET /profile. The profile-only load
    runs on a process that has served nothing else (no argon2 buffer yet); the
    login load follows on the same process, against the floor's login, which hashes too.
    """
    cfg, res = bench.config, bench.res
    login_body = {"username": bench.user, "password": PASSWORD}
    for rep in range(cfg.repeats):
        for name, make in _rotate([(SERVICE, service_server), (FLOOR, floor_server)], rep):
            bearer = bench.bearer()
            server = make(f"fresh-{name}", bench.env)
            log(f"repeat {rep + 1}/{cfg.repeats}: fresh {name}: cold start, profile and login memory")
            try:
                server.start()
                res.cold.setdefault(name, []).append(server.wait_until(answers_200(f"{server.base}/profile", bearer)))
                phase = wrk(server, "/profile", PROFILE_C, cfg.seconds, bearer)
                res.fresh_profile.setdefault(name, []).append(phase)
                phase = wrk(server, "/login", LOGIN_LOAD_C, cfg.seconds, body=login_body)
                res.fresh_login.setdefault(name, []).append(phase)
            finally:
                server.stop()


def profiles(bench: Bench) -> None:
    """py-spy on the service and the floor: GET /profile at concurrency 32, POST /login at concurrency 1."""
    cfg, res = bench.config, bench.res
    assert cfg.pyspy is not None
    good = {"username": bench.user, "password": PASSWORD}
    floor = bench.server(FLOOR)
    runs: list[tuple[str, Server, str, int, dict[str, Any]]] = [
        (f"service GET /profile, c={PROFILE_C}", bench.service, "/profile", PROFILE_C, {"headers": bench.bearer()}),
        (f"floor GET /profile, c={PROFILE_C}", floor, "/profile", PROFILE_C, {"headers": bench.bearer()}),
        ("service POST /login, c=1", bench.service, "/login", 1, {"body": good}),
        ("floor POST /login, c=1", floor, "/login", 1, {"body": good}),
    ]
    for label, server, path, level, load in runs:
        log(f"profiling {label}")
        res.profiles[label] = pyspy_run(Sampling(cfg.pyspy), server, path, level, max(cfg.seconds, 5), **load)
