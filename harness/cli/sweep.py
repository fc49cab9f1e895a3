"""``laf sweep CONFIG``: a grid of candidates (ranks, learning rates, steps, data sizes, merge weights) trained,
scored on the same items, gated, compared and costed, with the cheapest sufficient one recommended.

Exit code as ``laf run``: 0 when every point passes its gate (or there is no gate), 1 when any fails, 2 when none
fails and some is inconclusive."""

from __future__ import annotations

from .output import add_format, console, print_json, show


def _positive(v: str) -> int:
    import argparse

    try:
        n = int(v)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {v!r}") from None
    if not 1 <= n <= 100_000:
        raise argparse.ArgumentTypeError(f"must be in 1..100000, got {n}")
    return n


def register(sub) -> None:
    p = sub.add_parser("sweep", help="train, evaluate, gate and cost a grid of candidates (sweep: axes in a run config) and recommend "
                       "the cheapest one within a margin of the best; --workers/--ray-address spread it over Ray")
    p.add_argument("config", help="run config with a sweep: block (see examples/sweep-rank.yaml)")
    where = p.add_mutually_exclusive_group()
    where.add_argument("--workers", type=_positive, metavar="N", help="start a local Ray cluster with N worker slots (needs the 'scale' extra)")
    where.add_argument("--ray-address", metavar="ADDR", help="join a running Ray cluster (HOST:PORT of its head node)")
    p.add_argument("--cache", metavar="FILE", help="the response cache (default: the config's eval.cache, else the user cache)")
    p.add_argument("--max-points", type=_positive, metavar="N", help="allow up to N points (default cap 1000)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config key by its dotted YAML path (train.lora.r=16; a training setting may leave out train.: lora.r=16); repeatable")
    add_format(p, "the sweep summary (sweep.json without the per-point results)")
    p.add_argument("--quiet", action="store_true", help="only the stage lines, the table and the recommendation")
    p.add_argument("--history", default=None, metavar="URL", help="release history to record the sweep in, as `laf run` (default: the config's "
                   "history:, else LAF_HISTORY_URL, else OUT_ROOT/history.sqlite; 'off': none)")
    p.set_defaults(handler=cmd_sweep)


def cmd_sweep(args) -> int:
    from rich.markup import escape

    from ..sweep import run_sweep
    from .ci import open_progress

    quiet = args.quiet or args.json
    with open_progress(quiet, stages=True) as progress:
        summary = run_sweep(args.config, args.overrides, workers=args.workers, ray_address=args.ray_address, cache=args.cache,
                            max_points=args.max_points, log=progress.log, train_progress=progress.train_update, eval_progress=progress.eval_update,
                            history=args.history)
    if args.json:
        print_json({k: v for k, v in summary.items() if k != "results"})
        return summary["exit_code"]
    from .rows import frontier_rows, sweep_rows

    show(sweep_rows(summary), args)
    if summary.get("frontier"):
        show(frontier_rows(summary["frontier"]), args)
    console.print(f"\n[bold]{escape(summary['recommendation']['sentence'])}[/]")
    if not args.quiet:
        console.print(f"\nstages run: {', '.join(summary['stages_ran']) or '-'}; skipped (unchanged): {', '.join(summary['stages_skipped']) or '-'}; "
                      f"{summary['wall_time_s']:.0f} s")
    if summary.get("history"):
        from .gate import print_recorded

        print_recorded(summary["history"])
    console.print(f"sweep: {escape(summary['sweep_json'])}\nreport: [bold]{escape(summary['report'])}[/]")
    return summary["exit_code"]
