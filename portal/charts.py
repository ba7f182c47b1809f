"""Server-rendered SVG: one analysis over time, the reference range shaded.

No JavaScript and no chart library: the page works offline and with scripts off. The SVG
has a title and a description for screen readers; the page shows the same points as a table.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from markupsafe import Markup, escape

WIDTH, HEIGHT = 640, 280
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 48


@dataclass(frozen=True)
class Point:
    time: dt.datetime
    value: float


def _ticks(low: float, high: float, count: int = 5) -> list[float]:
    step = (high - low) / (count - 1) if high > low else 1.0
    return [low + i * step for i in range(count)]


def _fmt(value: float) -> str:
    return f"{value:.1f}" if abs(value) < 1000 else f"{value:.0f}"


def trend_svg(
    points: Sequence[Point],
    unit: str,
    low: float | None,
    high: float | None,
    title: str,
    description: str,
    range_label: str,
) -> Markup:
    """The plot as inline SVG markup (oldest left). Empty markup for no points."""
    if not points:
        return Markup("")
    ordered = sorted(points, key=lambda p: p.time)
    values = [p.value for p in ordered] + [v for v in (low, high) if v is not None]
    vmin, vmax = min(values), max(values)
    pad = (vmax - vmin) * 0.1 or abs(vmax) * 0.1 or 1.0
    vmin, vmax = vmin - pad, vmax + pad
    t0 = ordered[0].time.timestamp()
    t1 = ordered[-1].time.timestamp()
    span = (t1 - t0) or 1.0
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(t: dt.datetime) -> float:
        if len(ordered) == 1:
            return LEFT + plot_w / 2
        return LEFT + (t.timestamp() - t0) / span * plot_w

    def y(v: float) -> float:
        return TOP + (vmax - v) / (vmax - vmin) * plot_h

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="trend" viewBox="0 0 {WIDTH} {HEIGHT}" '
        f'width="100%" role="img" aria-labelledby="trend-title trend-desc">',
        f'<title id="trend-title">{escape(title)}</title>',
        f'<desc id="trend-desc">{escape(description)}</desc>',
    ]
    if low is not None or high is not None:
        top = y(high if high is not None else vmax)
        bottom = y(low if low is not None else vmin)
        parts.append(
            f'<rect class="reference" x="{LEFT}" y="{top:.1f}" width="{plot_w}" '
            f'height="{max(bottom - top, 0):.1f}"><title>{escape(range_label)}</title></rect>'
        )
    for tick in _ticks(vmin, vmax):
        ty = y(tick)
        parts.append(
            f'<line class="grid" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{ty:.1f}" y2="{ty:.1f}"/>'
            f'<text class="axis" x="{LEFT - 6}" y="{ty + 4:.1f}" text-anchor="end">'
            f"{_fmt(tick)}</text>"
        )
    parts.append(
        f'<text class="axis" x="{LEFT - 6}" y="{TOP - 4}" text-anchor="end">{escape(unit)}</text>'
    )
    labels = ordered if len(ordered) <= 6 else [ordered[0], ordered[len(ordered) // 2], ordered[-1]]
    for p in labels:
        parts.append(
            f'<text class="axis" x="{x(p.time):.1f}" y="{HEIGHT - BOTTOM + 20}" '
            f'text-anchor="middle">{p.time:%d.%m.%y}</text>'
        )
    parts.append(
        f'<line class="frame" x1="{LEFT}" x2="{LEFT}" y1="{TOP}" y2="{HEIGHT - BOTTOM}"/>'
        f'<line class="frame" x1="{LEFT}" x2="{WIDTH - RIGHT}" y1="{HEIGHT - BOTTOM}" '
        f'y2="{HEIGHT - BOTTOM}"/>'
    )
    if len(ordered) > 1:
        path = " ".join(f"{x(p.time):.1f},{y(p.value):.1f}" for p in ordered)
        parts.append(f'<polyline class="line" points="{path}"/>')
    for p in ordered:
        outside = (low is not None and p.value < low) or (high is not None and p.value > high)
        cls = "point outside" if outside else "point"
        parts.append(
            f'<circle class="{cls}" cx="{x(p.time):.1f}" cy="{y(p.value):.1f}" r="5">'
            f"<title>{p.time:%d.%m.%Y}: {_fmt(p.value)} {escape(unit)}</title></circle>"
        )
    parts.append("</svg>")
    # Every text part above went through escape(); numbers are formatted by us.
    return Markup("".join(parts))  # noqa: S704
