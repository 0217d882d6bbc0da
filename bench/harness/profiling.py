"""Where the CPU goes: py-spy on a server's process tree while wrk loads it.

py-spy samples on-CPU Python stacks (idle threads are left out) of every
process of the tree; its raw ("collapsed") output is kept in ``bench/out``.
``make bench`` summarises it as inclusive shares per frame and self shares per
package; ``bench/cpu.py load`` puts every sample in one bucket (``classify``).
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


@dataclass(frozen=True, slots=True)
class Sampling:
    """How py-spy samples: samples per second, C frames or not, and how many frames the summary keeps.

    ``native`` adds C frames (the garbage collector, gRPC's core, pydantic-core); it must pause the process for
    each sample, so use a lower ``rate`` with it.
    """

    pyspy: Path
    rate: int = 250
    native: bool = False
    top: int = 15


def pyspy_run(sampling: Sampling, server: Server, path: str, connections: int, seconds: int, **load: Any) -> Profile:
    """Sample ``server``'s process tree with py-spy while wrk loads it for ``seconds`` (``load``: wrk's options)."""
    native = sampling.native
    raw = OUT / f"pyspy-{server.name}-{path.strip('/')}-c{connections}{'-native' if native else ''}.txt"
    cmd = [str(sampling.pyspy), "record", "--pid", str(server.pid), "--subprocesses"]
    cmd += ["--native" if native else "--nonblocking", "--rate", str(sampling.rate), "--duration", str(seconds)]
    cmd += ["--format", "raw", "--output", str(raw)]
    spy = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        phase = wrk(server, path, connections, seconds, **load)
    finally:
        spy.wait(timeout=seconds + 30)
    total, inclusive, by_package = summarise(read_collapsed(raw), sampling.top)
    return Profile(phase, total, inclusive, by_package, raw)


# (bucket, pattern on one frame "function (file)"); the first bucket whose pattern matches any frame of a
# sample's stack wins, so the specific steps come before the layers that contain them.
BUCKETS: list[tuple[str, str]] = [
    (
        "garbage collector (seen with --native only)",
        r"^(gc_collect_main|gc_collect_with_callback|collect|deduce_unreachable|"
        r"move_unreachable|subtract_refs|update_refs|visit_reachable|_PyObject_GC_Link|gc_collect_generations) ",
    ),
    ("one-time set-up (logging configure, gc.freeze)", r"^(Api\._after_first_response|configure) "),
    ("log line: Api._log → logging → JsonLineHandler", r"^Api\._log "),
    ("validation: stored records (model_validate)", r"^(_parse|Client\._versioned) \(session/store/client\.py"),
    (
        "response: ProfileOut build + model_dump_json + Response",
        r"^(_profile_response|json_response|profile_out|SessionService\.profile|Accounts\.profile) ",
    ),
    ("store read path: deadline guard", r"^_Guard\.__a(enter|exit)__ "),
    # The list comprehension that drives get_all's async generator is the same in both (the floor's is inline).
    (
        "Firestore client: get_all, gRPC, protobuf (both)",
        r"^(AsyncClient\.get_all|Client\._get_all\.<locals>\.<listcomp>|_profile\.<locals>\.<listcomp>) ",
    ),
    (
        "store read path: read_auth, references, client look-up",
        r"^(Accounts\.read_auth|Client\.(_get_all|_bound|client|_users|_sessions)) \(session/|^_client \(floor",
    ),
    (
        "HTTP edge: credential + CSRF check, token parse",
        r"^(Call\.required_credential|required_credential|presented_credential) |^(parse|hash_token) \(session/tokens",
    ),
    (
        "session rules: authenticate's own code",
        r"^(Authn\.(authenticate|read|_accept)|SessionService\.authenticate|why_not_live|is_live) ",
    ),
    ("HTTP edge: CORS headers", r"^Api\._cors_headers "),
    ("HTTP edge: trace header parse, log hold", r"^(parse_trace|hold|_RequestScope\.__(enter|exit)__) "),
    ("HTTP edge: routing (resolve, static check)", r"^(resolve|static_file|path_segments|Api\._route_target) "),
    (
        "HTTP edge: Api.handle's own code, Call, dispatch, finish",
        r"^(Api\.(handle|_dispatch|_finish)|Call\.\w+ \(session/|_get_profile|api \(main\.py\)) ",
    ),
    ("the floor's own code", r"^(floor|_profile|_json) \(floor\.py\)"),
]
# Samples in none of the steps above go to a layer by their leaf frame (every stack starts in the
# functions-framework CLI and gunicorn, so a match anywhere would put them all in one layer).
LAYERS: list[tuple[str, str]] = [
    ("gRPC: send, receive, poller thread (both)", r"[(/]grpc/|^Thread\.run "),
    ("Firestore client outside get_all: protobuf, marshal (both)", r"[(/](google|proto|firestore_v1|api_core)/"),
    ("functions-framework + Starlette (both)", r"[(/](functions_framework|starlette)/"),
    ("uvicorn + h11 HTTP server (both)", r"[(/](uvicorn|h11)/"),
    ("event loop, selectors, sockets (both)", r"[(/](asyncio/|selectors\.py|socket\.py)"),
]


# With --native, py-spy cannot tell idle threads from busy ones: drop samples that sit in a wait.
_IDLE = re.compile(
    r"^(epoll_wait|epoll_pwait|poll|__poll|select|pselect6?|futex|syscall|nanosleep|clock_nanosleep|"
    r"pthread_cond_(timed)?wait|sem_(timed)?wait|0x[0-9a-f]+) \((libc|libpthread)"
)


def bucket_of(frames: list[str]) -> str:
    """The step any of ``frames`` belongs to, else the layer of the leaf frame, else "other"."""
    for bucket, pattern in _STEPS:
        if any(pattern.search(frame) for frame in frames):
            return bucket
    for bucket, pattern in _LAYERS:
        if pattern.search(frames[-1]):
            return bucket
    return "other"


_STEPS = [(bucket, re.compile(pattern)) for bucket, pattern in BUCKETS]
_LAYERS = [(bucket, re.compile(pattern)) for bucket, pattern in LAYERS]


def classify(raw: Path, into: dict[str, int]) -> int:
    """Add ``raw``'s samples to ``into`` by bucket; returns their number."""
    total = 0
    for frames, n in read_collapsed(raw):
        if _IDLE.match(frames[-1]):
            continue
        bucket = bucket_of(frames)
        into[bucket] = into.get(bucket, 0) + n
        total += n
    return total


def top_frames(raw_files: list[Path], cpu_ms: float, top: int) -> list[str]:
    """The frames with the most self samples (leaf frames), in µs per request."""
    own: dict[str, int] = {}
    total = 0
    for raw in raw_files:
        for frames, n in read_collapsed(raw):
            if _IDLE.match(frames[-1]):
                continue
            own[frames[-1]] = own.get(frames[-1], 0) + n
            total += n
    ranked = sorted(own.items(), key=lambda kv: -kv[1])[:top]
    return [f"| {n / total * cpu_ms * 1000:.0f} | `{frame}` |" for frame, n in ranked]
