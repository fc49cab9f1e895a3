"""``laf gate``, ``laf compare`` and ``laf calibrate``."""

from __future__ import annotations

from pathlib import Path

from .. import defaults
from .argtypes import float_range, output_file_flags
from .output import add_format, console, print_json, show


def register(sub) -> None:
    g = sub.add_parser(
        "gate",
        help="paired comparison of a candidate against a baseline under a policy (exit 0 pass, 1 fail, 2 inconclusive, 3 error)",
        description="RUN is an evaluation folder, or RUN#MODEL to pick a model in it (base, or an adapter ref such as support@3).",
    )
    g.add_argument("--baseline", default=None, metavar="RUN[#MODEL]|base|released",
                   help="RUN[#MODEL] (default model: base); 'base' (the default): the candidate run's base model; "
                        "'released': the last released version of the candidate's adapter in the release history, paired on the same items")
    g.add_argument("--candidate", required=True, metavar="RUN[#MODEL]", help="default model: the run's only adapter")
    g.add_argument("--policy", required=True, help="gate policy YAML")
    g.add_argument("--junit", default=None, help="write JUnit XML here")
    g.add_argument("--summary", default=None, help="write a Markdown summary here (CI step summary / PR comment)")
    output_file_flags(g, "verdict.json", "default: CANDIDATE_RUN/verdict.json")
    g.add_argument("--inconclusive", choices=["inconclusive", "fail", "pass"], default="inconclusive", help="what an inconclusive verdict exits as (default: exit 2)")
    g.add_argument("--curation", default=None, help="curation.json from `laf data check --against` (for max_contamination)")
    g.add_argument("--parity", default=None, help="parity.json from `laf parity` (for parity rules; default: the candidate run's parity.json or parity/parity.json)")
    add_format(g, "verdict.json")
    g.add_argument("--history", default=None, metavar="URL",
                   help="release history to record the verdict in (and read releases from): a SQLite path, sqlite:///PATH or postgresql://...; "
                        f"default: LAF_HISTORY_URL, else {defaults.HISTORY}; 'off' records nothing")
    g.add_argument("--allow-modified", action="store_true", help="read run folders whose files fail their integrity check (integrity.json); the verdict says so")
    g.add_argument("--sign", default=None, metavar="KEY", help="sign the verdict with this Ed25519 private key (laf keygen): writes VERDICT.sig")
    g.set_defaults(handler=cmd_gate)

    c = sub.add_parser("compare", help="rank several candidates against the base: per-suite changes with CIs, Pareto front on the gated quantities, Holm")
    c.add_argument("runs", nargs="+", metavar="RUN[#MODEL]", help="evaluation folders (every adapter in them is a candidate) or RUN#MODEL (MODEL: name, name@latest or name@version)")
    c.add_argument("--baseline", default=None, metavar="RUN[#MODEL]", help="default: the base model of the first run")
    c.add_argument("--policy", default=None, help="also gate each candidate under this policy")
    output_file_flags(c, "compare.json", "default: FIRST_RUN/compare.json")
    c.add_argument("--confidence", type=float_range(0.5, 1, lo_open=True, hi_open=True), default=defaults.CONFIDENCE,
                   help=f"confidence of the intervals, in (0.5, 1) (default {defaults.CONFIDENCE})")
    add_format(c, "compare.json")
    c.add_argument("--history", default=None, metavar="URL",
                   help=f"release history to record the comparison in (default: LAF_HISTORY_URL, else {defaults.HISTORY}; 'off': none)")
    c.set_defaults(handler=cmd_compare)

    k = sub.add_parser("calibrate", help="measure run-to-run noise between two runs of the same model and suggest margins")
    k.add_argument("runs", nargs=2, metavar="RUN[#MODEL]", help="two runs that should agree (e.g. batch sizes 4 and 8, or two training seeds)")
    k.add_argument("--confidence", type=float_range(0.5, 1, lo_open=True, hi_open=True), default=defaults.CONFIDENCE,
                   help=f"confidence of the intervals, in (0.5, 1) (default {defaults.CONFIDENCE})")
    output_file_flags(k, "calibration.json", "default: not written")
    k.add_argument("--policy-out", default=None, metavar="FILE", help="write a suggested policy YAML here")
    add_format(k, "calibration.json")
    k.set_defaults(handler=cmd_calibrate)


def cmd_gate(args) -> int:
    from ..gate import run_gate
    from ..gate.signing import verdict_kept
    from ..history import resolve_url
    from ..history.entry import held_records
    from ..results.refs import parse_run_ref

    history = resolve_url(args.history)
    verdict_path = Path(args.output) if args.output else parse_run_ref(args.candidate).path / "verdict.json"
    # all or nothing: a gate that fails after recording (a candidate that cannot be signed, an unwritable verdict path)
    # leaves the history, trend.json, verdict.json and its signature as they were
    with verdict_kept(verdict_path), held_records():
        v, out = run_gate(args.baseline, args.candidate, args.policy, inconclusive_as=args.inconclusive, curation=args.curation, parity=args.parity,
                          allow_modified=args.allow_modified, sign=args.sign, out=args.output, junit=args.junit, summary=args.summary,
                          history=history, record=history is not None)
    from .ci import report_verdict_to_ci

    report_verdict_to_ci(v)  # GitHub Actions: annotations and the step summary
    if args.json:
        print_json(v.to_dict())
        return v.exit_code
    from ..results.refs import parse_run_ref

    requested, got = parse_run_ref(args.candidate).model, v.candidate.get("model")
    console.print(f"candidate: {requested} -> {got}" if requested and requested != got else f"candidate: {got}")
    print_verdict(v, out)
    print_recorded((v.history or {}).get("recorded"))
    return v.exit_code


def print_recorded(rec: dict | None) -> None:
    from rich.markup import escape

    if rec:
        console.print(f"history: {'recorded' if rec.get('new') else 'already recorded'} run {escape(str(rec.get('run_id')))} in {escape(str(rec.get('store')))}")


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
    from ..gate.compare import combined_exit, compare_runs
    from ..history import record_outcome, resolve_url
    from ..io import atomic_write_json, sha256_json
    from ..results.refs import parse_run_ref

    compared = compare_runs(args.runs, args.baseline, args.policy, args.confidence)
    doc = compared.to_dict()
    out = Path(args.output) if args.output else Path(parse_run_ref(args.runs[0]).folder) / "compare.json"
    atomic_write_json(out, doc)
    rec = record_outcome(resolve_url(args.history), "compare", compare=doc, config_fingerprint=sha256_json({"runs": args.runs, "baseline": args.baseline,
                         "policy": args.policy, "confidence": args.confidence}))
    gated = [{"model": r.candidate, "verdict": r.verdict, "exit_code": r.exit_code or 0} for r in compared.ranking if r.verdict is not None]
    code, why = combined_exit(gated) if gated else (0, "exit 0: no policy, so nothing was gated")
    if args.json:
        print_json(doc)
    else:
        print_comparison(doc, args)
        console.print(f"\n-> {out}\n{why}")
        print_recorded(rec)
    return code


def print_comparison(doc: dict, args=None) -> None:
    """The ranking, one column per candidate (best first): a row per gated quantity with its change and CI in the
    quantity's own unit, then the Pareto front, the Holm-adjusted domain p and each candidate's gate verdict."""
    from rich.markup import escape

    from .rows import compare_rows

    show(compare_rows(doc), args)
    w = doc["winner"]
    console.print(f"\nwinner: [bold]{escape(str(w['candidate']))}[/] - {escape(w['reason'])}")


def cmd_calibrate(args) -> int:
    from ..gate.calibrate import calibrate
    from ..io import atomic_write_json, atomic_write_text

    doc = calibrate(args.runs[0], args.runs[1], args.confidence).to_dict()
    if args.output:
        atomic_write_json(args.output, doc)
    if args.policy_out:
        atomic_write_text(args.policy_out, doc["suggested_policy_yaml"])
    if args.json:
        print_json(doc)
    else:
        print_calibration(doc, args)
    return 0


def print_calibration(doc: dict, args=None) -> None:
    from rich.markup import escape

    from .rows import calibration_rows

    show(calibration_rows(doc), args)
    console.print("\nsuggested policy:\n" + escape(doc["suggested_policy_yaml"]))
