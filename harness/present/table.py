"""A table as data (column names and rows of plain strings and numbers) and its one Markdown form.

Markdown has no width: a cell is never cut or wrapped, so whole suite and metric names reach a log, a file or a
GitHub step summary. Cell text from documents is untrusted (:func:`md_escape`): ``|`` is escaped, ``<``/``>``
become entities (no HTML reaches a rendered summary), a newline becomes a space (it would end the row), and the
inline syntax that would make a name an image, a link, a code span or emphasis is backslash-escaped."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

Cell = str | int | float | bool | None

MISSING = "–"


# Backslash-escaped wherever they stand: \ (else it would escape our own syntax), ` (code spans), * (emphasis),
# [ ] (links and images: "![p](url)" and "[t](url)" need both), and ! directly before [ (an image). "(" and ")"
# and a "#" inside a line make nothing without them; "_" between two letters or digits opens no emphasis, so
# "token_f1" stays as it is.
_MD_SPECIAL = re.compile(r"[\\`*\[\]]|!(?=\[)|(?<![^\W_])_|_(?![^\W_])")


def md_escape(s: object) -> str:
    """Text safe inside a Markdown table cell or a line of a summary: it ends no row (``|`` escaped, newlines as
    spaces), opens no HTML (``<``/``>`` as entities) and makes no image, link, code span or emphasis (their
    syntax backslash-escaped: a model named ``ad![p](https://x/px.png)`` shows as that text). Inside a code span a
    backslash shows as itself; an escaped backtick still cannot end the span early into markup, as everything
    after it is escaped text. ``#`` is left as it is: the text never starts a line of its own (newlines are spaces),
    and a caller may escape a heading it wrote itself."""
    text = str(s).replace("\r", " ").replace("\n", " ")
    text = _MD_SPECIAL.sub(lambda m: "\\" + m.group(0), text)
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def md_code(s: object) -> str:
    """Text as one inline code span (a ref, a digest, a path) that nothing in it can end early: fenced with one
    backtick more than the longest run of backticks inside, padded with a space where it starts or ends with one.
    A newline becomes a space and ``|`` is escaped, so the span also fits a table cell."""
    text = str(s).replace("\r", " ").replace("\n", " ").replace("|", "\\|")
    fence = "`" * (max((len(run) for run in re.findall(r"`+", text)), default=0) + 1)
    pad = " " if text.startswith("`") or text.endswith("`") else ""
    return f"{fence}{pad}{text}{pad}{fence}"


def format_cell(value: Cell, spec: str | None = None) -> str:
    """How a cell reads: None as ``–``, booleans as yes/no, numbers with ``spec`` (default ``.4g`` for floats)."""
    if value is None:
        return MISSING
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        return format(value, spec or ".4g")
    if isinstance(value, int):
        return format(value, spec) if spec else str(value)
    return str(value)


@dataclass
class Table:
    """Rows of one document, ready for any renderer.

    ``formats`` gives a number format per column (``{"value": ".4f"}``); ``right`` names the columns aligned right
    (numbers); ``notes`` are lines shown under the table (legend, totals)."""

    columns: list[str]
    rows: list[list[Cell]] = field(default_factory=list)
    title: str | None = None
    formats: dict[str, str] = field(default_factory=dict)
    right: set[str] = field(default_factory=set)
    notes: list[str] = field(default_factory=list)

    def add(self, *cells: Cell) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"a row of {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append(list(cells))

    def records(self) -> list[dict[str, Cell]]:
        """The rows as dicts keyed by column name (what tests and JSON consumers read)."""
        return [dict(zip(self.columns, r)) for r in self.rows]

    def column(self, name: str) -> list[Cell]:
        i = self.columns.index(name)
        return [r[i] for r in self.rows]

    def text_rows(self) -> list[list[str]]:
        """Every cell as the text a renderer shows (formats applied, not escaped)."""
        specs = [self.formats.get(c) for c in self.columns]
        return [[format_cell(v, s) for v, s in zip(r, specs)] for r in self.rows]


def _line(cells: list[str]) -> str:
    return "| " + " | ".join(cells) + " |"


def markdown_table(columns: list[str], rows: list[list[str]], right: set[str] | frozenset[str] = frozenset(), escape: bool = True) -> list[str]:
    """The lines of a GitHub-flavoured Markdown table: ``| a | b |``, ``|---|---:|``, one line per row.

    Cells are text already formatted; ``escape=False`` is for cells a caller built from escaped parts (bold,
    code spans, links it wrote itself)."""
    esc = md_escape if escape else str
    out = [_line([esc(c) for c in columns]), "|" + "|".join("---:" if c in right else "---" for c in columns) + "|"]
    for r in rows:
        if len(r) != len(columns):
            raise ValueError(f"a row of {len(r)} cells for {len(columns)} columns")
        out.append(_line([esc(c) for c in r]))
    return out


def markdown(table: Table) -> str:
    """A :class:`Table` as Markdown: its title in bold, the table, its notes (what ``--format md`` prints)."""
    lines: list[str] = []
    if table.title:
        lines += [f"**{md_escape(table.title)}**", ""]
    lines += markdown_table(table.columns, table.text_rows(), table.right)
    if table.notes:
        lines += [""] + [md_escape(n) for n in table.notes]
    return "\n".join(lines) + "\n"
