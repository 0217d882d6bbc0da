"""Figures over the repeats: median and range, per-repeat ratios, and verdicts against a target."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

NOISY = 0.10  # a relative spread (max - min) / median above this is flagged


@dataclass(frozen=True, slots=True)
class Figure:
    """A measured figure over the repeats."""

    values: tuple[float, ...]

    @classmethod
    def of(cls, values: list[float]) -> Figure:
        return cls(tuple(values))

    @property
    def median(self) -> float:
        return statistics.median(self.values) if self.values else float("nan")

    @property
    def spread(self) -> float:
        med = self.median
        return (max(self.values) - min(self.values)) / med if med else float("inf")

    @property
    def noisy(self) -> bool:
        return len(self.values) > 1 and self.spread > NOISY

    def show(self, fmt: str = "{:.2f}") -> str:
        """``median [min-max]``, with ⚠ when the spread is too wide to trust on its own."""
        if not self.values:
            return "-"
        text = fmt.format(self.median)
        if len(self.values) > 1:
            text += f" [{fmt.format(min(self.values))}-{fmt.format(max(self.values))}]"
        return text + (" ⚠" if self.noisy else "")


def ratio(a: list[float], b: list[float]) -> Figure:
    """Per-repeat ratios a/b of paired runs."""
    return Figure(tuple(x / y if y else float("inf") for x, y in zip(a, b, strict=True)))


def verdict(fig: Figure, limit: float, *, at_most: bool, strict: bool = False) -> str:
    """ "met" or "missed" for the median, and whether every repeat agreed; ``strict``: < or > instead of ≤ or ≥."""

    def passes(value: float) -> bool:
        if at_most:
            return value < limit if strict else value <= limit
        return value > limit if strict else value >= limit

    if not fig.values:
        return "-"
    word = "met" if passes(fig.median) else "**missed**"
    agree = sum(passes(v) for v in fig.values)
    if 0 < agree < len(fig.values):
        word += f" (in {agree} of {len(fig.values)} repeats)"
    return word
