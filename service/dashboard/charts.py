"""Bar charts of the last hour as SVG geometry: the dashboard draws them with no script."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

WIDTH = 300
HEIGHT = 80


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    tip: str


@dataclass(frozen=True)
class Chart:
    title: str
    unit: str
    bars: list[Bar]
    peak: float
    last: float

    @property
    def empty(self) -> bool:
        return self.peak == 0


@dataclass(frozen=True)
class Window:
    """``buckets`` consecutive buckets of ``step`` ending at ``end``."""

    end: datetime
    step: timedelta = timedelta(minutes=5)
    buckets: int = 12

    @property
    def start(self) -> datetime:
        return self.end - self.step * self.buckets

    def index(self, at: datetime) -> int | None:
        if not self.start <= at < self.end:
            return None
        return int((at - self.start) / self.step)

    def label(self, i: int) -> str:
        return (self.start + self.step * i).strftime("%H:%M")

    def group(self, points: Iterable[tuple[datetime, float]]) -> list[list[float]]:
        """The values of the points falling into each bucket."""
        grouped: list[list[float]] = [[] for _ in range(self.buckets)]
        for at, value in points:
            i = self.index(at)
            if i is not None:
                grouped[i].append(value)
        return grouped


def bar_chart(
    title: str,
    unit: str,
    window: Window,
    points: Iterable[tuple[datetime, float]],
    reduce: Callable[[Sequence[float]], float],
) -> Chart:
    """One bar per bucket: ``reduce`` of its values (0 for an empty bucket)."""
    values = [reduce(group) if group else 0.0 for group in window.group(points)]
    peak = max(values, default=0.0)
    slot = WIDTH / window.buckets
    bars = []
    for i, value in enumerate(values):
        height = HEIGHT * value / peak if peak else 0.0
        bars.append(
            Bar(
                x=i * slot + 1,
                y=HEIGHT - height,
                width=slot - 2,
                height=height,
                tip=f"{window.label(i)}: {value:.3g} {unit}",
            )
        )
    return Chart(title=title, unit=unit, bars=bars, peak=peak, last=values[-1] if values else 0)


def count(values: Sequence[float]) -> float:
    return float(len(values))


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values))


def mean(values: Sequence[float]) -> float:
    return float(statistics.fmean(values))
