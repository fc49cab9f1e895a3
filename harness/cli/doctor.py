"""``laf doctor``: offline preflight; exit 0 when ready, 1 with the list of problems."""

from __future__ import annotations

from pathlib import Path

from .. import defaults
from .output import add_format, console, print_json, show


def register(sub) -> None:
    p = sub.add_parser("doctor", help="offline preflight: versions, device, bitsandbytes, default model, writable dirs")
    add_format(p, "{ready, checks}")
    p.add_argument("--out", default=defaults.OUT_ROOT, help=f"output folder to check (default: {defaults.OUT_ROOT})")
    p.add_argument("--registry", default=defaults.REGISTRY, help=f"registry folder to check (default: {defaults.REGISTRY})")
    p.set_defaults(handler=cmd_doctor)


def cmd_doctor(args) -> int:
    from rich.markup import escape

    from ..doctor import as_dicts, run_checks
    from .rows import doctor_rows

    checks = run_checks({"output dir": Path(args.out).resolve(), "registry dir": Path(args.registry).resolve()})
    problems = [c for c in checks if not c.ok]
    if args.json:
        print_json({"ready": not problems, "checks": as_dicts(checks)})
        return 1 if problems else 0
    show(doctor_rows(as_dicts(checks)), args)
    if problems:
        console.print(f"\n[bold red]{len(problems)} problem(s):[/]")
        for c in problems:
            console.print(f"  - {escape(c.name)}: {escape(c.detail)}\n    fix: {escape(c.fix)}")
        return 1
    console.print("\n[bold green]ready[/]")
    return 0
