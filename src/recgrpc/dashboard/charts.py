"""Chart geometry for server-rendered SVG: scales, ticks, bars and lines (templates draw them).

Pure functions of the numbers, no I/O: a page's charts are computed with its data, drawn by the
``_charts.html`` macros, and need no JavaScript or network to show.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

WIDTH = 860
HEIGHT = 220
MARGIN_LEFT = 56
MARGIN_RIGHT = 16
MARGIN_TOP = 12
MARGIN_BOTTOM = 28
# Colour-blind-safe palette (Okabe-Ito), in the order series are drawn.
PALETTE = ("#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000")

Format = Callable[[float], str]


def plain(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.3g}"


def percent(value: float) -> str:
    return f"{value * 100:.1f} %"


@dataclass(frozen=True)
class Tick:
    position: float
    label: str


@dataclass(frozen=True)
class Bar:
    x: float
    y: float
    width: float
    height: float
    value: float
    title: str
    """Tooltip text: the bar's label and value."""
    tone: str = ""
    """A CSS class for the bar's colour (empty: the default)."""


@dataclass(frozen=True)
class Point:
    x: float
    y: float
    value: float
    title: str


@dataclass(frozen=True)
class Line:
    name: str
    colour: str
    points: tuple[Point, ...]

    @property
    def path(self) -> str:
        """The SVG path through the points (``M x y L x y ...``)."""
        return " ".join(
            f"{'M' if n == 0 else 'L'}{p.x:.1f} {p.y:.1f}" for n, p in enumerate(self.points)
        )


@dataclass(frozen=True)
class Chart:
    """One chart's drawable parts, in SVG user units (``viewBox 0 0 width height``)."""

    title: str
    width: int
    height: int
    left: float
    top: float
    right: float
    bottom: float
    x_ticks: tuple[Tick, ...]
    y_ticks: tuple[Tick, ...]
    bars: tuple[Bar, ...] = ()
    lines: tuple[Line, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.bars and not any(line.points for line in self.lines)


def nice_ceiling(value: float) -> float:
    """The smallest 1, 2, 2.5 or 5 times a power of ten at or above ``value`` (1 for 0)."""
    if value <= 0 or not math.isfinite(value):
        return 1.0
    power = 10.0 ** math.floor(math.log10(value))
    for step in (1.0, 2.0, 2.5, 5.0, 10.0):
        if value <= step * power * (1 + 1e-9):
            return step * power
    return 10.0 * power


def _y_ticks(ceiling: float, fmt: Format, integer: bool) -> list[tuple[float, str]]:
    """Tick values from 0 to ``ceiling`` in round steps (whole numbers only for counts)."""
    leading = ceiling / 10 ** math.floor(math.log10(ceiling))
    count = 4 if math.isclose(leading, 2.0) else 5
    if integer and ceiling < count:
        count = max(1, round(ceiling))
    return [(ceiling * k / count, fmt(ceiling * k / count)) for k in range(count + 1)]


def _plot_area(width: int, height: int) -> tuple[float, float, float, float]:
    """(left, top, right, bottom) of the area inside the axes."""
    return MARGIN_LEFT, MARGIN_TOP, width - MARGIN_RIGHT, height - MARGIN_BOTTOM


def bar_chart(
    title: str,
    values: Sequence[tuple[str, float]],
    *,
    label_every: int = 1,
    fmt: Format = plain,
    integer: bool = True,
    tones: Mapping[str, str] | None = None,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> Chart:
    """Vertical bars, one per ``(label, value)`` in order; every ``label_every``-th is labelled.

    ``tones`` maps a label to a CSS class for its bar's colour."""
    left, top, right, bottom = _plot_area(width, height)
    ceiling = nice_ceiling(max((v for _, v in values), default=0.0))
    slot = (right - left) / max(len(values), 1)
    gap = min(2.0, slot * 0.2)
    bars, x_ticks = [], []
    for n, (label, value) in enumerate(values):
        h = (bottom - top) * value / ceiling
        x = left + n * slot
        tone = (tones or {}).get(label, "")
        title_text = f"{label}: {fmt(value)}"
        bars.append(Bar(x + gap / 2, bottom - h, slot - gap, h, value, title_text, tone))
        if n % label_every == 0:
            x_ticks.append(Tick(x + slot / 2, label))
    ticks = _y_ticks(ceiling, fmt, integer)
    y_ticks = [Tick(bottom - (bottom - top) * v / ceiling, text) for v, text in ticks]
    return Chart(
        title=title,
        width=width,
        height=height,
        left=left,
        top=top,
        right=right,
        bottom=bottom,
        x_ticks=tuple(x_ticks),
        y_ticks=tuple(y_ticks),
        bars=tuple(bars) if any(v for _, v in values) else (),
    )


def line_chart(
    title: str,
    series: Mapping[str, Sequence[tuple[datetime, float]]],
    start: datetime,
    end: datetime,
    *,
    x_labels: Sequence[tuple[datetime, str]],
    fmt: Format = plain,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> Chart:
    """One line per series over the time range ``start``..``end``, points in time order."""
    left, top, right, bottom = _plot_area(width, height)
    span = max((end - start).total_seconds(), 1.0)
    ceiling = nice_ceiling(max((v for pts in series.values() for _, v in pts), default=0.0))

    def x_of(at: datetime) -> float:
        return left + (right - left) * (at - start).total_seconds() / span

    lines = []
    for n, (name, points) in enumerate(series.items()):
        drawn = tuple(
            Point(
                x_of(at),
                bottom - (bottom - top) * v / ceiling,
                v,
                f"{name}, {at:%Y-%m-%d}: {fmt(v)}",
            )
            for at, v in sorted(points)
        )
        lines.append(Line(name, PALETTE[n % len(PALETTE)], drawn))
    ticks = _y_ticks(ceiling, fmt, integer=False)
    y_ticks = [Tick(bottom - (bottom - top) * v / ceiling, text) for v, text in ticks]
    return Chart(
        title=title,
        width=width,
        height=height,
        left=left,
        top=top,
        right=right,
        bottom=bottom,
        x_ticks=tuple(Tick(x_of(at), text) for at, text in x_labels),
        y_ticks=tuple(y_ticks),
        lines=tuple(lines),
    )
