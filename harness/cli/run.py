"""``laf run CONFIG``: the whole flow, each stage cached and resumable; exit code from the gate.

With several candidates every candidate's verdict is printed (and annotated on GitHub Actions, prefixed with the
candidate), and the run exits 0 only when every candidate passed, 1 when any failed, 2 when none failed and some
is inconclusive (the line ``run exit N: ...`` says which candidate decided it)."""

from __future__ import annotations

from .output import add_format, console, print_json


def register(sub) -> None:
    p = sub.add_parser("run", help="curate, train, evaluate, gate and report from one config (stages cached and resumable); "
                       "exit 0 when every candidate passes, 1 when any fails, 2 when none fails and some is inconclusive")
    p.add_argument("config", help="run config YAML (see examples/quickstart.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config key by its dotted YAML path (train.lora.r=16; a training setting may leave out train.: lora.r=16); repeatable")
    add_format(p, "the run summary (run.json)")
    p.add_argument("--quiet", action="store_true", help="only the stage lines and the verdict (no progress, no results table)")
    p.add_argument("--history", default=None, metavar="URL", help="release history to record the run in (default: the config's history:, "
                   "else LAF_HISTORY_URL, else OUT_ROOT/history.sqlite; 'off': none)")
    p.set_defaults(handler=cmd_run)


def cmd_run(args) -> int:
    from rich.markup import escape

    from ..pipeline import execute_run
    from .ci import open_progress, report_verdict_to_ci

    quiet = args.quiet or args.json
    with open_progress(quiet, stages=True) as progress:
        outcome = execute_run(args.config, args.overrides, log=progress.log, train_progress=progress.train_update, eval_progress=progress.eval_update,
                              history=args.history)
    from .eval import print_results_table
    from .gate import print_verdict

    summary = outcome.summary
    verdicts = outcome.verdicts  # the verdicts the gate stage made (and wrote): shown as they are, never read back
    several = len(verdicts) > 1
    for i, (model, v) in enumerate(verdicts):
        last = i == len(verdicts) - 1
        extra = (f"\n{summary['exit_explanation']}\n" if several else "") + f"\nRun `{summary['run_dir']}`; HTML report: `{summary['report']}`.\n" if last else "\n"
        report_verdict_to_ci(v, extra, candidate=model if several else None)
    if args.json:
        print_json(summary)
        return summary["exit_code"]
    if not args.quiet:
        print_results_table(outcome.results, args)
    if outcome.compare is not None and several and not args.quiet:
        from .gate import print_comparison

        console.print()
        print_comparison(outcome.compare.to_dict(), args)
    for model, v in verdicts:
        console.print(f"\n[bold]{escape(model)}[/]" if several else "")
        print_verdict(v)
    if several:
        console.print(f"\n[bold]run {escape(summary['exit_explanation'])}[/]")
    if not args.quiet:
        console.print(f"\nstages run: {', '.join(summary['stages_ran']) or '-'}; skipped (unchanged): {', '.join(summary['stages_skipped']) or '-'}; {summary['wall_time_s']:.0f} s")
    if summary.get("history"):
        from .gate import print_recorded

        print_recorded(summary["history"])
    console.print(f"report: [bold]{escape(summary['report'])}[/]")
    return summary["exit_code"]
