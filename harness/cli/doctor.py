"""``laf doctor``: offline preflight; exit 0 when ready, 1 with the list of problems."""

from __future__ import annotations

from pathlib import Path

from .output import console, print_json


def register(sub) -> None:
    p = sub.add_parser("doctor", help="offline preflight: versions, device, bitsandbytes, default model, writable dirs")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--out", default="reports", help="output folder to check (default: reports)")
    p.add_argument("--registry", default="adapters_registry", help="registry folder to check")
    p.set_defaults(handler=cmd_doctor)


def cmd_doctor(args) -> int:
    from rich.markup import escape
    from rich.table import Table

    from ..doctor import as_dicts, run_checks

    checks = run_checks({"output dir": Path(args.out).resolve(), "registry dir": Path(args.registry).resolve()})
    problems = [c for c in checks if not c.ok]
    if args.json:
        print_json({"ready": not problems, "checks": as_dicts(checks)})
        return 1 if problems else 0
    table = Table(show_header=True, header_style="bold", box=None)
    table.add_column("check")
    table.add_column("")
    table.add_column("detail")
    for c in checks:
        table.add_row(c.name, "[green]ok[/]" if c.ok else "[red]PROBLEM[/]", escape(c.detail))
    console.print(table)
    if problems:
        console.print(f"\n[bold red]{len(problems)} problem(s):[/]")
        for c in problems:
            console.print(f"  - {escape(c.name)}: {escape(c.detail)}\n    fix: {escape(c.fix)}")
        return 1
    console.print("\n[bold green]ready[/]")
    return 0
