"""Where a GET /profile's CPU goes, service against floor, under load: ``make bench``'s drill-down for PROFILE.md.

    .venv/bin/python bench/anatomy.py [--seconds S] [--rounds R] [--concurrency C] [--rate HZ]

Starts an emulator, the service and the floor (functions-framework, the same
settings), logs in once, then in each round loads each server with wrk at
concurrency C (32) while py-spy samples its whole process tree. Every sample
is put in one bucket by the frames on its stack (the request log line, record
validation, the response, the Firestore client, the HTTP server...), and a
bucket's share of the samples times the CPU per request measured over the
tree (psutil) gives its microseconds per request. Prints a Markdown table per
bucket, service against floor, and keeps the raw samples in ``bench/out``.

Timings on a shared machine are noisy: compare the two columns of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness.common import OUT, PASSWORD, VENV_BIN, log
from harness.processes import call, running, tree
from harness.profiling import pyspy_run, read_collapsed
from harness.scenarios import FLOOR, SERVICE, floor_server, service_server

# (bucket, pattern on one frame "function (file)"); the first bucket whose pattern matches any frame of a
# sample's stack wins, so the specific steps come before the layers that contain them.
BUCKETS: list[tuple[str, str]] = [
    (
        "garbage collector (seen with --native only)",
        r"^(gc_collect_main|gc_collect_with_callback|collect|deduce_unreachable|"
        r"move_unreachable|subtract_refs|update_refs|visit_reachable|_PyObject_GC_Link|gc_collect_generations) ",
    ),
    ("one-time set-up (logging configure, gc.freeze)", r"^(Api\._after_first_response|configure) "),
    ("request log line: Api._log → logging → StructuredLogHandler", r"^Api\._log "),
    ("stored records: 2 model_validate calls (store._parse)", r"^_parse \(session/store\.py\)"),
    ("response: ProfileOut build + model_dump_json + Response", r"^(_profile_response|json_response|_profile_out) "),
    (
        "store: deadline guard (asynccontextmanager + asyncio.timeout)",
        r"^(FirestoreStore\._guard|_Guard\.__aenter__|_Guard\.__aexit__) ",
    ),
    ("Firestore client: get_all, gRPC, protobuf (both)", r"^(AsyncClient\.get_all|FirestoreStore\._get_all) "),
    ("Firestore client: get_all, gRPC, protobuf (both)", r"^_profile\.<locals>\.<listcomp> \(floor\.py\)"),
    ("Firestore references and client lookup", r"^(FirestoreStore\.(client|_users|_sessions)|_client) "),
    (
        "credential + CSRF check, token parse",
        r"^(Call\.required_credential|required_credential|presented_credential) |^parse \(session/tokens",
    ),
    ("session rules: authenticate's own code", r"^(SessionService\.authenticate|Call\.authenticate) "),
    ("CORS headers", r"^Api\._cors_headers "),
    ("trace header parse, log hold", r"^(parse_trace|hold) "),
    ("routing (resolve, static check)", r"^(resolve|static_file) "),
    ("Api.handle's own code: headers, context variables, Call", r"^(Api\.handle|api \(main\.py\)) "),
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


GC_OFF = "import gc\n\ngc.disable()\n"
# Counts every collection of the process per generation, with its CPU time (thread time: a collection descheduled
# by a neighbour is not charged for the wait) and what it freed; a JSON file per process, refreshed twice a second.
GC_STATS = """\
import gc, json, os, sys, time

_stats = {"argv": sys.argv, "count": [0, 0, 0], "seconds": [0.0, 0.0, 0.0], "collected": [0, 0, 0]}
_mark = [0.0, 0.0]


def _bench_gc_callback(phase, info):
    if phase == "start":
        _mark[0] = time.thread_time()
        return
    gen = info["generation"]
    _stats["count"][gen] += 1
    _stats["seconds"][gen] += time.thread_time() - _mark[0]
    _stats["collected"][gen] += info["collected"]
    if time.monotonic() - _mark[1] > 0.5:
        _mark[1] = time.monotonic()
        _stats["frozen"] = gc.get_freeze_count()
        with open(os.path.join(os.environ["BENCH_GC_DIR"], f"gc-{os.getpid()}.json"), "w") as out:
            json.dump(_stats, out)


gc.callbacks.append(_bench_gc_callback)
"""


def gc_snapshot(server: Any) -> dict[str, Any]:
    """The summed GC statistics of ``server``'s processes (``--gc-stats``); empty without them."""
    total: dict[str, Any] = {"count": [0, 0, 0], "seconds": [0.0, 0.0, 0.0], "collected": [0, 0, 0], "frozen": 0}
    for proc in tree(server.pid):
        path = OUT / "gc-site" / f"gc-{proc.pid}.json"
        if path.exists():
            data = json.loads(path.read_text())
            for key in ("count", "seconds", "collected"):
                total[key] = [a + b for a, b in zip(total[key], data[key], strict=True)]
            total["frozen"] += data.get("frozen", 0)
    return total


@dataclass
class Anatomy:
    """Per-bucket samples of one server over the rounds, and its CPU per request in each."""

    samples: dict[str, int]
    total: int
    cpu_ms: list[float]
    rps: list[float]
    gc: list[str] = field(default_factory=list)  # per round, with --gc-stats

    def us_per_request(self, bucket: str) -> float:
        share = self.samples.get(bucket, 0) / self.total if self.total else 0.0
        return share * statistics.median(self.cpu_ms) * 1000


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


def table(results: dict[str, Anatomy]) -> str:
    service, floor = results[SERVICE], results[FLOOR]
    names = list(dict.fromkeys([b for b, _ in BUCKETS + LAYERS] + ["other"]))
    rows = [(name, service.us_per_request(name), floor.us_per_request(name)) for name in names]
    rows = [r for r in rows if r[1] or r[2]]
    rows.sort(key=lambda r: -(r[1] - r[2]))
    lines = ["| bucket | service µs/req | floor µs/req | service - floor |", "|---|---|---|---|"]
    lines += [f"| {name} | {s:.0f} | {f:.0f} | {s - f:+.0f} |" for name, s, f in rows]
    s_cpu, f_cpu = statistics.median(service.cpu_ms) * 1000, statistics.median(floor.cpu_ms) * 1000
    lines.append(
        f"| **CPU per request (whole tree, psutil)** | **{s_cpu:.0f}** | **{f_cpu:.0f}** | **{s_cpu - f_cpu:+.0f}** |"
    )
    lines += [
        "",
        f"service: {service.total} samples, CPU ms/req per round {[round(x, 2) for x in service.cpu_ms]}, "
        f"req/s {[round(x) for x in service.rps]}",
        f"floor: {floor.total} samples, CPU ms/req per round {[round(x, 2) for x in floor.cpu_ms]}, "
        f"req/s {[round(x) for x in floor.rps]}",
        f"ratio of medians: CPU/req {s_cpu / f_cpu:.3f}, "
        f"req/s {statistics.median(service.rps) / statistics.median(floor.rps):.3f}",
    ]
    return "\n".join(lines)


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


def measure(args: argparse.Namespace, env: dict[str, str]) -> tuple[dict[str, Anatomy], dict[str, list[Path]]]:
    """Alternate service and floor under py-spy for ``args.rounds`` rounds; returns buckets and the raw files."""
    results: dict[str, Anatomy] = {}
    raws: dict[str, list[Path]] = {SERVICE: [], FLOOR: []}
    pyspy = VENV_BIN / "py-spy"
    for old in OUT.glob("pyspy-anatomy-*-round*.txt"):  # a shorter run must not read a longer one's rounds
        old.unlink()
    servers = [service_server(f"anatomy-{SERVICE}", env), floor_server(f"anatomy-{FLOOR}", env)]
    with running(servers):
        service = servers[0]
        body = {"username": "anatomy", "password": PASSWORD}
        assert call(f"{service.base}/register", "POST", body)[0] == 201
        for rnd in range(args.rounds):
            for name, server in zip((SERVICE, FLOOR), servers, strict=True):
                headers = {"Authorization": f"Bearer {call(f'{service.base}/login', 'POST', body)[1]['token']}"}
                if rnd == 0:  # warm up: clients, channels, lazy imports, logging set-up, gc.freeze
                    pyspy_run(pyspy, server, "/profile", 8, 2, headers=headers)
                log(f"round {rnd + 1}/{args.rounds}: {name} under py-spy at concurrency {args.concurrency}")
                gc_before = gc_snapshot(server)
                prof = pyspy_run(
                    pyspy, server, "/profile", args.concurrency, args.seconds,
                    native=args.native, rate=args.rate, headers=headers,
                )  # fmt: skip
                kept = prof.raw.with_name(f"{prof.raw.stem}-round{rnd + 1}.txt")
                prof.raw.replace(kept)
                raws[name].append(kept)
                res = results.setdefault(name, Anatomy({}, 0, [], []))
                res.total += classify(kept, res.samples)
                res.cpu_ms.append(prof.phase.cpu_ms_per_req)
                res.rps.append(prof.phase.rps)
                if args.gc_stats:
                    time.sleep(0.6)  # the statistics file is refreshed twice a second
                    res.gc.append(gc_delta(gc_before, gc_snapshot(server), prof.phase.requests))
    return results, raws


def gc_delta(before: dict[str, Any], after: dict[str, Any], requests: int) -> str:
    """Collections and collector time per request over one run, per generation."""
    per = [
        f"gen{g}: {(after['count'][g] - before['count'][g]) / requests:.3f} collections, "
        f"{(after['seconds'][g] - before['seconds'][g]) / requests * 1e6:.0f} µs CPU, "
        f"{(after['collected'][g] - before['collected'][g]) / requests:.1f} objects freed"
        for g in range(3)
    ]
    return "; ".join(per) + f" per request (frozen objects: {after['frozen']})"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--native", action="store_true", help="C frames too (GC, gRPC core); pauses each sample")
    parser.add_argument("--rate", type=int, default=250, help="samples per second (use ~100 with --native)")
    parser.add_argument("--detail", type=int, default=0, help="also list the N frames with most self time")
    parser.add_argument(
        "--gc-off", action="store_true", help="both servers with the garbage collector disabled (a sitecustomize)"
    )
    parser.add_argument(
        "--gc-stats", action="store_true", help="count and time every collection in both servers (a sitecustomize)"
    )
    parser.add_argument(
        "--gc-threshold", type=int, default=0, help="what if both servers called gc.set_threshold(N) at start-up"
    )
    args = parser.parse_args(argv)
    from devtools.launch import Emulator

    OUT.mkdir(exist_ok=True)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SESSION_")},
        "GOOGLE_CLOUD_PROJECT": "demo-bench-anatomy",
        "SESSION_COOKIE_SECURE": "false",
        "WORKERS": "1",
    }
    if args.gc_off or args.gc_stats or args.gc_threshold:  # how much of the gap is the collector
        site = OUT / "gc-site"
        site.mkdir(exist_ok=True)
        for old in site.glob("gc-*.json"):
            old.unlink()
        source = GC_OFF if args.gc_off else GC_STATS if args.gc_stats else ""
        if args.gc_threshold:
            source = f"import gc\n\ngc.set_threshold({args.gc_threshold})\n" + source
        (site / "sitecustomize.py").write_text(source)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), env.get("PYTHONPATH", "")]))
        env["BENCH_GC_DIR"] = str(site)
    with Emulator(log_path=OUT / "emulator-anatomy.log") as emulator:
        results, raws = measure(args, {**env, "FIRESTORE_EMULATOR_HOST": emulator.host})
    print(table(results))
    for name in (SERVICE, FLOOR) if args.gc_stats else ():
        print(f"\n{name}, garbage collector per round:\n" + "\n".join(f"- {line}" for line in results[name].gc))
    for name in (SERVICE, FLOOR) if args.detail else ():
        cpu = statistics.median(results[name].cpu_ms)
        print(f"\n{name}: top self frames\n\n| µs/req | frame |\n|---|---|")
        print("\n".join(top_frames(raws[name], cpu, args.detail)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
