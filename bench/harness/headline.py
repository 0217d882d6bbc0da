"""The headline of ``make bench`` (issue 26): what a buyer asks first, each figure beside its target.

The three strong-path ratios against the floor, cold start, and what a profile and a login cost in Firestore
operations (from the service's own request log). ``render`` puts it at the top of ``bench/results.md``; the
command line prints it once more at the end of the run, with the run's length.
"""

from __future__ import annotations

from .common import ROOT
from .opslog import Ops
from .scenarios import FLOOR, LOGIN_FIRST, LOGIN_TRUSTED, PROFILE_C, SERVICE, Results
from .stats import Figure, ratio, verdict

# Issue 26, part 2: document writes per login, besides the one security event its commit may add.
LOGIN_WRITE_TARGETS = {LOGIN_FIRST: 4, LOGIN_TRUSTED: 3}


def _vals(res: Results, name: str, level: int, attr: str) -> list[float]:
    return [getattr(p, attr) for p in res.load.get((name, level), [])]


def _ratio_row(what: str, fig: Figure, limit: float, *, at_most: bool) -> str:
    sign = "≤" if at_most else "≥"
    return f"| {what} | {sign} {limit} | {fig.show('{:.3f}')} | {verdict(fig, limit, at_most=at_most)} |"


def _ops(ops: Ops) -> str:
    return (
        f"{ops.per('round_trips'):.2f} round trips, {ops.per('reads'):.2f} reads, {ops.per('writes'):.2f} writes, "
        f"{ops.per('deletes'):.2f} deletes ({ops.requests} requests)"
    )


def events_built() -> bool:
    """Whether this version writes a security event in a login's commit (``session/plan.py`` has ``Kind.EVENT``).

    Read from the source, as ``scenarios.cache_setting_known`` does: the request log counts the event's
    write with the others and does not say which one it is.
    """
    plan = ROOT / "session" / "plan.py"
    return plan.exists() and "EVENT = " in plan.read_text()


def _login_row(name: str, ops: Ops | None, events: bool) -> str:
    target = LOGIN_WRITE_TARGETS[name]
    allowed = target + 1 if events else target
    aim = f"≤ {target} writes + 1 security event" if events else f"≤ {target} writes (no security events here)"
    if ops is None or not ops.requests:
        return f"| {name} | {aim} | not measured | - |"
    mark = "met" if ops.per("writes") <= allowed else "**missed**"
    return f"| {name} | {aim} | {_ops(ops)} | {mark} |"


def headline(res: Results) -> list[str]:
    """The headline table, as Markdown lines."""
    cpu = ratio(_vals(res, SERVICE, PROFILE_C, "cpu_ms_per_req"), _vals(res, FLOOR, PROFILE_C, "cpu_ms_per_req"))
    rps = ratio(_vals(res, SERVICE, 8, "rps"), _vals(res, FLOOR, 8, "rps"))
    p50 = ratio(_vals(res, SERVICE, 1, "p50_ms"), _vals(res, FLOOR, 1, "p50_ms"))
    cold = ratio(res.cold.get(SERVICE, []), res.cold.get(FLOOR, []))
    rows = [
        _ratio_row(f"GET /profile: server CPU per request / floor (c={PROFILE_C})", cpu, 1.15, at_most=True),
        _ratio_row("GET /profile: throughput / floor (c=8)", rps, 0.85, at_most=False)
        if rps.values
        else "| GET /profile: throughput / floor (c=8) | ≥ 0.85 | not measured (BENCH_CONCURRENCY) | - |",
        _ratio_row("GET /profile: p50 / floor (c=1)", p50, 1.15, at_most=True),
        _ratio_row("cold start: spawn → first 200 on /profile / floor", cold, 1.15, at_most=True),
    ]
    profile = res.ops.get("profile")
    if profile is not None and profile.requests:
        met = profile.max_round_trips == 1 and profile.per("reads") <= 2 and profile.writes == 0
        rows.append(
            f"| GET /profile: Firestore per request | 1 round trip, ≤ 2 reads, 0 writes | {_ops(profile)} "
            f"| {'met' if met else '**missed**'} |"
        )
    events = events_built()
    rows += [_login_row(name, res.ops.get(name), events) for name in LOGIN_WRITE_TARGETS]
    return [
        "## Headline: the strong path as deployed",
        "",
        "The service as deployed (target `api`, JSON request logs, default settings) against the floor with the same "
        f"WORKERS={res.workers} and THREADS={res.threads}. Load average {res.load_before[0]:.2f} before the run, "
        f"{res.load_after[0]:.2f} after; compare ratios of one run only. Operations are counted from the service's "
        "request log; see [docs/cost.md](../docs/cost.md) for what they cost.",
        "",
        "| figure | target | measured | verdict |",
        "|---|---|---|---|",
        *rows,
        "",
    ]
