"""``bench/cpu.py load``: where a GET /profile's CPU goes under load, the service against its floor.

Starts an emulator, the service and the floor (functions-framework, the same
settings), logs in once, then in each round loads each server with wrk at
concurrency C (32) while py-spy samples its whole process tree. Every sample
is put in one bucket by the frames on its stack (``profiling.classify``: the
request log line, record validation, the response, the Firestore client, the
HTTP server...), and a bucket's share of the samples times the CPU per request
measured over the tree (psutil) gives its microseconds per request. Prints a
Markdown table per bucket, service against floor, and keeps the raw samples in
``bench/out``. Timings on a shared machine are noisy: compare the two columns of one run.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from devtools.launch import Emulator

from .common import OUT, PASSWORD, VENV_BIN, log
from .processes import call, running, tree
from .profiling import BUCKETS, LAYERS, Sampling, classify, pyspy_run, top_frames
from .scenarios import FLOOR, SERVICE, floor_server, service_server

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


def measure(args: argparse.Namespace, env: dict[str, str]) -> tuple[dict[str, Anatomy], dict[str, list[Path]]]:
    """Alternate service and floor under py-spy for ``args.rounds`` rounds; returns buckets and the raw files."""
    results: dict[str, Anatomy] = {}
    raws: dict[str, list[Path]] = {SERVICE: [], FLOOR: []}
    warm_up, sampling = Sampling(VENV_BIN / "py-spy"), Sampling(VENV_BIN / "py-spy", args.rate, args.native)
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
                    pyspy_run(warm_up, server, "/profile", 8, 2, headers=headers)
                log(f"round {rnd + 1}/{args.rounds}: {name} under py-spy at concurrency {args.concurrency}")
                gc_before = gc_snapshot(server)
                prof = pyspy_run(sampling, server, "/profile", args.concurrency, args.seconds, headers=headers)
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


def _gc_site(args: argparse.Namespace, env: dict[str, str]) -> None:
    """A sitecustomize for both servers that disables, counts or retunes the collector, as ``args`` asks."""
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


def load(args: argparse.Namespace) -> int:
    """Run the rounds on an emulator of its own; print the bucket table (and the GC and top-frame lists asked for)."""
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("SESSION_")},
        "GOOGLE_CLOUD_PROJECT": "demo-bench-anatomy",
        "SESSION_COOKIE_SECURE": "false",
        "WORKERS": "1",
    }
    if args.gc_off or args.gc_stats or args.gc_threshold:  # how much of the gap is the collector
        _gc_site(args, env)
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
