"""CPU time per call, in one process: the timers of ``bench/cpu.py steps`` and ``bench/cpu.py calls``.

Process time (all threads), not wall time: less hurt by neighbours on a shared machine. Several
functions are timed in turn within each round, so the machine's noise hits them all alike.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Awaitable, Callable

Timed = Callable[[], object]
ATimed = Callable[[], Awaitable[object]]


def us_sync(fn: Timed, n: int, rounds: int) -> float:
    """CPU µs per call of ``fn``: the median over ``rounds`` of ``n`` calls."""
    values = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(n):
            fn()
        values.append((time.process_time() - start) / n)
    return statistics.median(values) * 1e6


async def us_rounds(fns: dict[str, ATimed], n: int, rounds: int) -> dict[str, list[float]]:
    """CPU µs per call of each coroutine function, one value per round, measured in turn within each round."""
    values: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.process_time()
            for _ in range(n):
                await fn()
            values[name].append((time.process_time() - start) / n * 1e6)
    return values


async def us_interleaved(fns: dict[str, ATimed], n: int, rounds: int) -> dict[str, float]:
    """The median of ``us_rounds`` per function."""
    return {name: statistics.median(v) for name, v in (await us_rounds(fns, n, rounds)).items()}


def median_range(values: list[float]) -> str:
    """``median [min-max]``, to three decimals."""
    return f"{statistics.median(values):.3f} [{min(values):.3f}-{max(values):.3f}]"
