"""Reading finished evaluation runs for the diversity analysis, through the results layer.

A run folder is read by :func:`harness.results.load_run` (torch-free), so the
same integrity check (``integrity.json``), the same typed ``results.json`` and
the same refusal of non-finite per-item numbers apply here as in the gate and
the report: a tampered run folder is one clear error, never a silent input.
"""

from __future__ import annotations

from pathlib import Path

from ..results import load_run


def read_run(folder: str | Path, allow_modified: bool = False) -> tuple[dict, list[dict]]:
    """``(results.json as a plain dict, per-item records as dicts)`` of a finished, verified ``laf eval`` run.

    The results dict carries ``integrity`` ("verified", or "modified: ..." when ``allow_modified`` let a
    folder that failed its check through)."""
    doc, records = load_run(folder, allow_modified=allow_modified)
    results = doc.to_dict()
    results["integrity"] = doc.integrity
    # each ItemRecord was built for this call: its attribute dict is a plain record dict, no copy needed
    return results, [vars(r) for r in records]
