"""``laf report RUN_DIR``: the self-contained HTML audit report (or its Markdown / JSON form)."""

from __future__ import annotations

from .output import console


def register(sub) -> None:
    p = sub.add_parser("report", help="write the self-contained HTML report of an evaluation run (opens offline, prints to PDF)")
    p.add_argument("run", metavar="RUN_DIR", help="a `laf eval` output folder (verdict.json, compare.json, curation.json in it are shown too)")
    p.add_argument("-o", "--output", default=None, help="output file (default: RUN_DIR/report.html|md|json)")
    p.add_argument("--format", choices=["html", "md", "json"], default="html", help="the report file's format (default html; md: the gate summary's Markdown)")
    p.add_argument("--candidate", default=None, help="the model to report on (default: the gated candidate, else the run's first adapter)")
    p.add_argument("--curation", default=None, help="curation.json to include (default: RUN_DIR/curation.json if present)")
    p.add_argument("--allow-modified", action="store_true", help="report on a run folder that fails its integrity check (integrity.json); the report says so")
    p.set_defaults(handler=cmd_report)


def cmd_report(args) -> int:
    from ..report import write_report

    path = write_report(args.run, args.output, args.format, args.candidate, args.curation, args.allow_modified)
    size = path.stat().st_size
    console.print(f"wrote {path} ({size / 1024:.0f} KB)")
    return 0
