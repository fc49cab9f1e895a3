"""The self-contained HTML audit report (and its Markdown and JSON forms)."""

from __future__ import annotations

import json
from pathlib import Path

from ..io import atomic_write_text
from ..present import markdown_table, md_escape
from .data import gather
from .html import render_html


def render_markdown(d: dict) -> str:
    if d.get("verdict"):
        from ..gate.artifacts import markdown_summary
        from ..gate.verdict import Verdict

        return markdown_summary(Verdict.from_dict(d["verdict"]))
    lines = [f"## lost-and-found results: {md_escape(d['candidate'] or d['baseline'])}", ""]
    models = list(d["results"])
    rows = []
    for s, meta in d["suites"].items():
        m = meta["primary_metric"]
        vals = [d["results"][x].get(s, {}).get(m, {}).get("value") for x in models]
        rows.append([s, meta["category"], m] + ["–" if v is None else f"{v:.4g}" for v in vals])
    lines += markdown_table(["suite", "category", "metric", *models], rows)
    return "\n".join(lines) + "\n"


def write_report(run_dir: str | Path, out: str | Path | None = None, fmt: str = "html", candidate: str | None = None, curation: str | Path | None = None,
                 allow_modified: bool = False) -> Path:
    """Write the report of ``run_dir`` (a `laf eval` output folder) as one self-contained HTML file, Markdown or JSON
    (default path: ``RUN_DIR/report.<format>``); ``candidate`` picks the model reported on, ``curation`` a manifest."""
    d = gather(run_dir, candidate, curation, allow_modified)
    suffix = {"html": ".html", "md": ".md", "json": ".json"}[fmt]
    out = Path(out) if out else Path(run_dir) / f"report{suffix}"
    if fmt == "html":
        text = render_html(d)
    elif fmt == "md":
        text = render_markdown(d)
        if str(d.get("integrity") or "").startswith("modified"):
            text = f"> **Warning:** this run folder failed its integrity check, shown only because of --allow-modified ({d['integrity'][len('modified: '):]})\n\n" + text
    else:
        text = json.dumps(d, indent=1, ensure_ascii=False, default=str)
    return atomic_write_text(out, text)


__all__ = ["gather", "render_html", "render_markdown", "write_report"]
