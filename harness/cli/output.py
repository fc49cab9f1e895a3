"""Consoles shared by the CLI commands (stdout for results, stderr for progress and errors)."""

from __future__ import annotations

import json
import sys

from rich.console import Console

console = Console(highlight=False)
err_console = Console(stderr=True, highlight=False)


def print_json(obj) -> None:
    sys.stdout.write(json.dumps(obj, indent=2, ensure_ascii=False, default=str) + "\n")
