"""Plain aligned tables for the commands that print once and end (`status`, `jobs`, `logs`).

Rich's console and tables cost about a sixth of `imagedist status`'s start (issue 13); these
tables need only column widths and, on a terminal, a colour per cell. Rich stays for the live
progress display.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

import click

__all__ = ["Cell", "Row", "echo_lines", "grid", "table"]

GAP = "  "  # between two columns


@dataclass(frozen=True)
class Cell:
    """A cell's text and how a terminal shows it: words of "bold", "dim" and a colour name
    (e.g. "bold red"), or "" for plain."""

    text: str
    style: str = ""


Row = Sequence[str | Cell]


def _cell(value: str | Cell) -> Cell:
    return value if isinstance(value, Cell) else Cell(value)


def _styled(cell: Cell, width: int, centered: bool) -> str:
    """The cell padded to ``width`` (the padding is never coloured)."""
    text = cell.text.center(width) if centered else cell.text.ljust(width)
    if not cell.style:
        return text
    words = cell.style.split()
    colour = next((w for w in words if w not in ("bold", "dim")), None)
    start = len(text) - len(text.lstrip(" "))
    end = start + len(cell.text)
    # None, not False: click turns False into a code that resets bold and dim alike.
    bold, dim = ("bold" in words) or None, ("dim" in words) or None
    painted = click.style(cell.text, fg=colour, bold=bold, dim=dim)
    return text[:start] + painted + text[end:]


def _lines(rows: Sequence[Row], centered: frozenset[int]) -> list[str]:
    cells = [[_cell(v) for v in row] for row in rows]
    columns = max((len(row) for row in cells), default=0)
    widths = [max((len(r[i].text) for r in cells if i < len(r)), default=0) for i in range(columns)]
    lines = []
    for row in cells:
        shown = [_styled(c, widths[i], i in centered) for i, c in enumerate(row)]
        lines.append(GAP.join(shown).rstrip())
    return lines


def grid(rows: Sequence[Row]) -> list[str]:
    """Rows of cells in aligned columns, without a header."""
    return _lines(rows, frozenset())


def table(
    headers: Sequence[str],
    rows: Sequence[Row],
    *,
    title: str | None = None,
    centered: frozenset[int] = frozenset(),
) -> list[str]:
    """A header, a rule under each header and the rows, in aligned columns; ``centered``: the
    indexes of the columns whose cells are centred."""
    widths = [max([len(h), *(len(_cell(r[i]).text) for r in rows)]) for i, h in enumerate(headers)]
    rule = [Cell("-" * w) for w in widths]
    header = [Cell(h, "bold") for h in headers]
    lines = _lines([header, rule, *rows], centered)
    return ([title] if title else []) + lines


def echo_lines(lines: Sequence[str]) -> None:
    """Print ``lines`` to stdout: coloured on a terminal unless NO_COLOR is set, plain text
    when piped."""
    colour = False if os.environ.get("NO_COLOR") else None  # None: click asks the terminal
    for line in lines:
        click.echo(line, color=colour)
