"""Servers in process groups of their own, and the CPU and memory of their whole process tree (psutil).

A functions-framework server is a tree (the CLI, gunicorn's arbiter, its
uvicorn workers): every figure sums over the tree of the process we started,
so a worker's CPU and memory are never missed.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

from devtools.launch import free_port, serving, spawn, stop_group, wait_until

from .common import OUT, ROOT, VENV_BIN

# --- a process tree ------------------------------------------------------------------------------


def tree(pid: int) -> list[psutil.Process]:
    """``pid`` and all its live descendants."""
    try:
        root = psutil.Process(pid)
        return [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of the tree, including its children that have exited and been reaped."""
    total = 0.0
    for proc in tree(pid):
        try:
            times = proc.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += times.user + times.system + times.children_user + times.children_system
    return total


def tree_memory(pid: int, *, pss: bool) -> tuple[int, int]:
    """(summed RSS, summed PSS) of the tree in bytes; PSS (shared pages split between users) only if asked."""
    rss = pss_total = 0
    for proc in tree(pid):
        try:
            if pss:
                full = proc.memory_full_info()
                rss += full.rss
                pss_total += full.pss
            else:
                rss += proc.memory_info().rss
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            continue
    return rss, pss_total


class PeakMemory:
    """Sample a tree's RSS every 50 ms (PSS every 500 ms, it costs more) while in use; keep the largest."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.peak_rss = 0
        self.peak_pss = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self, pss: bool) -> None:
        rss, pss_now = tree_memory(self.pid, pss=pss)
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_pss = max(self.peak_pss, pss_now)

    def _run(self) -> None:
        tick = 0
        while not self._stop.wait(0.05):
            tick += 1
            self._sample(pss=tick % 10 == 0)

    def __enter__(self) -> PeakMemory:
        self._sample(pss=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self._sample(pss=True)


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

    @property
    def pid(self) -> int:
        assert self.proc is not None, f"{self.name} is not running"
        return self.proc.pid

    def start(self) -> Server:
        cmd = [part.replace("{port}", str(self.port)) for part in self.cmd]
        self.spawned_at = time.perf_counter()
        self.proc = spawn(cmd, self.log_path, {**self.env, "PORT": str(self.port)}, self.cwd)
        return self

    def wait_until(self, probe: Callable[[], bool], timeout: float = 90.0) -> float:
        """Poll ``probe`` until it is true; returns seconds since spawn. Raises with the log tail."""
        if self.proc is not None and wait_until(probe, self.proc, timeout, interval=0.01):
            return time.perf_counter() - self.spawned_at
        tail = self.log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{self.name} did not become ready on {self.base}:\n{tail}")

    def cpu(self) -> float:
        return tree_cpu(self.pid)

    def log_size(self) -> int:
        return self.log_path.stat().st_size if self.log_path.exists() else 0

    def stop(self) -> None:
        """SIGTERM the process group, SIGKILL what is left after 10 s."""
        if self.proc is None:
            return
        stop_group(self.proc)
        self.proc = None


def functions_framework(name: str, target: str, source: Path, env: dict[str, str]) -> Server:
    """A ``functions-framework`` server for ``target`` in ``source``."""
    cmd = [str(VENV_BIN / "functions-framework"), "--target", target, "--source", str(source)]
    return Server(name, [*cmd, "--host", "127.0.0.1", "--port", "{port}"], env)


@contextmanager
def running(servers: list[Server]) -> Iterator[list[Server]]:
    """Start ``servers``, wait until each answers HTTP, and always stop them."""
    try:
        for server in servers:
            server.start()
        for server in servers:
            server.wait_until(serving(f"{server.base}/"))
        yield servers
    finally:
        for server in servers:
            server.stop()


# --- HTTP for set-up and probes (the load itself comes from wrk) ----------------------------------


def call(
    url: str, method: str = "GET", body: dict[str, Any] | None = None, headers: dict[str, str] | None = None
) -> tuple[int, dict[str, Any], dict[str, str]]:
    """One request: (status, JSON body or {}, lower-cased headers)."""
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
    lowered = {k.lower(): v for k, v in hdrs.items()}
    lowered["set-cookie-all"] = "\n".join(hdrs.get_all("set-cookie") or [])  # every Set-Cookie, one a line
    return status, payload, lowered


def answers_200(url: str, headers: dict[str, str]) -> Callable[[], bool]:
    """A probe: does ``url`` answer 200?"""

    def probe() -> bool:
        try:
            return call(url, headers=headers)[0] == 200
        except (OSError, ValueError):
            return False

    return probe
