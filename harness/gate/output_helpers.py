"""Console for gate printing helpers (kept out of the CLI package so library code can print tables)."""

from rich.console import Console

console = Console(highlight=False)
