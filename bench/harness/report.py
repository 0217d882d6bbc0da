"""``bench/results.md``: the targets first, then every figure behind them.

Every figure is the median [min-max] of the repeats; a ratio is taken per
repeat between runs made back to back, then summarised the same way.
"""

from __future__ import annotations

import os
import platform
from pathlib import Path

from .common import CACHE, home
from .load import Phase, wrk_version
from .opslog import PRICE_PER_100K
from .peers import PEER_NAMES
from .profiling import Profile
from .scenarios import (
    CACHE_SECONDS,
    CACHED,
    DECORATED,
    FLOOR,
    LOGIN_LOAD_C,
    PROFILE_C,
    SERVICE,
    SETUP_ATTEMPTS,
    Results,
)
from .stats import NOISY, Figure, ratio, verdict

Row = tuple[str, str, str, str]  # what, measured, target, verdict
TABLE_HEAD = ["| check | measured | target | verdict |", "|---|---|---|---|"]


class _View:
    """Look-ups into one run's results."""

    def __init__(self, res: Results) -> None:
        self.res = res

    def has(self, name: str, level: int) -> bool:
        return (name, level) in self.res.load

    def vals(self, name: str, level: int, attr: str) -> list[float]:
        return [getattr(p, attr) for p in self.res.load.get((name, level), [])]

    def vs(self, name: str, other: str, level: int, attr: str) -> Figure:
        return ratio(self.vals(name, level, attr), self.vals(other, level, attr))

    def login(self, name: str, attr: str) -> list[float]:
        return [getattr(p, attr) for p in self.res.login.get(name, [])]

    def fresh(self, which: dict[str, list[Phase]], name: str, attr: str) -> list[float]:
        return [getattr(p, attr) for p in which.get(name, [])]

    def peers(self) -> list[str]:
        return [name for name in PEER_NAMES.values() if self.has(name, PROFILE_C)]


def _target(what: str, fig: Figure, limit: float, *, at_most: bool, strict: bool = False) -> Row:
    sign = ("<" if strict else "≤") if at_most else (">" if strict else "≥")
    return what, fig.show("{:.3f}"), f"{sign} {limit}", verdict(fig, limit, at_most=at_most, strict=strict)


def strong_targets(v: _View) -> list[Row]:
    """Issue 13's targets for the strong path, each against the floor."""
    res = v.res
    rows = [
        _target(
            f"profile server CPU/request / floor (c={PROFILE_C}, whole process tree)",
            v.vs(SERVICE, FLOOR, PROFILE_C, "cpu_ms_per_req"),
            1.15,
            at_most=True,
        )
    ]
    for level in (8, PROFILE_C):
        if v.has(SERVICE, level):
            rows.append(
                _target(f"profile req/s / floor (c={level})", v.vs(SERVICE, FLOOR, level, "rps"), 0.85, at_most=False)
            )
    rows.append(_target("profile p50 / floor (c=1)", v.vs(SERVICE, FLOOR, 1, "p50_ms"), 1.15, at_most=True))
    rows.append(
        _target(
            "cold start to the first profile / floor", ratio(res.cold[SERVICE], res.cold[FLOOR]), 1.15, at_most=True
        )
    )
    rss = ratio(v.fresh(res.fresh_profile, SERVICE, "peak_rss_mb"), v.fresh(res.fresh_profile, FLOOR, "peak_rss_mb"))
    rows.append(
        _target(f"peak RSS, profile-only load on a fresh process (c={PROFILE_C}) / floor", rss, 1.2, at_most=True)
    )
    return rows


def cache_targets(v: _View) -> list[Row]:
    """Issue 13's targets for ``SESSION_CACHE_SECONDS=30``: against every peer and the floor."""
    rows = [
        _target(
            f"cache {CACHE_SECONDS} s: server CPU/request / {peer} (c={PROFILE_C})",
            v.vs(CACHED, peer, PROFILE_C, "cpu_ms_per_req"),
            1.0,
            at_most=True,
            strict=True,
        )
        for peer in v.peers()
    ]
    ops = v.res.ops[f"profile, cache {CACHE_SECONDS} s"]
    reads = ops.per("reads")
    rows.append(
        (
            f"cache {CACHE_SECONDS} s: Firestore reads/request (from its request log)",
            f"{reads:.4f} ({ops.reads} reads, {ops.requests} requests)",
            "≤ 0.01",
            "met" if reads <= 0.01 else "**missed**",
        )
    )
    rows.append(
        _target(
            f"cache {CACHE_SECONDS} s: p50 / floor (c=1)",
            v.vs(CACHED, FLOOR, 1, "p50_ms"),
            1.0,
            at_most=True,
            strict=True,
        )
    )
    rows.append(
        (
            f"cache {CACHE_SECONDS} s: server CPU/request / floor (c={PROFILE_C})",
            v.vs(CACHED, FLOOR, PROFILE_C, "cpu_ms_per_req").show("{:.3f}"),
            "(information)",
            "-",
        )
    )
    return rows


def other_checks(v: _View) -> list[Row]:
    """The earlier checks: login against its floor, failure timing, Firestore work, peers, the decorator."""
    rows = [
        _target(
            "login p50 / login floor p50 (c=1)",
            ratio(v.login(SERVICE, "p50_ms"), v.login(FLOOR, "p50_ms")),
            1.15,
            at_most=True,
        )
    ]
    unknown_wrong = ratio(v.login("unknown-user", "p50_ms"), v.login("wrong-password", "p50_ms"))
    within = all(0.9 <= x <= 1.1 for x in unknown_wrong.values)
    rows.append(
        (
            "unknown-user p50 / wrong-password p50",
            unknown_wrong.show("{:.3f}"),
            "0.9 - 1.1",
            "met" if within else "**missed**",
        )
    )
    for peer in v.peers():
        fig = v.vs(SERVICE, peer, PROFILE_C, "cpu_ms_per_req")
        rows.append((f"profile CPU/request / {peer} (c={PROFILE_C})", fig.show("{:.3f}"), "(information)", "-"))
    if v.has(DECORATED, 1):
        for what, attr, level in (("p50 (c=1)", "p50_ms", 1), (f"req/s (c={PROFILE_C})", "rps", PROFILE_C)):
            fig = v.vs(DECORATED, SERVICE, level, attr)
            rows.append((f"@require_session {what} / profile", fig.show("{:.3f}"), "(information)", "-"))
    prof = v.res.ops["profile"]
    met = prof.max_round_trips == 1 and prof.per("reads") <= 2 and prof.writes == 0
    rows.append(
        (
            "profile Firestore ops/request",
            f"{prof.per('round_trips'):.3f} round trips, {prof.per('reads'):.3f} reads, "
            f"{prof.per('writes'):.4f} writes",
            "1 RT, ≤ 2 reads, 0 writes",
            "met" if met else "**missed**",
        )
    )
    return rows


def _table(rows: list[Row]) -> list[str]:
    return [*TABLE_HEAD, *[f"| {a} | {b} | {c} | {d} |" for a, b, c, d in rows], ""]


def header(res: Results) -> list[str]:
    cfg = res.config
    # The load after counts the benchmark's own last runs (wrk, the servers, py-spy on every CPU): only the load
    # before says whether other work was competing.
    busy = res.load_before[0] > 1.0
    return [
        "# make bench",
        "",
        f"{res.started:%Y-%m-%d %H:%M} UTC on {platform.node()}: {os.cpu_count()} CPUs ({_cpu_model()}), "
        f"Python {platform.python_version()}, {wrk_version()}. Load average {res.load_before[0]:.2f} before, "
        f"{res.load_after[0]:.2f} after (the benchmark's own load)"
        + (" — **a busy machine: other work competed with the benchmark**." if busy else ".")
        + (f" The run took {res.elapsed_s / 60:.0f} min." if res.elapsed_s else ""),
        f"Server settings for the service and the floor alike: WORKERS={res.workers}, THREADS={res.threads} "
        "(functions-framework's aio mode serves through gunicorn with uvicorn workers). "
        f"Each load run lasts {cfg.seconds} s and is repeated {cfg.repeats} times in rotating order; figures are the "
        "median [min-max] of the repeats, ratios are taken per repeat between runs made back to back, and ⚠ marks a "
        f"spread over {NOISY:.0%}. Server CPU and memory are summed over each server's whole process tree (psutil).",
        "",
    ]


def targets_section(v: _View) -> list[str]:
    known = v.res.cache_setting_known
    mode = (
        "the service knows the setting."
        if known
        else "**the service does not know `SESSION_CACHE_SECONDS` yet: this row measures the strong mode** "
        "(the variable is passed and ignored)."
    )
    return [
        "## Targets: the strong path against its floor",
        "",
        *_table(strong_targets(v)),
        f"## Targets: profile with `SESSION_CACHE_SECONDS={CACHE_SECONDS}`",
        "",
        f"Same run, same emulator; {mode} The peers and the floor read Firestore on every request by construction.",
        "",
        *_table(cache_targets(v)),
        "## Other checks",
        "",
        *_table(other_checks(v)),
    ]


def read_path_section(v: _View) -> list[str]:
    res = v.res
    lines = [
        "## Read path: GET /profile (the peers read their one session document)",
        "",
        "| server | c | req/s | p50 ms | p99 ms | server CPU ms/req | peak RSS MiB | peak PSS MiB | errors |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    names = list(dict.fromkeys(name for name, _ in res.load))
    for name in names:
        for level in res.config.levels:
            phases = res.load[(name, level)]
            figs = [Figure.of([getattr(p, a) for p in phases]) for a in ("rps", "p50_ms", "p99_ms", "cpu_ms_per_req")]
            mem = [Figure.of([getattr(p, a) for p in phases]) for a in ("peak_rss_mb", "peak_pss_mb")]
            lines.append(
                f"| {name} | {level} | {figs[0].show('{:.0f}')} | {figs[1].show()} | {figs[2].show()} "
                f"| {figs[3].show()} | {mem[0].show('{:.0f}')} | {mem[1].show('{:.0f}')} "
                f"| {sum(p.errors for p in phases)} |"
            )
    levels = res.config.levels
    lines += ["", "Against the floor (per-repeat ratios, server / floor):", ""]
    heads = [f"req/s @{c}" for c in levels] + [f"p50 @{c}" for c in levels] + [f"CPU/req @{c}" for c in levels]
    lines += ["| server | " + " | ".join(heads) + " |", "|---|" + "---|" * len(heads)]
    for name in names:
        if name == FLOOR:
            continue
        cells = [v.vs(name, FLOOR, c, attr).show() for attr in ("rps", "p50_ms", "cpu_ms_per_req") for c in levels]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines += [f"| {name} | skipped: {why} |" + " |" * (len(heads) - 1) for name, why in res.skipped.items()]
    return [*lines, ""]


def login_section(res: Results) -> list[str]:
    lines = [
        "## Login at concurrency 1",
        "",
        "| case | p50 ms | p99 ms | req/s | server CPU ms/req | errors (non-2xx expected for failures) |",
        "|---|---|---|---|---|---|",
    ]
    for name, phases in res.login.items():
        figs = [Figure.of([getattr(p, a) for p in phases]) for a in ("p50_ms", "p99_ms", "rps", "cpu_ms_per_req")]
        lines.append(
            f"| {name} | {figs[0].show()} | {figs[1].show()} | {figs[2].show('{:.1f}')} | {figs[3].show()} "
            f"| {sum(p.errors for p in phases)} |"
        )
    return [*lines, ""]


def fresh_section(v: _View) -> list[str]:
    res = v.res
    rows: list[tuple[str, list[float], list[float]]] = [
        ("spawn → first 200 on /profile, s", res.cold.get(SERVICE, []), res.cold.get(FLOOR, []))
    ]
    for label, which in (
        (f"profile-only load, c={PROFILE_C}", res.fresh_profile),
        (f"login load, c={LOGIN_LOAD_C}", res.fresh_login),
    ):
        for attr, unit in (("peak_rss_mb", "peak RSS MiB"), ("peak_pss_mb", "peak PSS MiB")):
            rows.append((f"{label}: {unit}", v.fresh(which, SERVICE, attr), v.fresh(which, FLOOR, attr)))
        rows.append(
            (
                f"{label}: server CPU ms/req",
                v.fresh(which, SERVICE, "cpu_ms_per_req"),
                v.fresh(which, FLOOR, "cpu_ms_per_req"),
            )
        )
    lines = [
        "## Fresh instances: cold start, then memory under a profile-only load, then under a login load",
        "",
        "Each repeat spawns a new service and a new floor process. The profile-only load runs before the process has "
        "hashed any password; the login load follows on the same process, against the floor's login, which runs one "
        "argon2id verification with the same parameters (reported separately: no target).",
        "",
        "| | service | floor | service / floor |",
        "|---|---|---|---|",
    ]
    lines += [
        f"| {what} | {Figure.of(a).show()} | {Figure.of(b).show()} | {ratio(a, b).show('{:.3f}')} |"
        for what, a, b in rows
    ]
    imports = res.imports
    if imports:
        lines.append(
            f"| `python -X importtime` total, ms (import main / import floor) | {imports[SERVICE].show('{:.0f}')} "
            f"| {imports[FLOOR].show('{:.0f}')} "
            f"| {ratio(list(imports[SERVICE].values), list(imports[FLOOR].values)).show()} |"
        )
    return [*lines, ""]


def ops_section(res: Results) -> list[str]:
    lines = [
        "## Firestore operations per request (counted from the service's request log)",
        "",
        "List prices assumed: "
        + ", ".join(f"${price}/100k {kind}" for kind, price in PRICE_PER_100K.items())
        + ". The floor does 1 round trip and 2 reads per profile, each peer 1 read, by construction "
        "(not instrumented).",
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
    return [*lines, ""]


def profile_section(label: str, prof: Profile) -> list[str]:
    phase = prof.phase
    lines = [
        f"## Where the time goes: {label} (py-spy, on-CPU samples of the server's processes)",
        "",
        f"{phase.requests} requests, {phase.rps:.0f} req/s, {phase.cpu_ms_per_req:.2f} ms CPU/request while sampled; "
        f"{prof.samples} samples (py-spy competes for the CPU too).",
        "",
        "| inclusive % | frame (server, CLI and event-loop plumbing left out) | | self % | package |",
        "|---|---|---|---|---|",
    ]
    for i in range(max(len(prof.inclusive), len(prof.by_package))):
        inc = prof.inclusive[i] if i < len(prof.inclusive) else None
        own = prof.by_package[i] if i < len(prof.by_package) else None
        left = f"| {inc[0]:.1f} | `{inc[1]}` " if inc else "| | "
        lines.append(left + "| " + (f"| {own[0]:.1f} | {own[1]} |" if own else "| | |"))
    return [*lines, ""]


def footer(res: Results) -> list[str]:
    lines = [f"Note: {note}" for note in res.notes]
    lines.append(
        f"Set-up requests tried again (a 429, a 5xx or a connection error, up to {SETUP_ATTEMPTS} attempts each): "
        f"{len(res.setup_retries)}" + ("." if not res.setup_retries else ":")
    )
    lines += [f"- {retry}" for retry in res.setup_retries]
    return [
        *lines,
        *([""] if lines else []),
        "Reproduce: `make bench` (`BENCH_SECONDS`, `BENCH_REPEATS`, `BENCH_CONCURRENCY`, `BENCH_PEERS`, "
        "`BENCH_PROFILE`; or `.venv/bin/python bench/run.py --help`). It installs wrk with apt-get when it can, "
        "and needs Node.js for the "
        "express peer and a Python >= 3.12 for the aiohttp peer (`BENCH_PEER_PYTHON`); the peers' packages are cached "
        f"in `{home(CACHE)}`; server logs and py-spy samples are in `bench/out/`. "
        "Drill-down (see `bench/PROFILE.md`): `.venv/bin/python bench/cpu.py load` (py-spy under load, every "
        "sample in a bucket, µs per request), `steps` (the service's own per-request steps, in µs) and "
        "`calls [--cprofile]` (service vs floor CPU in one process, no HTTP server).",
        "",
    ]


def render(res: Results) -> str:
    """The whole report, as Markdown."""
    from .headline import headline

    v = _View(res)
    lines = [*header(res), *headline(res), *targets_section(v), *read_path_section(v), *fresh_section(v)]
    lines += [*login_section(res), *ops_section(res)]
    for label, prof in res.profiles.items():
        lines += profile_section(label, prof)
    return "\n".join([*lines, *footer(res)])


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"
