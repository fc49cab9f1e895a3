"""Consoles shared by the CLI commands (stdout for results, stderr for progress and errors)."""

from __future__ import annotations

import json
import os
import sys

from rich.console import Console

PIPED_WIDTH = 160  # columns for output that is not a terminal (CI logs, files) unless COLUMNS says otherwise


def _width(stream) -> int | None:
    """Rich lays piped output out at 80 columns, which squeezed the comparison and sweep tables of a CI log into
    truncated names ("quickst…") and one-word columns; a log is read later in a wide viewer, so use 160."""
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    return None if tty or os.environ.get("COLUMNS") else PIPED_WIDTH


console = Console(highlight=False, width=_width(sys.stdout))
err_console = Console(stderr=True, highlight=False, width=_width(sys.stderr))


def print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")
