"""Where the CPU goes: py-spy on a server's process tree while wrk loads it.

py-spy samples on-CPU Python stacks (idle threads are left out) of every
process of the tree; its raw ("collapsed") output is kept in ``bench/out``
and summarised as inclusive shares per frame and self shares per package.
"""

from __future__ import annotations

import re
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .common import OUT
from .load import Phase, wrk
from .processes import Server

# Frames that only carry the request (process, CLI, server, event loop, thread pool): left out of "inclusive".
_PLUMBING = re.compile(
    r"^(process \d+|<module> \(functions-framework|.*\((click|gunicorn|uvicorn_worker|threading\.py|"
    r"concurrent/futures|asyncio/runners\.py|asyncio/events\.py|uvicorn/_compat\.py|"
    r"functions_framework/|starlette/|uvicorn/middleware/|uvicorn/protocols/http/h11_impl\.py:\d*\) *$|"
    r"RequestResponseCycle\.run_asgi)|"
    r"BaseEventLoop\.(run_forever|run_until_complete|_run_once) )"
)


@dataclass(frozen=True, slots=True)
class Profile:
    """py-spy's on-CPU samples of one run."""

    phase: Phase
    samples: int
    inclusive: list[tuple[float, str]]  # (% of samples, frame), plumbing left out
    by_package: list[tuple[float, str]]  # (% of samples spent in the package's own code, package)
    raw: Path


def package_of(frame: str) -> str:
    """The package of a frame: ``google/cloud/firestore_v1``, ``grpc``, ``session``, ``asyncio``..."""
    if frame.startswith("process "):
        return "(native, no Python frame)"
    where = frame.rpartition(" (")[2].rstrip(")")
    parts = where.split("/")
    if len(parts) == 1:
        return parts[0]
    return "/".join(parts[:3] if parts[0] == "google" and len(parts) > 3 else parts[:1])


def read_collapsed(raw: Path) -> list[tuple[list[str], int]]:
    """py-spy's raw output as (frames from root to leaf, without line numbers; sample count)."""
    stacks = []
    for line in raw.read_text().splitlines() if raw.exists() else []:
        stack, _, count = line.rpartition(" ")
        if count.isdigit():
            frames = [f.rsplit(":", 1)[0] + ")" if f.endswith(")") and ":" in f else f for f in stack.split(";")]
            stacks.append((frames, int(count)))
    return stacks


def summarise(
    stacks: list[tuple[list[str], int]], top: int
) -> tuple[int, list[tuple[float, str]], list[tuple[float, str]]]:
    """(total samples, top inclusive frames, top packages by self samples)."""
    inclusive: dict[str, int] = {}
    own: dict[str, int] = {}
    total = 0
    for frames, n in stacks:
        total += n
        for name in set(frames):
            if not _PLUMBING.match(name):
                inclusive[name] = inclusive.get(name, 0) + n
        package = package_of(frames[-1])
        own[package] = own.get(package, 0) + n

    def share(counts: dict[str, int]) -> list[tuple[float, str]]:
        ranked = sorted(counts.items(), key=lambda kv: -kv[1])[:top]
        return [(100 * n / total, name) for name, n in ranked]

    return total, (share(inclusive) if total else []), (share(own) if total else [])


def pyspy_run(
    pyspy: Path,
    server: Server,
    path: str,
    connections: int,
    seconds: int,
    top: int = 15,
    *,
    native: bool = False,
    rate: int = 250,
    **load: Any,
) -> Profile:
    """Sample ``server``'s process tree with py-spy while wrk loads it for ``seconds``.

    ``native`` adds C frames (the garbage collector, gRPC's core, pydantic-core); it must pause the process for
    each sample, so use a lower ``rate`` with it.
    """
    raw = OUT / f"pyspy-{server.name}-{path.strip('/')}-c{connections}{'-native' if native else ''}.txt"
    cmd = [str(pyspy), "record", "--pid", str(server.pid), "--subprocesses", "--native" if native else "--nonblocking"]
    cmd += ["--rate", str(rate), "--duration", str(seconds), "--format", "raw", "--output", str(raw)]
    spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        phase = wrk(server, path, connections, seconds, **load)
    finally:
        spy.wait(timeout=seconds + 30)
    total, inclusive, by_package = summarise(read_collapsed(raw), top)
    return Profile(phase, total, inclusive, by_package, raw)
