"""``laf gate``, ``laf compare`` and ``laf calibrate``."""

from __future__ import annotations

from pathlib import Path

from .argtypes import float_range
from .output import console, print_json


def register(sub) -> None:
    g = sub.add_parser(
        "gate",
        help="paired comparison of a candidate against a baseline under a policy (exit 0 pass, 1 fail, 2 inconclusive, 3 error)",
        description="RUN is an evaluation folder, or RUN#MODEL to pick a model in it (base, or an adapter ref such as support@3).",
    )
    g.add_argument("--baseline", required=True, metavar="RUN[#MODEL]", help="default model: base")
    g.add_argument("--candidate", required=True, metavar="RUN[#MODEL]", help="default model: the run's only adapter")
    g.add_argument("--policy", required=True, help="gate policy YAML")
    g.add_argument("--junit", default=None, help="write JUnit XML here")
    g.add_argument("--summary", default=None, help="write a Markdown summary here (CI step summary / PR comment)")
    g.add_argument("--out", default=None, help="verdict.json path (default: CANDIDATE_RUN/verdict.json)")
    g.add_argument("--inconclusive", choices=["inconclusive", "fail", "pass"], default="inconclusive", help="what an inconclusive verdict exits as (default: exit 2)")
    g.add_argument("--curation", default=None, help="curation.json from `laf data check --against` (for max_contamination)")
    g.add_argument("--json", action="store_true", help="print verdict.json")
    g.set_defaults(handler=cmd_gate)

    c = sub.add_parser("compare", help="rank several candidates against the base: CIs, Pareto front of gain vs forgetting, Holm")
    c.add_argument("runs", nargs="+", metavar="RUN[#MODEL]", help="evaluation folders (every adapter in them is a candidate) or RUN#MODEL")
    c.add_argument("--baseline", default=None, metavar="RUN[#MODEL]", help="default: the base model of the first run")
    c.add_argument("--policy", default=None, help="also gate each candidate under this policy")
    c.add_argument("--out", default=None, help="write compare.json here (default: FIRST_RUN/compare.json)")
    c.add_argument("--confidence", type=float_range(0.5, 1, lo_open=True, hi_open=True), default=0.95)
    c.add_argument("--json", action="store_true")
    c.set_defaults(handler=cmd_compare)

    k = sub.add_parser("calibrate", help="measure run-to-run noise between two runs of the same model and suggest margins")
    k.add_argument("runs", nargs=2, metavar="RUN[#MODEL]", help="two runs that should agree (e.g. batch sizes 4 and 8, or two training seeds)")
    k.add_argument("--confidence", type=float_range(0.5, 1, lo_open=True, hi_open=True), default=0.95)
    k.add_argument("--out", default=None, help="write calibration.json here")
    k.add_argument("--policy-out", default=None, help="write a suggested policy YAML here")
    k.add_argument("--json", action="store_true")
    k.set_defaults(handler=cmd_calibrate)


def cmd_gate(args) -> int:
    from ..gate import run_gate

    v, out = run_gate(args.baseline, args.candidate, args.policy, inconclusive_as=args.inconclusive, curation=args.curation,
                      out=args.out, junit=args.junit, summary=args.summary)
    from .ci import report_verdict_to_ci

    report_verdict_to_ci(v)  # GitHub Actions: annotations and the step summary
    if args.json:
        print_json(v.to_dict())
        return v.exit_code
    print_verdict(v, out)
    return v.exit_code


def print_verdict(v, out: Path | None = None) -> None:
    from rich.markup import escape

    color = {"pass": "green", "fail": "red", "inconclusive": "yellow"}
    for w in v.warnings:
        console.print(f"[bold yellow]warning:[/] {escape(w)}")
    for r in v.rules:
        tag = f"[{color[r.status]}]{r.status.upper():12}[/]"
        adv = "" if r.required else " [dim](advisory)[/]"
        console.print(f"{tag} {escape(r.rule)}{adv}\n             {escape(r.message)}")
    console.print(f"\nverdict: [bold {color[v.status]}]{v.status.upper()}[/] (exit {v.exit_code})" + (f"  ->  {out}" if out else ""))


def cmd_compare(args) -> int:
    from ..gate.compare import compare_runs
    from ..io import atomic_write_json

    doc = compare_runs(args.runs, args.baseline, args.policy, args.confidence)
    out = Path(args.out) if args.out else Path(args.runs[0].split("#")[0]) / "compare.json"
    atomic_write_json(out, doc)
    if args.json:
        print_json(doc)
    else:
        print_comparison(doc)
        console.print(f"\n-> {out}")
    return 0


def print_comparison(doc: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    from ..results import fmt_change

    t = Table(box=None, header_style="bold")
    t.add_column("#")
    t.add_column("candidate")
    for cat in doc["categories"]:
        t.add_column(f"{cat} change (CI)")
    t.add_column("pareto")
    t.add_column("domain p (Holm)")
    if any("verdict" in r for r in doc["ranking"]):
        t.add_column("gate")
    for r in doc["ranking"]:
        cells = [str(r["rank"]), escape(r["candidate"])]
        for cat in doc["categories"]:
            c = r["categories"].get(cat)
            cells.append("-" if not c else f"{fmt_change(c['improvement'], True)} ({fmt_change(c['ci_low'], True)} to {fmt_change(c['ci_high'], True)})")
        cells.append("yes" if r["pareto"] else "")
        cells.append("-" if r.get("domain_p_holm") is None else f"{r['domain_p_holm']:.3g}")
        if "verdict" in r:
            cells.append(r["verdict"])
        t.add_row(*cells)
    console.print(t)
    w = doc["winner"]
    console.print(f"\nwinner: [bold]{escape(str(w['candidate']))}[/] - {escape(w['reason'])}")


def cmd_calibrate(args) -> int:
    from ..gate.calibrate import calibrate
    from ..io import atomic_write_json, atomic_write_text

    doc = calibrate(args.runs[0], args.runs[1], args.confidence)
    if args.out:
        atomic_write_json(args.out, doc)
    if args.policy_out:
        atomic_write_text(args.policy_out, doc["suggested_policy_yaml"])
    if args.json:
        print_json(doc)
    else:
        print_calibration(doc)
    return 0


def print_calibration(doc: dict) -> None:
    from rich.markup import escape
    from rich.table import Table

    from ..results import fmt_change, is_proportion

    t = Table(box=None, header_style="bold")
    for c in ("suite", "metric", "n", "change (CI)", "flipped items", "MDE", "suggested margin"):
        t.add_column(c)
    for s, r in doc["suites"].items():
        prop = is_proportion(r["metric"], r["base"], r["candidate"])
        flips = "-" if r["flip_rate"] is None else f"{100 * r['flip_rate']:.1f}%"
        t.add_row(escape(s), r["metric"], str(r["n"]), f"{fmt_change(r['improvement'], prop)} ({fmt_change(r['ci_low'], prop)} to {fmt_change(r['ci_high'], prop)})",
                  flips, fmt_change(r["minimum_detectable_effect"], prop).lstrip("+"), fmt_change(r["suggested_margin"], prop).lstrip("+"))
    console.print(t)
    console.print("\nsuggested policy:\n" + escape(doc["suggested_policy_yaml"]))
