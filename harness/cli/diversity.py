"""``laf diversity``: how alike are the candidates, and which pairs will merge well."""

from __future__ import annotations

from pathlib import Path

from .. import defaults
from .argtypes import device_flags, int_range, model_flags
from .output import add_format, console, print_json, show


def register(sub) -> None:
    d = sub.add_parser(
        "diversity",
        parents=[model_flags(help="base model for the function-space measures (default: default)"), device_flags()],
        help="similarity of candidates (predictions, weights, hidden states), clusters, and predicted mergeability -> diversity.json",
        description="RUN is an evaluation folder (every adapter in it is a candidate) or RUN#MODEL. Prediction-space measures read "
        "the runs' per-item records only; --adapters adds weight-space measures from the registry; --probe-suite with --model "
        "adds function-space measures (loads the base once, hot-swaps the adapters).",
    )
    d.add_argument("runs", nargs="*", metavar="RUN[#MODEL]", help="evaluation folders of `laf eval` / `laf run`")
    d.add_argument("--adapters", nargs="+", default=[], metavar="REF", help="registered adapters (name@version) for weight- and function-space measures")
    d.add_argument("--out", default=None, help="folder for diversity.json (default: the first RUN, else reports/diversity)")
    d.add_argument("--min-items", type=int_range(1, 10**9), default=20, help="refuse a suite with fewer items answered by every candidate (default 20)")
    d.add_argument("--probe-suite", default=None, help="suite whose first items are the probe set for CKA, KL and the merge-vs-ensemble gap")
    d.add_argument("--probe-n", type=int_range(1, 100_000), default=32, help="probe items (default 32)")
    d.add_argument("--no-per-module", action="store_true", help="leave the per-module weight matrices out of diversity.json")
    d.add_argument("--allow-modified", action="store_true", help="read run folders that fail their integrity check (diversity.json then warns)")
    add_format(d, "diversity.json")
    d.set_defaults(handler=cmd_diversity)


def cmd_diversity(args) -> int:
    from ..diversity import analyse, write_diversity

    probe = None
    if args.probe_suite:
        from ..diversity.function_space import ProbeSpec

        probe = ProbeSpec(args.probe_suite, args.probe_n, args.model, args.device)
    doc = analyse(args.runs, args.adapters, args.registry, probe, args.min_items, per_module=not args.no_per_module,
                  allow_modified=args.allow_modified)
    from ..results.refs import parse_run_ref

    out = Path(args.out) if args.out else (Path(parse_run_ref(args.runs[0]).folder) if args.runs else Path(defaults.DIVERSITY_OUT))
    path = write_diversity(doc, out)
    if args.json:
        print_json(doc)
        return 0
    print_summary(doc, args)
    console.print(f"\n-> {path}")
    return 0


def print_summary(doc: dict, args=None) -> None:
    from rich.markup import escape

    from .rows import diversity_items_rows, mergeability_rows, similarity_rows

    for w in doc.get("warnings", []):
        console.print(f"[bold yellow]warning:[/] {escape(w)}")
    items = diversity_items_rows(doc)
    if items.rows:
        show(items, args)
    for key, sub, name in (("kappa", "all", "kappa"), ("weight_cosine", "overall", "task-vector cosine"), ("cka", "mean", "CKA")):
        t = similarity_rows(doc, key, sub, name)
        if t is not None:
            show(t, args)
    for space, c in (doc.get("clusters") or {}).items():
        if "clusters" in c:
            console.print(f"\n[bold]clusters ({space})[/]: " + escape("; ".join("{" + ", ".join(g) + "}" for g in c["clusters"])))
    merge = mergeability_rows(doc)
    if merge.rows:
        show(merge, args)
    check = doc.get("prediction_check") or {}
    if check.get("summary"):
        console.print(f"\n[bold]predicted vs observed merges[/]: {escape(check['summary'])}")
