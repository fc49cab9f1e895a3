"""``laf eval`` and ``laf suites list|validate``."""

from __future__ import annotations

import time

from .. import defaults
from ..errors import LafError
from .argtypes import device_flags, model_flags, scoring_flags, suite_flags
from .output import add_format, console, print_json, show


def register(sub) -> None:
    p = sub.add_parser(
        "eval",
        parents=[model_flags(), suite_flags(), scoring_flags(), device_flags()],
        help="score the base model and adapters on the same items of each suite",
        description="Loads the base once, scores it and every adapter (hot-swapped) on exactly the same items, "
        "and keeps every item's result. A re-run with the same inputs is served from the content-keyed cache; "
        "an interrupted run resumes where it stopped.",
    )
    p.add_argument("--adapter", dest="adapters", action="append", default=[], metavar="NAME[@VERSION]", help="registered adapter to score (repeatable)")
    p.add_argument("--out", default=defaults.EVAL_OUT, help=f"output folder (results.json, results.sqlite, records.jsonl; default {defaults.EVAL_OUT})")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "nf4"], help="base precision; auto = the adapters' training precision (QLoRA-faithful), else fp32")
    p.add_argument("--compute-dtype", default=None, choices=["fp32", "bf16"],
                   help="with --precision nf4: the dtype NF4 weights compute in (default: bf16 on a CUDA GPU, else fp32; "
                   "a run trained with train.compute_dtype is scored with it)")
    p.add_argument("--force-base-mismatch", action="store_true", help="score adapters trained on another base (recorded in the results)")
    p.add_argument("--no-share-context", dest="share_context", action="store_false", help="score each choice as its own row (as plain lm-eval)")
    p.add_argument("--no-share-preamble", dest="share_preamble", action="store_false",
                   help="run a preamble shared by a suite's items (a fixed primer or few-shot block) with every item instead of once per model")
    add_format(p, "results.json")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(handler=cmd_eval)

    s = sub.add_parser("suites", help="list and validate evaluation suites")
    ss = s.add_subparsers(dest="suites_command", metavar="ACTION")
    ss.required = True
    ls = ss.add_parser("list", help="the suites found under ./suites, LAF_SUITES and the built-in folder")
    add_format(ls, "the suites as a JSON list")
    ls.set_defaults(handler=cmd_suites_list)
    va = ss.add_parser("validate", help="load suites and their data, report every problem (exit 3 on the first)")
    va.add_argument("suites", nargs="*", help="suite names or paths (default: all)")
    va.add_argument("--data-dir", default=None, help="folder with local copies of benchmark data (or LAF_DATA_DIR)")
    va.set_defaults(handler=cmd_suites_validate)


def cmd_eval(args) -> int:
    from ..evaluate import EvalSpec, run_eval
    from .ci import open_progress

    if args.compute_dtype is not None and args.precision != "nf4":
        err = LafError(f"--compute-dtype applies to --precision nf4 only (got --precision {args.precision})",
                       "add --precision nf4, or drop --compute-dtype (with auto the adapters' own compute dtype is used)")
        err.exit_code = 2  # a bad combination of arguments
        raise err
    spec = EvalSpec(
        suites=args.suites,
        model=args.model,
        adapters=args.adapters,
        out=args.out,
        limit=args.limit,
        precision=args.precision,
        compute_dtype=args.compute_dtype,
        device=args.device,
        batch_size=args.batch_size,
        max_length=args.max_length,
        registry=args.registry,
        cache=args.cache,
        no_cache=args.no_cache,
        data_dir=args.data_dir,
        force_base_mismatch=args.force_base_mismatch,
        share_context=args.share_context,
        share_preamble=args.share_preamble,
    )
    t0 = time.perf_counter()
    with open_progress(args.quiet or args.json) as progress:
        results = run_eval(spec, progress=progress.eval_update, log=progress.log)
    if args.json:
        print_json(results.to_dict())
        return 0
    print_results_table(results, args)
    if args.adapters:
        from ..registry import Registry

        reg = Registry(args.registry)
        console.print("adapters: " + ", ".join(reg.resolve(a).describe(a) for a in args.adapters))
    reqs = {m: info.requests for m, info in results.models.items()}
    total = sum(r["requests"] for r in reqs.values())
    hits = sum(r["cache_hits"] for r in reqs.values())
    console.print(f"\n{total:,} requests, {hits:,} from cache, {time.perf_counter() - t0:.1f} s  ->  {args.out}/results.json")
    return 0


def print_results_table(doc, args=None) -> None:
    """One row per suite and metric (primary first), value and standard error per model."""
    from .rows import results_rows

    show(results_rows(doc), args)


def cmd_suites_list(args) -> int:
    from ..suites import available_suites, load_suite_file, suite_origin

    rows = []
    for name, path in available_suites().items():
        origin = suite_origin(name, path)
        try:
            s = load_suite_file(path, name)
            rows.append({"name": name, "category": s.category, "type": s.spec.type, "description": s.spec.description, "file": str(path), "source": origin})
        except Exception as e:  # list everything, flag the broken ones
            rows.append({"name": name, "category": "?", "type": "?", "description": f"INVALID: {e}", "file": str(path), "source": origin})
    if args.json:
        print_json(rows)
        return 0
    from .rows import suites_rows

    show(suites_rows(rows), args)
    return 0


def cmd_suites_validate(args) -> int:
    """Every suite is checked (file, keys, data, fields); problems are listed together. Hub data is not downloaded."""
    from rich.markup import escape

    from ..errors import LafError
    from ..suites import available_suites, load_suite

    names = args.suites or list(available_suites())
    problems = 0
    for name in names:
        try:
            s = load_suite(name, args.data_dir)
            d = s.spec.data
            if s.spec.lm_eval:
                console.print(f"[green]ok[/] {escape(s.name)}: registered lm-eval task (hub data, not downloaded here)")
                continue
            if d is not None and not d.path and d.hub and not _local_copy_present(s):
                console.print(f"[yellow]skip[/] {escape(s.name)}: no local copy (set --data-dir / LAF_DATA_DIR); hub data is not downloaded by validate")
                continue
            b = s.build
            console.print(f"[green]ok[/] {escape(s.name)}: {len(s.load_docs())} items, {s.category}, primary metric {b.primary} ({escape(s.source)})")
        except LafError as e:
            problems += 1
            console.print(f"[red]problem[/] {escape(name)}: {escape(e.cause)}\n        fix: {escape(e.fix or '')}")
    return 3 if problems else 0


def _local_copy_present(suite) -> bool:
    d = suite.spec.data
    if not d or not d.local:
        return False
    base = suite.file.parent if suite.file else None
    candidates = [p / d.local.path for p in (suite.data_root, base) if p is not None]
    return any(c.exists() for c in candidates)
