"""Load from wrk (cheap: on two shared cores the load generator competes with the servers).

Each run is a ``Phase``: throughput, latency percentiles and errors from wrk,
and, measured meanwhile, the server's whole-tree CPU time and peak memory.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from .common import OUT
from .processes import PeakMemory, Server


@dataclass(frozen=True, slots=True)
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
    log_range: tuple[int, int] = (0, 0)  # the bytes of the server's log written during the run


_UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if m is None:
        raise ValueError(f"unexpected wrk latency {text!r}")
    return float(m.group(1)) * _UNIT[m.group(2)]


def _post_script(body: dict[str, Any]) -> str:
    """A wrk Lua script that POSTs ``body`` as JSON (one file per body, in ``bench/out``)."""
    script = OUT / f"post-{hashlib.sha256(json.dumps(body).encode()).hexdigest()[:12]}.lua"
    script.write_text(
        'wrk.method = "POST"\n'
        'wrk.headers["Content-Type"] = "application/json"\n'
        f"wrk.body = {json.dumps(json.dumps(body))}\n"
    )
    return str(script)


@dataclass(frozen=True, slots=True)
class WrkResult:
    requests: int
    seconds: float
    p50_ms: float
    p99_ms: float
    errors: int


def parse_wrk(text: str) -> WrkResult:
    """The figures of ``wrk --latency`` output. Raises ``RuntimeError`` if it cannot be parsed."""
    done = re.search(r"(\d+) requests in ([\d.]+)(\w+)", text)
    pct = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", text, re.MULTILINE))
    if done is None or "50" not in pct or "99" not in pct:
        raise RuntimeError(f"cannot parse wrk output:\n{text}")
    errors = sum(int(n) for n in re.findall(r"Non-2xx or 3xx responses: (\d+)", text))
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if sock:
        errors += sum(int(n) for n in sock.groups())
    return WrkResult(
        requests=int(done.group(1)),
        seconds=_ms(done.group(2) + done.group(3)) / 1000,
        p50_ms=_ms(pct["50"]),
        p99_ms=_ms(pct["99"]),
        errors=errors,
    )


def wrk(
    server: Server,
    path: str,
    connections: int,
    seconds: float,
    headers: dict[str, str] | None = None,
    body: dict[str, Any] | None = None,
) -> Phase:
    """Run wrk against ``server`` (GET, or POST ``body``) and measure the server tree's CPU and peak memory."""
    cmd = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", "--timeout", "10s"]
    for key, value in (headers or {}).items():
        cmd += ["-H", f"{key}: {value}"]
    if body is not None:
        cmd += ["-s", _post_script(body)]
    cmd.append(server.base + path)
    start_log = server.log_size()
    cpu0 = server.cpu()
    with PeakMemory(server.pid) as memory:
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60, check=False)
    cpu = server.cpu() - cpu0
    _settle(server)
    if done.returncode != 0:
        raise RuntimeError(f"wrk failed: {done.stderr or done.stdout}")
    res = parse_wrk(done.stdout)
    return Phase(
        requests=res.requests,
        seconds=res.seconds,
        rps=res.requests / res.seconds if res.seconds else 0.0,
        p50_ms=res.p50_ms,
        p99_ms=res.p99_ms,
        errors=res.errors,
        cpu_ms_per_req=1000 * cpu / res.requests if res.requests else float("nan"),
        peak_rss_mb=memory.peak_rss / 2**20,
        peak_pss_mb=memory.peak_pss / 2**20,
        log_range=(start_log, server.log_size()),
    )


def _settle(server: Server, quiet: float = 0.2, limit: float = 3.0) -> None:
    """Wait until the server's log stops growing (at most ``limit`` seconds).

    A request still in flight when wrk stops (a login takes ~100 ms) must log
    its line inside this run's byte range, not the next run's.
    """
    deadline = time.monotonic() + limit
    size = server.log_size()
    while time.monotonic() < deadline:
        time.sleep(quiet)
        now = server.log_size()
        if now == size:
            return
        size = now


def wrk_version() -> str:
    done = subprocess.run(["wrk", "-v"], capture_output=True, text=True, check=False)
    first = (done.stdout or done.stderr).strip().splitlines()
    return first[0].split(" Copyright")[0] if first else "wrk"
