"""Consoles shared by the CLI commands (stdout for results, stderr for progress and errors), and the one choice of
how a table is printed.

``--format`` (``--output-format`` where ``--format`` already means something else) picks it: ``table`` is a rich
table, ``md`` a Markdown table (no width, nothing cut or wrapped: whole suite and metric names, and it renders in a
GitHub step summary), ``json`` the command's JSON document (``--json`` is the same). Without it a terminal gets
``table`` and anything else (a pipe, a file, a CI log) gets ``md``. Lines of prose are never wrapped either
(``soft_wrap``): a log keeps each line whole."""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console

from ..present import Table, markdown

# C0 controls but tab and newline, DEL and the C1 controls: ESC starts the sequences that set a terminal's title, add
# hyperlinks, move the cursor or erase lines, and a carriage return overwrites a log line. Text from a run folder, a
# history or a config (a model name, a note) prints with each of them as U+FFFD, one character for one, so the
# spans of a rich Text stay where they were.
_CONTROLS = {c: "\ufffd" for c in (*range(0x00, 0x09), *range(0x0B, 0x20), *range(0x7F, 0xA0),
                                   *range(0xD800, 0xE000))}  # and lone surrogates (a "\ud800" JSON escape): no UTF-8 for them


def terminal_safe(text: str) -> str:
    """``text`` with every terminal control character (but tab and newline) and lone surrogate replaced by U+FFFD."""
    return text.translate(_CONTROLS)


class _SafeConsole(Console):
    """A rich console that prints no control character it was handed (its own styling is added after)."""

    def print(self, *objects, **kwargs):  # type: ignore[override]
        from rich.text import Text

        def clean(o):
            if isinstance(o, str):
                return terminal_safe(o)
            if isinstance(o, Text) and o.plain != (safe := terminal_safe(o.plain)):
                t = o.copy()
                t.plain = safe
                return t
            return o

        return super().print(*(clean(o) for o in objects), **kwargs)


console = _SafeConsole(highlight=False, soft_wrap=True)
err_console = _SafeConsole(stderr=True, highlight=False, soft_wrap=True)

FORMATS = ("table", "md", "json")


_C1_ESCAPED = {c: f"\\u{c:04x}" for c in range(0x7F, 0xA0)}  # json.dumps escapes C0 itself; these only occur inside strings


def print_json(obj) -> None:
    text = json.dumps(obj, indent=2, ensure_ascii=False, default=str).translate(_C1_ESCAPED)
    sys.stdout.write(text.encode("utf-8", "backslashreplace").decode("utf-8") + "\n")  # a lone surrogate as its JSON escape


def add_format(p: argparse.ArgumentParser, what: str, *, format_flag: bool = True) -> None:
    """``--format table|md|json`` (also ``--output-format``) and its alias ``--json``, with help naming ``what``
    JSON prints. ``format_flag=False`` where the command's ``--format`` already names a file format."""
    flags = ("--format", "--output-format") if format_flag else ("--output-format",)
    p.add_argument(*flags, dest="output_format", choices=FORMATS, default=None,
                   help=f"table: a rich table (default on a terminal); md: Markdown tables, no width (default on a pipe or file); json: {what}")
    p.add_argument("--json", action="store_true", help=f"print {what} (same as {flags[0]} json)")


def settle_format(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """After parsing: ``--json`` and ``--format json`` become one (``args.json``); a contradiction is a usage error."""
    if not hasattr(args, "output_format"):
        return
    if args.json and args.output_format not in (None, "json"):
        parser.error(f"--json and --format {args.output_format} disagree: pass one of them")
    if args.output_format == "json":
        args.json = True


def table_format(args: argparse.Namespace | None = None) -> str:
    """``table`` or ``md`` for this command: the flag, else a rich table on a terminal and Markdown elsewhere."""
    chosen = getattr(args, "output_format", None) if args is not None else None
    if chosen in ("table", "md"):
        return chosen
    import os

    if os.environ.get("GITHUB_ACTIONS") == "true":  # a runner's log, even where FORCE_COLOR makes rich see a terminal
        return "md"
    return "table" if console.is_terminal and not console.is_dumb_terminal else "md"


def rich_table(table: Table):
    """The same rows as a rich table (cells are plain text: nothing in them is read as markup)."""
    from rich.table import Table as RichTable
    from rich.text import Text

    t = RichTable(box=None, header_style="bold", title=terminal_safe(table.title) if table.title else table.title)
    for i, c in enumerate(table.columns):  # the first column names the row: kept on one line; long cells elsewhere fold, never cut
        t.add_column(Text(terminal_safe(c)), justify="right" if c in table.right else "left", overflow="fold", no_wrap=i == 0)
    for row in table.text_rows():
        t.add_row(*[Text(terminal_safe(c)) for c in row])
    return t


def show(table: Table, args: argparse.Namespace | None = None) -> None:
    """Print ``table`` (and its notes) as the command's format says (see the module docstring)."""
    if table_format(args) == "md":
        console.file.write("\n" + terminal_safe(markdown(table)) + "\n")  # blank lines around: a line of prose next to a table would read as a row
        console.file.flush()
        return
    console.print(rich_table(table))
    for n in table.notes:
        console.print(n, markup=False)
