"""The plan page's chart, drawn by the server as inline SVG: targets done over time, one step line
per series. No chart library, no script; each series differs by dash pattern and name as well as
colour, and the figure carries a text description."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from html import escape

__all__ = ["Series", "done_over_time_svg"]

WIDTH, HEIGHT = 720, 320
LEFT, RIGHT, TOP, BOTTOM = 56, 16, 16, 40
DASHES = ("", "8 4", "2 3", "12 3 2 3")


@dataclass(frozen=True)
class Series:
    """One line: its name (shown in the legend), a CSS class and when each target got done."""

    name: str
    css: str
    done_at: Sequence[float]


def _hours_label(seconds: float) -> str:
    if seconds >= 3600:
        return f"{seconds / 3600:.1f} h"
    if seconds >= 60:
        return f"{seconds / 60:.0f} min"
    return f"{seconds:.0f} s"


def _points(done_at: Sequence[float], x: float, y: float) -> str:
    """A step line: flat until each target is done, then one higher."""
    points: list[tuple[float, float]] = [(LEFT, HEIGHT - BOTTOM)]
    for count, ts in enumerate(sorted(done_at), start=1):
        px = LEFT + ts * x
        points.append((px, points[-1][1]))
        points.append((px, HEIGHT - BOTTOM - count * y))
    return " ".join(f"{px:.1f},{py:.1f}" for px, py in points)


def done_over_time_svg(series: Sequence[Series], title: str) -> str:
    """The SVG element (escaped; safe to insert into a page as it is)."""
    end = max((max(s.done_at) for s in series if s.done_at), default=1.0) or 1.0
    top = max((len(s.done_at) for s in series), default=1) or 1
    x = (WIDTH - LEFT - RIGHT) / end
    y = (HEIGHT - TOP - BOTTOM) / top
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {WIDTH} {HEIGHT}" role="img"'
        f' aria-labelledby="chart-title chart-desc" class="chart" id="plan-chart">',
        f'<title id="chart-title">{escape(title)}</title>',
        f'<desc id="chart-desc">{escape(_description(series))}</desc>',
        f'<line class="axis" x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}"'
        f' y2="{HEIGHT - BOTTOM}" stroke="currentColor"/>',
        f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}"'
        ' stroke="currentColor"/>',
    ]
    for i in range(5):
        tx = LEFT + (WIDTH - LEFT - RIGHT) * i / 4
        parts.append(
            f'<text x="{tx:.1f}" y="{HEIGHT - BOTTOM + 18}" text-anchor="middle"'
            f' fill="currentColor">{escape(_hours_label(end * i / 4))}</text>'
        )
    parts.append(
        f'<text x="{LEFT - 8}" y="{TOP + 4}" text-anchor="end" fill="currentColor">{top}</text>'
        f'<text x="{LEFT - 8}" y="{HEIGHT - BOTTOM}" text-anchor="end" fill="currentColor">0</text>'
    )
    for i, s in enumerate(series):
        dash = DASHES[i % len(DASHES)]
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        parts.append(
            f'<polyline class="series {escape(s.css)}" data-series="{escape(s.css)}"'
            f' fill="none" stroke-width="2"{dash_attr} points="{_points(s.done_at, x, y)}">'
            f"<title>{escape(s.name)}</title></polyline>"
        )
    parts.append("</svg>")
    return "".join(parts)


def _description(series: Sequence[Series]) -> str:
    return "; ".join(
        f"{s.name}: {len(s.done_at)} targets done"
        + (f", the last after {_hours_label(max(s.done_at))}" if s.done_at else "")
        for s in series
    )
