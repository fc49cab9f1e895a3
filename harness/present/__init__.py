"""The presentation layer, torch-free: documents become :class:`Table` rows (the builders, ``harness.cli.rows``, live with their only caller), and one
Markdown renderer (:func:`markdown_table`) serves the CLI on a pipe, the gate's step summary, the run summary and
the model card. The terminal (rich) rendering of the same tables lives with the CLI (``harness.cli.output``)."""

from __future__ import annotations

from .table import Table, format_cell, markdown, markdown_table, md_code, md_escape

__all__ = ["Table", "format_cell", "markdown", "markdown_table", "md_code", "md_escape"]
