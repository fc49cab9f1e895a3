"""``laf run CONFIG``: the whole flow, each stage cached and resumable; exit code from the gate."""

from __future__ import annotations

from .output import console, print_json


def register(sub) -> None:
    p = sub.add_parser("run", help="curate, train, evaluate, gate and report from one config (stages cached and resumable)")
    p.add_argument("config", help="run config YAML (see examples/quickstart.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config key (dotted); repeatable")
    p.add_argument("--json", action="store_true", help="print the run summary as JSON")
    p.add_argument("--quiet", action="store_true", help="only the stage lines and the verdict (no progress, no results table)")
    p.set_defaults(handler=cmd_run)


def cmd_run(args) -> int:
    from rich.markup import escape

    from ..pipeline import run_pipeline
    from .ci import open_progress, report_verdict_to_ci

    quiet = args.quiet or args.json
    with open_progress(quiet, stages=True) as progress:
        summary = run_pipeline(args.config, args.overrides, log=progress.log, train_progress=progress.train_update, eval_progress=progress.eval_update)
    from pathlib import Path

    from ..gate.verdict import Verdict
    from ..io import read_json
    from ..results import load_results
    from .eval import print_results_table
    from .gate import print_verdict

    run_dir = Path(summary["run_dir"])
    verdict = None
    if summary.get("verdict") and (run_dir / "verdict.json").exists():
        verdict = Verdict.from_dict(read_json(run_dir / "verdict.json"))
        report_verdict_to_ci(verdict, f"\nRun `{summary['run_dir']}`; HTML report: `{summary['report']}`.\n")
    if args.json:
        print_json(summary)
        return summary["exit_code"]
    if not args.quiet:
        print_results_table(load_results(run_dir / "eval"))
    if verdict is not None:
        console.print()
        print_verdict(verdict)
    if not args.quiet:
        console.print(f"\nstages run: {', '.join(summary['stages_ran']) or '-'}; skipped (unchanged): {', '.join(summary['stages_skipped']) or '-'}; {summary['wall_time_s']:.0f} s")
    console.print(f"report: [bold]{escape(summary['report'])}[/]")
    return summary["exit_code"]
