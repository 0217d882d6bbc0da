"""``make bench``: the service against its physical floor and two peers, in one run on this machine.

    .venv/bin/python bench/run.py [--seconds S] [--repeats N] [--concurrency 1,8,32] [--no-profile]

Starts a Firestore emulator, the service (``main.py``, target ``api``), the
floor (``bench/floor.py``), the peers (``bench/peers/``) and, once it exists,
the ``@require_session`` hook (``bench/decorated.py``), each in a process group
of its own, and always stops them. Load comes from ``wrk`` (cheap: the machine
has two cores and the load generator competes with the servers). Every
measurement is repeated; the table gives the median with the min-max spread of
the repeats and flags figures whose spread is too wide to trust.

Writes the table to stdout and to ``bench/results.md``; server logs go to
``bench/out/``. Server settings come from ``WORKERS`` and ``THREADS`` in the
environment and are the same for the service and the floor.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
OUT = BENCH / "out"
PEERS = BENCH / "peers"
CACHE = Path(os.environ.get("BENCH_CACHE", Path.home() / ".cache" / "session-service" / "bench"))
VENV_BIN = ROOT / ".venv" / "bin"
PY312 = Path(os.environ.get("BENCH_PY312", Path.home() / ".pyenv" / "versions" / "3.12.1" / "bin" / "python"))

sys.path.insert(0, str(ROOT / "scripts"))
from emulator import Emulator, free_port  # noqa: E402

# Firestore list prices (USD per 100,000 operations), an assumption: check the current price list.
PRICE_PER_100K = {"reads": 0.06, "writes": 0.18, "deletes": 0.02}
NOISY = 0.10  # a relative spread (max - min) / median above this is flagged
PASSWORD = "correct horse battery staple"  # noqa: S105  (a benchmark user on the emulator)
CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# --- process groups: CPU time and memory of a server's whole tree ------------------------------


def _stat(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return raw[raw.rindex(")") + 2 :].split()


def group_pids(leader: int) -> list[int]:
    """Every live process of the session led by ``leader`` (servers start with ``start_new_session``)."""
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat(int(entry))
            if fields is not None and int(fields[3]) == leader:
                pids.append(int(entry))
    return pids


def group_cpu(leader: int) -> float:
    """User + system CPU seconds of the live processes of the group."""
    total = 0
    for pid in group_pids(leader):
        fields = _stat(pid)
        if fields is not None:
            total += int(fields[11]) + int(fields[12])
    return total / CLK_TCK


def group_rss(leader: int) -> int:
    """Summed resident set size of the group, in bytes (pages shared after fork count once per process)."""
    total = 0
    for pid in group_pids(leader):
        fields = _stat(pid)
        if fields is not None:
            total += int(fields[21]) * PAGE
    return total


def group_pss(leader: int) -> int:
    """Summed proportional set size of the group, in bytes: shared pages split between their users."""
    total = 0
    for pid in group_pids(leader):
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        m = re.search(r"^Pss:\s+(\d+) kB", text, re.MULTILINE)
        if m:
            total += int(m.group(1)) * 1024
    return total


class PeakRss:
    """Sample a group's RSS and PSS every 50 ms while in use; ``peak``/``peak_pss`` are the largest samples."""

    def __init__(self, leader: int) -> None:
        self.leader = leader
        self.peak = 0
        self.peak_pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        self.peak = max(self.peak, group_rss(self.leader))
        self.peak_pss = max(self.peak_pss, group_pss(self.leader))

    def _run(self) -> None:
        while not self._stop.is_set():
            self._sample()
            self._stop.wait(0.05)

    def __enter__(self) -> PeakRss:
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()


# --- servers ---------------------------------------------------------------------------------


@dataclass
class Server:
    """One HTTP server in a process group of its own, stdout+stderr to ``bench/out/<name>.log``."""

    name: str
    cmd: list[str]
    env: dict[str, str]
    cwd: Path = ROOT
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None
    spawned_at: float = 0.0

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return OUT / f"{self.name}.log"

    def start(self) -> Server:
        out = open(self.log_path, "ab")
        cmd = [part.replace("{port}", str(self.port)) for part in self.cmd]
        self.spawned_at = time.perf_counter()
        self.proc = subprocess.Popen(
            cmd,
            cwd=self.cwd,
            env={**self.env, "PORT": str(self.port)},
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        out.close()
        return self

    def wait_until(self, probe: Callable[[], bool], timeout: float = 90.0) -> float:
        """Poll ``probe`` until it is true; returns seconds since spawn. Raises with the log tail."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc is not None
            if self.proc.poll() is not None:
                break
            if probe():
                return time.perf_counter() - self.spawned_at
            time.sleep(0.01)
        tail = self.log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{self.name} did not become ready on {self.base}:\n{tail}")

    def cpu(self) -> float:
        assert self.proc is not None
        return group_cpu(self.proc.pid)

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def stop(self) -> None:
        if self.proc is None:
            return
        for sig, wait in ((signal.SIGTERM, 10.0), (signal.SIGKILL, 5.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
                if not group_pids(self.proc.pid):
                    break
            except subprocess.TimeoutExpired:
                continue
        self.proc = None


@contextmanager
def running(servers: list[Server]) -> Iterator[None]:
    try:
        yield
    finally:
        for server in servers:
            server.stop()


# --- HTTP for set-up (the load itself comes from wrk) --------------------------------------------


def call(
    url: str, method: str = "GET", body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    for key, value in (headers or {}).items():
        req.add_header(key, value)
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            raw, status, hdrs = resp.read(), resp.status, resp.headers
    except urllib.error.HTTPError as exc:
        raw, status, hdrs = exc.read(), exc.code, exc.headers
    payload = json.loads(raw) if raw[:1] in (b"{", b"[") else {}
    return status, payload, {k.lower(): v for k, v in hdrs.items()}


def ok(url: str, headers: dict[str, str]) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            return call(url, headers=headers)[0] == 200
        except (OSError, ValueError):
            return False

    return probe


def listening(port: int) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=1).close()
        except urllib.error.HTTPError:
            return True
        except OSError:
            return False
        return True

    return probe


# --- load ----------------------------------------------------------------------------------------


@dataclass
class Phase:
    """One load run against one server."""

    requests: int
    seconds: float
    rps: float
    p50_ms: float
    p99_ms: float
    errors: int
    cpu_ms_per_req: float
    peak_rss_mb: float
    peak_pss_mb: float
    log_range: tuple[int, int] = (0, 0)


_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if m is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(m.group(1)) * _UNIT[m.group(2)]


def wrk(
    server: Server,
    path: str,
    connections: int,
    seconds: float,
    headers: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
) -> Phase:
    """Run wrk against ``server`` and measure the server group's CPU and peak RSS meanwhile."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "10s"]
    for key, value in (headers or {}).items():
        cmd += ["-H", f"{key}: {value}"]
    if body is not None:
        script = OUT / f"post-{hashlib.sha256(json.dumps(body).encode()).hexdigest()[:12]}.lua"
        script.write_text(
            'wrk.method = "POST"\n'
            'wrk.headers["Content-Type"] = "application/json"\n'
            f"wrk.body = {json.dumps(json.dumps(body))}\n"
        )
        cmd += ["-s", str(script)]
    cmd.append(server.base + path)
    assert server.proc is not None
    start_log = server.log_size()
    cpu0 = server.cpu()
    with PeakRss(server.proc.pid) as rss:
        result = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    cpu = server.cpu() - cpu0
    time.sleep(0.05)  # let the last log lines land
    text = result.stdout
    if result.returncode != 0:
        raise RuntimeError(f"wrk failed: {result.stderr or text}")
    done = re.search(r"(\d+) requests in ([\d.]+)(\w+)", text)
    pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", text, re.MULTILINE))
    if done is None or "50" not in pct or "99" not in pct:
        raise RuntimeError(f"cannot parse wrk output:\n{text}")
    requests = int(done.group(1))
    elapsed = _ms(done.group(2) + done.group(3)) / 1000
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", text))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if sock:
        errors += sum(int(n) for n in sock.groups())
    return Phase(
        requests=requests,
        seconds=elapsed,
        rps=requests / elapsed if elapsed else 0.0,
        p50_ms=_ms(pct["50"]),
        p99_ms=_ms(pct["99"]),
        errors=errors,
        cpu_ms_per_req=1000 * cpu / requests if requests else float("nan"),
        peak_rss_mb=rss.peak / 2**20,
        peak_pss_mb=rss.peak_pss / 2**20,
        log_range=(start_log, server.log_size()),
    )


# --- where the time goes (``--profile``: py-spy on the server group during one extra run) ---------


# Frames that only carry the request (process, CLI, server, event loop, thread pool): left out of "inclusive".
_PLUMBING = re.compile(
    r"^(process \d+|<module> \(functions-framework|.*\((click|gunicorn|uvicorn_worker|threading\.py|"
    r"concurrent/futures|asyncio/runners\.py|asyncio/events\.py|uvicorn/_compat\.py|"
    r"functions_framework/|starlette/|uvicorn/middleware/|uvicorn/protocols/http/h11_impl\.py:\d*\) *$|"
    r"RequestResponseCycle\.run_asgi)|"
    r"BaseEventLoop\.(run_forever|run_until_complete|_run_once) )"
)


@dataclass
class Profile:
    """py-spy's on-CPU samples of one run: where the time goes."""

    phase: Phase
    samples: int
    inclusive: list[tuple[float, str]]  # (% of samples, frame), plumbing left out
    by_package: list[tuple[float, str]]  # (% of samples spent in the package's own code, package)


def pyspy_top(server: Server, path: str, connections: int, seconds: int, top: int = 15, **load: Any) -> Profile:
    """Sample ``server``'s processes with py-spy (on-CPU only) while wrk loads it."""
    assert server.proc is not None
    raw = OUT / f"pyspy-{server.name}-{path.strip('/')}-c{connections}.txt"
    cmd = [str(VENV_BIN / "py-spy"), "record", "--pid", str(server.proc.pid), "--subprocesses", "--nonblocking"]
    cmd += ["--rate", "250", "--duration", str(seconds), "--format", "raw", "--output", str(raw)]
    spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        phase = wrk(server, path, connections, seconds, **load)
    finally:
        spy.wait(timeout=seconds + 30)
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for line in raw.read_text().splitlines() if raw.exists() else []:
        stack, _, count = line.rpartition(" ")
        if not count.isdigit():
            continue
        n = int(count)
        frames = [f.rsplit(":", 1)[0] + ")" if f.endswith(")") and ":" in f else f for f in stack.split(";")]
        total += n
        for name in set(frames):
            if not _PLUMBING.match(name):
                inclusive[name] = inclusive.get(name, 0) + n
        package = _package(frames[-1])
        own[package] = own.get(package, 0) + n
    if not total:
        return Profile(phase, 0, [], [])

    def share(counts: dict[str, int]) -> list[tuple[float, str]]:
        return [(100 * n / total, name) for name, n in sorted(counts.items(), key=lambda kv: -kv[1])[:top]]

    return Profile(phase, total, share(inclusive), share(own))


def _package(frame: str) -> str:
    """The package of a frame: ``google/cloud/firestore_v1``, ``grpc``, ``session``, ``asyncio``..."""
    if frame.startswith("process "):
        return "(native, no Python frame)"
    where = frame.rpartition(" (")[2].rstrip(")")
    parts = where.split("/")
    if len(parts) == 1:
        return parts[0]
    return "/".join(parts[:3] if parts[0] == "google" and len(parts) > 3 else parts[:1])


# --- Firestore operations, from the service's own request log ------------------------------------


@dataclass
class Ops:
    requests: int = 0
    round_trips: int = 0
    reads: int = 0
    writes: int = 0
    deletes: int = 0
    max_round_trips: int = 0
    with_writes: int = 0
    codes: dict[str, int] = field(default_factory=dict)

    def per(self, name: str) -> float:
        return getattr(self, name) / self.requests if self.requests else float("nan")

    def cost_per_million(self) -> float:
        return sum(self.per(kind) * 1e6 / 1e5 * price for kind, price in PRICE_PER_100K.items())


def count_ops(server: Server, ranges: list[tuple[int, int]], entry_point: str, ops: Ops | None = None) -> Ops:
    """Sum the ``firestore`` counts of ``session.request`` log lines for ``entry_point`` in ``ranges``."""
    ops = ops or Ops()
    with open(server.log_path, "rb") as f:
        for start, end in ranges:
            f.seek(start)
            for line in f.read(end - start).splitlines():
                if not line.startswith(b"{"):
                    continue
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                labels = rec.get("logging.googleapis.com/labels", {})
                if labels.get("python_logger") != "session.request" or rec.get("entry_point") != entry_point:
                    continue
                fs = rec.get("firestore", {})
                ops.requests += 1
                ops.round_trips += fs.get("round_trips", 0)
                ops.reads += fs.get("reads", 0)
                ops.writes += fs.get("writes", 0)
                ops.deletes += fs.get("deletes", 0)
                ops.max_round_trips = max(ops.max_round_trips, fs.get("round_trips", 0))
                ops.with_writes += fs.get("writes", 0) > 0
                code = str(rec.get("code"))
                ops.codes[code] = ops.codes.get(code, 0) + 1
    return ops


# --- statistics ----------------------------------------------------------------------------------


@dataclass
class Figure:
    """A measured figure over the repeats: median and spread."""

    values: list[float]

    @property
    def median(self) -> float:
        return statistics.median(self.values)

    @property
    def spread(self) -> float:
        med = self.median
        return (max(self.values) - min(self.values)) / med if med else float("inf")

    @property
    def noisy(self) -> bool:
        return len(self.values) > 1 and self.spread > NOISY

    def show(self, fmt: str = "{:.2f}") -> str:
        text = fmt.format(self.median)
        if len(self.values) > 1:
            text += f" [{fmt.format(min(self.values))}-{fmt.format(max(self.values))}]"
        return text + (" ⚠" if self.noisy else "")


def ratio(a: list[float], b: list[float]) -> Figure:
    """Per-repeat ratios a/b of paired runs."""
    return Figure([x / y if y else float("inf") for x, y in zip(a, b, strict=True)])


def verdict(fig: Figure, limit: float, *, at_most: bool) -> str:
    """ "met" or "missed" for the median, and whether every repeat agreed."""

    def passes(value: float) -> bool:
        return value <= limit if at_most else value >= limit

    word = "met" if passes(fig.median) else "**missed**"
    if len({passes(v) for v in fig.values}) > 1:
        word += " (not in every repeat)"
    return word


# --- set-up --------------------------------------------------------------------------------------


def ensure_peer_deps() -> dict[str, str]:
    """Install the peers' pinned dependencies into the cache (once per lock change); returns problems."""
    problems: dict[str, str] = {}
    node_dir = CACHE / "node"
    lock = (PEERS / "package-lock.json").read_bytes()
    stamp = hashlib.sha256(lock + (PEERS / "package.json").read_bytes()).hexdigest()
    if shutil.which("node") is None or shutil.which("npm") is None:
        problems["express-session"] = "node/npm not found"
    elif not (node_dir / ".stamp").exists() or (node_dir / ".stamp").read_text() != stamp:
        log(f"installing the express peer's packages into {node_dir}")
        node_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy(PEERS / "package.json", node_dir / "package.json")
        shutil.copy(PEERS / "package-lock.json", node_dir / "package-lock.json")
        done = subprocess.run(
            ["npm", "ci", "--no-audit", "--no-fund", "--loglevel=error"], cwd=node_dir, capture_output=True, text=True
        )
        if done.returncode != 0:
            problems["express-session"] = f"npm ci failed: {done.stderr[-500:]}"
        else:
            (node_dir / ".stamp").write_text(stamp)
    venv = CACHE / "py312"
    reqs = (PEERS / "requirements-aiohttp.txt").read_bytes()
    stamp = hashlib.sha256(reqs).hexdigest()
    if not PY312.exists():
        problems["aiohttp-session"] = f"{PY312} not found"
    elif not (venv / ".stamp").exists() or (venv / ".stamp").read_text() != stamp:
        log(f"installing the aiohttp peer's packages into {venv}")
        steps = [
            [str(PY312), "-m", "venv", "--clear", str(venv)],
            [str(venv / "bin" / "pip"), "install", "-q", "-r", str(PEERS / "requirements-aiohttp.txt")],
        ]
        for step in steps:
            done = subprocess.run(step, capture_output=True, text=True)
            if done.returncode != 0:
                problems["aiohttp-session"] = f"{step[0]} failed: {done.stderr[-500:]}"
                break
        else:
            (venv / ".stamp").write_text(stamp)
    return problems


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
        if i:  # the first run writes the .pyc files
            values.append(total / 1000)
    return Figure(values)


def require_session_hook(env: dict[str, str]) -> str | None:
    """None when ``bench/decorated.py`` imports (``session.require_session`` exists), else why not."""
    done = subprocess.run(
        [str(VENV_BIN / "python"), "-c", "import decorated"],
        cwd=BENCH,
        env={**env, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
    )
    if done.returncode == 0:
        return None
    last = (done.stderr.strip().splitlines() or ["import failed"])[-1]
    return last


# --- the run -------------------------------------------------------------------------------------


@dataclass
class Results:
    load: dict[tuple[str, int], list[Phase]] = field(default_factory=dict)
    login: dict[str, list[Phase]] = field(default_factory=dict)
    cold: dict[str, list[float]] = field(default_factory=dict)
    imports: dict[str, Figure] = field(default_factory=dict)
    ops: dict[str, Ops] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    skipped: dict[str, str] = field(default_factory=dict)
    profiles: dict[str, Profile] = field(default_factory=dict)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=int(os.environ.get("BENCH_SECONDS", 4)))
    parser.add_argument("--repeats", type=int, default=int(os.environ.get("BENCH_REPEATS", 3)))
    parser.add_argument("--concurrency", default=os.environ.get("BENCH_CONCURRENCY", "1,8,32"))
    parser.add_argument("--output", type=Path, default=BENCH / "results.md")
    parser.add_argument(
        "--profile",
        action=argparse.BooleanOptionalAction,
        default=os.environ.get("BENCH_PROFILE", "1") != "0",
        help="after the measurements, sample service and floor with py-spy under load (default: on if installed)",
    )
    args = parser.parse_args(argv)
    levels = [int(c) for c in args.concurrency.split(",")]
    if 32 not in levels or 1 not in levels:
        parser.error("--concurrency must include 1 and 32")
    if shutil.which("wrk") is None:
        print("bench: wrk is not installed (Debian: apt-get install -y wrk)", file=sys.stderr)
        return 2
    OUT.mkdir(exist_ok=True)
    for old in OUT.glob("*.log"):
        old.unlink()

    started = datetime.now(UTC)
    load_before = os.getloadavg()
    res = Results()
    problems = ensure_peer_deps()
    res.skipped.update(problems)

    project = f"demo-bench-{os.getpid()}"
    workers = os.environ.get("WORKERS", "1")
    threads = os.environ.get("THREADS", str((os.cpu_count() or 1) * 4))
    base_env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SESSION_")},
        "GOOGLE_CLOUD_PROJECT": project,
        "SESSION_COOKIE_SECURE": "false",
        # Lockout off, so the failed-login rows measure the failure path and not the 429.
        "SESSION_LOGIN_MAX_FAILURES": "1000000000",
        "WORKERS": workers,
        "THREADS": threads,
    }

    log("import times")
    res.imports["service"] = import_time_ms("main", ROOT, base_env, args.repeats)
    res.imports["floor"] = import_time_ms("floor", BENCH, base_env, args.repeats)
    hook_missing = require_session_hook(base_env)
    if hook_missing is not None:
        res.skipped["@require_session"] = f"`bench/decorated.py` does not import yet ({hook_missing})"

    log("starting the Firestore emulator")
    emulator = Emulator(log_path=OUT / "emulator.log").start()
    try:
        return _run(args, levels, res, emulator, base_env, started, load_before, workers, threads)
    finally:
        emulator.stop()


def _ff(name: str, target: str, source: Path, env: dict[str, str]) -> Server:
    cmd = [str(VENV_BIN / "functions-framework"), "--target", target, "--source", str(source)]
    return Server(name, [*cmd, "--host", "127.0.0.1", "--port", "{port}"], env)


def _run(
    args: argparse.Namespace,
    levels: list[int],
    res: Results,
    emulator: Emulator,
    base_env: dict[str, str],
    started: datetime,
    load_before: tuple[float, float, float],
    workers: str,
    threads: str,
) -> int:
    env = {**base_env, "FIRESTORE_EMULATOR_HOST": emulator.host}
    service = _ff("service", "api", ROOT / "main.py", env)
    floor = _ff("floor", "floor", BENCH / "floor.py", {**env, "PYTHONPATH": str(ROOT)})
    servers = [service, floor]
    if "@require_session" not in res.skipped:
        servers.append(_ff("decorated", "profile", BENCH / "decorated.py", {**env, "PYTHONPATH": str(ROOT)}))
    if "express-session" not in res.skipped:
        node_env = {**env, "NODE_PATH": str(CACHE / "node" / "node_modules"), "NODE_ENV": "production"}
        servers.append(Server("express-session", ["node", str(PEERS / "express_peer.js")], node_env))
    if "aiohttp-session" not in res.skipped:
        servers.append(
            Server("aiohttp-session", [str(CACHE / "py312" / "bin" / "python"), str(PEERS / "aiohttp_peer.py")], env)
        )

    with running(servers):
        for server in servers:
            server.start()
        for server in servers:
            server.wait_until(listening(server.port))
        log("servers up: " + ", ".join(f"{s.name} :{s.port}" for s in servers))

        def user(name: str) -> str:
            status, body, _ = call(f"{service.base}/register", "POST", {"username": name, "password": PASSWORD})
            if status != 201:
                raise RuntimeError(f"register {name}: {status} {body}")
            return name

        def login_token(name: str) -> str:
            status, body, _ = call(f"{service.base}/login", "POST", {"username": name, "password": PASSWORD})
            if status != 200:
                raise RuntimeError(f"login {name}: {status} {body}")
            return str(body["token"])

        bench_user, wrong_user = user("bench"), user("bench-wrong")
        token = login_token(bench_user)
        bearer = {"Authorization": f"Bearer {token}"}
        for server in (service, floor):
            status, body, _ = call(f"{server.base}/profile", headers=bearer)
            if status != 200:
                raise RuntimeError(f"{server.name} GET /profile: {status} {body}")

        peer_headers: dict[str, dict[str, str]] = {}
        for server in servers:
            if server.name in ("express-session", "aiohttp-session"):
                status, _, hdrs = call(f"{server.base}/login", "POST", {"username": bench_user})
                cookie = hdrs.get("set-cookie", "").split(";", 1)[0]
                check = call(f"{server.base}/profile", headers={"Cookie": cookie})[0]
                if status != 200 or not cookie or check != 200:
                    raise RuntimeError(f"{server.name}: login {status}, cookie {cookie!r}, profile {check}")
                peer_headers[server.name] = {"Cookie": cookie}

        # Cold start: spawn to the first successful profile, alternating service and floor.
        log("cold starts")
        for _ in range(args.repeats):
            for name, target, source in (("service", "api", ROOT / "main.py"), ("floor", "floor", BENCH / "floor.py")):
                cold = _ff(f"cold-{name}", target, source, {**env, "PYTHONPATH": str(ROOT)})
                try:
                    cold.start()
                    elapsed = cold.wait_until(ok(f"{cold.base}/profile", bearer))
                finally:
                    cold.stop()
                res.cold.setdefault(name, []).append(elapsed)

        log("warm-up")
        for server in servers:
            hdrs = peer_headers.get(server.name, bearer)
            wrk(server, "/profile", 8, 1, hdrs)

        # The read path, every server at every level; the order rotates between repeats.
        service_ranges: list[tuple[int, int]] = []
        for rep in range(args.repeats):
            order = servers[rep % len(servers) :] + servers[: rep % len(servers)]
            for level in levels:
                for server in order:
                    if server in (service, floor) or server.name == "decorated":
                        # A fresh session each phase keeps every read inside the touch window.
                        bearer = {"Authorization": f"Bearer {login_token(bench_user)}"}
                    hdrs = peer_headers.get(server.name, bearer)
                    log(f"repeat {rep + 1}/{args.repeats}: {server.name} GET /profile at concurrency {level}")
                    phase = wrk(server, "/profile", level, args.seconds, hdrs)
                    res.load.setdefault((server.name, level), []).append(phase)
                    if server is service:
                        service_ranges.append(phase.log_range)
        res.ops["profile"] = count_ops(service, service_ranges, "profile")

        # Login at concurrency 1: success against its floor, and the two failures against each other.
        login_cases: list[tuple[str, Server, dict[str, Any]]] = [
            ("service", service, {"username": bench_user, "password": PASSWORD}),
            ("floor", floor, {"username": bench_user, "password": PASSWORD}),
            ("wrong-password", service, {"username": wrong_user, "password": "not the password at all"}),
            ("unknown-user", service, {"username": f"nobody-{os.getpid()}", "password": "not the password at all"}),
        ]
        login_ranges: dict[str, list[tuple[int, int]]] = {}
        for rep in range(args.repeats):
            order = login_cases[rep % len(login_cases) :] + login_cases[: rep % len(login_cases)]
            for name, server, body in order:
                log(f"repeat {rep + 1}/{args.repeats}: login {name}")
                phase = wrk(server, "/login", 1, args.seconds, body=body)
                res.login.setdefault(name, []).append(phase)
                if server is service:
                    login_ranges.setdefault(name, []).append(phase.log_range)
        res.ops["login"] = count_ops(service, login_ranges["service"], "login")
        res.ops["failed login (wrong password)"] = count_ops(service, login_ranges["wrong-password"], "login")
        res.ops["failed login (unknown user)"] = count_ops(service, login_ranges["unknown-user"], "login")

        if args.profile:
            if shutil.which(str(VENV_BIN / "py-spy")) is None:
                res.notes.append(
                    "no profiles: py-spy is not installed (.venv/bin/pip install -r bench/requirements.txt)"
                )
            else:
                bearer = {"Authorization": f"Bearer {login_token(bench_user)}"}
                good = {"username": bench_user, "password": PASSWORD}
                for label, server, path, level, load in (
                    ("service GET /profile, c=32", service, "/profile", 32, {"headers": bearer}),
                    ("floor GET /profile, c=32", floor, "/profile", 32, {"headers": bearer}),
                    ("service POST /login, c=1", service, "/login", 1, {"body": good}),
                    ("floor POST /login, c=1", floor, "/login", 1, {"body": good}),
                ):
                    log(f"profiling {label}")
                    res.profiles[label] = pyspy_top(server, path, level, max(args.seconds, 5), **load)

    load_after = os.getloadavg()
    report = render(res, args, levels, started, load_before, load_after, workers, threads)
    print(report)
    args.output.write_text(report)
    log(f"wrote {args.output}")
    return 0


# --- the table -----------------------------------------------------------------------------------


def render(
    res: Results,
    args: argparse.Namespace,
    levels: list[int],
    started: datetime,
    load_before: tuple[float, float, float],
    load_after: tuple[float, float, float],
    workers: str,
    threads: str,
) -> str:
    def vals(name: str, level: int, attr: str) -> list[float]:
        return [getattr(p, attr) for p in res.load[(name, level)]]

    def login_vals(name: str, attr: str) -> list[float]:
        return [getattr(p, attr) for p in res.login[name]]

    rows: list[tuple[str, str, str, str]] = []  # what, ratio, target, verdict

    def target(what: str, fig: Figure, limit: float, *, at_most: bool) -> None:
        sign = "≤" if at_most else "≥"
        rows.append((what, fig.show("{:.3f}"), f"{sign} {limit}", verdict(fig, limit, at_most=at_most)))

    target(
        "profile p50 / floor p50 (c=1)",
        ratio(vals("service", 1, "p50_ms"), vals("floor", 1, "p50_ms")),
        1.15,
        at_most=True,
    )
    target(
        "profile rps / floor rps (c=32)",
        ratio(vals("service", 32, "rps"), vals("floor", 32, "rps")),
        0.85,
        at_most=False,
    )
    target(
        "login p50 / login floor p50",
        ratio(login_vals("service", "p50_ms"), login_vals("floor", "p50_ms")),
        1.15,
        at_most=True,
    )
    unknown_wrong = ratio(login_vals("unknown-user", "p50_ms"), login_vals("wrong-password", "p50_ms"))
    rows.append(
        (
            "unknown-user p50 / wrong-password p50",
            unknown_wrong.show("{:.3f}"),
            "0.9 - 1.1",
            "met" if all(0.9 <= v <= 1.1 for v in unknown_wrong.values) else "**missed**",
        )
    )
    target("cold start / floor cold start", ratio(res.cold["service"], res.cold["floor"]), 1.15, at_most=True)
    target(
        "peak RSS at c=32 / floor",
        ratio(vals("service", 32, "peak_rss_mb"), vals("floor", 32, "peak_rss_mb")),
        1.2,
        at_most=True,
    )
    pss = ratio(vals("service", 32, "peak_pss_mb"), vals("floor", 32, "peak_pss_mb"))
    rows.append(
        ("peak PSS at c=32 / floor (shared pages counted once)", pss.show("{:.3f}"), "(RSS is the target)", "-")
    )
    for peer in ("express-session", "aiohttp-session"):
        if (peer, 32) in res.load:
            target(
                f"profile CPU/request / {peer} CPU/request (c=32)",
                ratio(vals("service", 32, "cpu_ms_per_req"), vals(peer, 32, "cpu_ms_per_req")),
                1.0,
                at_most=True,
            )
    if ("decorated", 1) in res.load:  # the @require_session hook: no target, for information
        for what, attr, level in (("p50 (c=1)", "p50_ms", 1), ("req/s (c=32)", "rps", 32)):
            fig = ratio(vals("decorated", level, attr), vals("service", level, attr))
            rows.append((f"@require_session {what} / profile", fig.show("{:.3f}"), "none (information)", "-"))
    prof = res.ops["profile"]
    rows.append(
        (
            "profile Firestore ops/request",
            f"{prof.per('round_trips'):.3f} round trips, {prof.per('reads'):.3f} reads, "
            f"{prof.per('writes'):.4f} writes",
            "1 RT, ≤ 2 reads, 0 writes",
            "met" if prof.max_round_trips == 1 and prof.per("reads") <= 2 and prof.writes == 0 else "**missed**",
        )
    )
    good = res.ops["login"]
    rows.append(
        (
            "login Firestore ops/request",
            f"{good.per('reads'):.2f} reads, {good.per('writes'):.2f} writes, {good.per('deletes'):.2f} deletes",
            "1 user read, 1 session write",
            "met" if good.per("reads") <= 1 and good.per("writes") == 1 and good.deletes == 0 else "**missed**",
        )
    )
    for name in ("failed login (wrong password)", "failed login (unknown user)"):
        bad = res.ops[name]
        rows.append(
            (
                f"{name} Firestore ops/request",
                f"{bad.per('reads'):.2f} reads, {bad.per('writes'):.2f} writes, {bad.per('deletes'):.2f} deletes",
                "only the counter write",
                "met" if bad.per("writes") == 1 and bad.deletes == 0 else "**missed**",
            )
        )

    lines = [
        "# make bench",
        "",
        f"{started:%Y-%m-%d %H:%M} UTC on {platform.node()}: {os.cpu_count()} cores "
        f"({_cpu_model()}), Python {platform.python_version()}, {_wrk_version()}. "
        f"Load average {load_before[0]:.2f} before, {load_after[0]:.2f} after"
        + (
            " — **a busy machine: other work competed with the benchmark**."
            if max(load_before[0], load_after[0]) > 1.0
            else "."
        ),
        f"Server settings for both the service and the floor: WORKERS={workers}, THREADS={threads} "
        "(the aio functions-framework serves through gunicorn with uvicorn workers, which have no threads setting). "
        f"Each load run lasts {args.seconds:g} s and is repeated {args.repeats} times in rotating order; "
        "figures are the median [min-max] of the repeats, ratios are taken per repeat, "
        f"and ⚠ marks a spread over {NOISY:.0%}, too noisy to trust on its own.",
        "",
        "## Targets",
        "",
        "| check | measured | target | verdict |",
        "|---|---|---|---|",
        *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows],
        "",
    ]
    if res.skipped.get("@require_session"):
        lines.append(f"`@require_session` vs profile: skipped — {res.skipped['@require_session']}.")
        lines.append("")

    lines += [
        "## Read path: GET /profile (the peers read their one session document)",
        "",
        "| server | c | req/s | p50 ms | p99 ms | server CPU ms/req | peak RSS MiB | peak PSS MiB | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    names = list(dict.fromkeys(name for name, _ in res.load))
    for name in names:
        for level in levels:
            phases = res.load[(name, level)]
            lines.append(
                f"| {name} | {level} | {Figure([p.rps for p in phases]).show('{:.0f}')} "
                f"| {Figure([p.p50_ms for p in phases]).show()} | {Figure([p.p99_ms for p in phases]).show()} "
                f"| {Figure([p.cpu_ms_per_req for p in phases]).show()} "
                f"| {Figure([p.peak_rss_mb for p in phases]).show('{:.0f}')} "
                f"| {Figure([p.peak_pss_mb for p in phases]).show('{:.0f}')} | {sum(p.errors for p in phases)} |"
            )
    lines += ["", "Against profile (per-repeat ratios, other / profile):", ""]
    lines += ["| server | req/s @1 | req/s @32 | p50 @1 | CPU/req @32 |", "|---|---|---|---|---|"]
    for name in names:
        if name == "service":
            continue
        lines.append(
            f"| {name} | {ratio(vals(name, 1, 'rps'), vals('service', 1, 'rps')).show()} "
            f"| {ratio(vals(name, 32, 'rps'), vals('service', 32, 'rps')).show()} "
            f"| {ratio(vals(name, 1, 'p50_ms'), vals('service', 1, 'p50_ms')).show()} "
            f"| {ratio(vals(name, 32, 'cpu_ms_per_req'), vals('service', 32, 'cpu_ms_per_req')).show()} |"
        )
    for name, why in res.skipped.items():
        if name != "@require_session":
            lines.append(f"| {name} | skipped: {why} | | | |")

    lines += [
        "",
        "## Login at concurrency 1",
        "",
        "| case | p50 ms | p99 ms | req/s | server CPU ms/req | errors (non-2xx expected for failures) |",
        "|---|---|---|---|---|---|",
    ]
    for name, phases in res.login.items():
        lines.append(
            f"| {name} | {Figure([p.p50_ms for p in phases]).show()} | {Figure([p.p99_ms for p in phases]).show()} "
            f"| {Figure([p.rps for p in phases]).show('{:.1f}')} "
            f"| {Figure([p.cpu_ms_per_req for p in phases]).show()} | {sum(p.errors for p in phases)} |"
        )

    lines += [
        "",
        "## Firestore operations per request (counted from the service's request log)",
        "",
        "List prices assumed: "
        + ", ".join(f"${price}/100k {kind}" for kind, price in PRICE_PER_100K.items())
        + ". The floor does 1 round trip and 2 reads per profile by construction (not instrumented).",
        "",
        "| request | n | round trips | reads | writes | deletes | requests with a write | USD per million |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, ops in res.ops.items():
        codes = ", ".join(f"{c}: {n}" for c, n in sorted(ops.codes.items()))
        lines.append(
            f"| {name} ({codes}) | {ops.requests} | {ops.per('round_trips'):.3f} | {ops.per('reads'):.3f} "
            f"| {ops.per('writes'):.4f} | {ops.per('deletes'):.4f} | {ops.with_writes} "
            f"| ${ops.cost_per_million():.2f} |"
        )

    lines += [
        "",
        "## Cold start and imports",
        "",
        "| | service | floor | ratio |",
        "|---|---|---|---|",
        f"| spawn → first 200 on /profile, s | {Figure(res.cold['service']).show()} "
        f"| {Figure(res.cold['floor']).show()} "
        f"| {ratio(res.cold['service'], res.cold['floor']).show()} |",
        f"| `python -X importtime` total, ms (import main / import floor) | {res.imports['service'].show('{:.0f}')} "
        f"| {res.imports['floor'].show('{:.0f}')} "
        f"| {ratio(res.imports['service'].values, res.imports['floor'].values).show()} |",
        "",
    ]
    for label, prof_run in res.profiles.items():
        phase = prof_run.phase
        lines += [
            f"## Where the time goes: {label} (py-spy, on-CPU samples of the server's processes)",
            "",
            f"{phase.requests} requests, {phase.rps:.0f} req/s, {phase.cpu_ms_per_req:.2f} ms CPU/request "
            f"while sampled; {prof_run.samples} samples (py-spy competes for the CPU too).",
            "",
            "| inclusive % | frame (server, CLI and event-loop plumbing left out) | | self % | package |",
            "|---|---|---|---|---|",
        ]
        for i in range(max(len(prof_run.inclusive), len(prof_run.by_package))):
            inc = prof_run.inclusive[i] if i < len(prof_run.inclusive) else None
            own = prof_run.by_package[i] if i < len(prof_run.by_package) else None
            lines.append(
                (f"| {inc[0]:.1f} | `{inc[1]}` " if inc else "| | ")
                + "| "
                + (f"| {own[0]:.1f} | {own[1]} |" if own else "| | |")
            )
        lines.append("")
    lines += [*[f"Note: {note}" for note in res.notes], ""] if res.notes else []
    lines += [
        "Reproduce: `make bench` (or `.venv/bin/python bench/run.py --seconds S --repeats N`); "
        "needs wrk, Node.js and Python 3.12 (pyenv); peers' packages are cached in "
        f"`{_home(CACHE)}`; server logs and py-spy samples are in `bench/out/`. Drill-downs: "
        "`.venv/bin/python bench/inproc.py [--cprofile] [--gc off]` (service vs floor CPU in one process, "
        "no HTTP server) and `.venv/bin/python bench/micro.py` (the service's own steps, in µs).",
        "",
    ]
    return "\n".join(lines)


def _home(path: Path) -> str:
    try:
        return "~/" + str(path.relative_to(Path.home()))
    except ValueError:
        return str(path)


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def _wrk_version() -> str:
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True)
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0].split(" Copyright")[0] if first else "wrk"


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
