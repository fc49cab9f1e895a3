"""``laf eval`` and ``laf suites list|validate``."""

from __future__ import annotations

import time

from .argtypes import MAX_TOKENS, int_range
from .output import console, print_json


def register(sub) -> None:
    p = sub.add_parser(
        "eval",
        help="score the base model and adapters on the same items of each suite",
        description="Loads the base once, scores it and every adapter (hot-swapped) on exactly the same items, "
        "and keeps every item's result. A re-run with the same inputs is served from the content-keyed cache; "
        "an interrupted run resumes where it stopped.",
    )
    p.add_argument("--model", default="default", help="base model: default, a HF folder, a .gguf file or a hub id")
    p.add_argument("--adapter", dest="adapters", action="append", default=[], metavar="NAME[@VERSION]", help="registered adapter to score (repeatable)")
    p.add_argument("--suite", dest="suites", action="append", default=[], metavar="SUITE", help="suite name, YAML path, or lm_eval:<task> (repeatable)")
    p.add_argument("--limit", type=int_range(1, 10**9), default=None, help="score only the first N items of each suite")
    p.add_argument("--out", default="reports/eval", help="output folder (results.json, results.sqlite, records.jsonl)")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "nf4"], help="base precision; auto = the adapters' training precision (QLoRA-faithful), else fp32")
    p.add_argument("--batch-size", type=int_range(1, 4096), default=8, help="rows per forward pass, identical for every model (default 8)")
    p.add_argument("--max-length", type=int_range(8, MAX_TOKENS), default=2048, help="context window for scoring (default 2048)")
    p.add_argument("--device", default="auto")
    p.add_argument("--registry", default="adapters_registry")
    p.add_argument("--cache", default=None, help="response cache file (default: $LAF_CACHE/eval-cache.sqlite)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the response cache")
    p.add_argument("--data-dir", default=None, help="folder with local copies of benchmark data (or LAF_DATA_DIR)")
    p.add_argument("--force-base-mismatch", action="store_true", help="score adapters trained on another base (recorded in the results)")
    p.add_argument("--no-share-context", dest="share_context", action="store_false", help="score each choice as its own row (as plain lm-eval)")
    p.add_argument("--json", action="store_true", help="print results.json")
    p.add_argument("--quiet", action="store_true", help="no progress display")
    p.set_defaults(handler=cmd_eval)

    s = sub.add_parser("suites", help="list and validate evaluation suites")
    ss = s.add_subparsers(dest="suites_command", metavar="ACTION")
    ss.required = True
    ls = ss.add_parser("list", help="the suites found under ./suites, LAF_SUITES and the built-in folder")
    ls.add_argument("--json", action="store_true")
    ls.set_defaults(handler=cmd_suites_list)
    va = ss.add_parser("validate", help="load suites and their data, report every problem (exit 3 on the first)")
    va.add_argument("suites", nargs="*", help="suite names or paths (default: all)")
    va.add_argument("--data-dir", default=None)
    va.set_defaults(handler=cmd_suites_validate)


def cmd_eval(args) -> int:
    from ..evaluate import EvalSpec, run_eval
    from .ci import open_progress

    spec = EvalSpec(
        suites=args.suites,
        model=args.model,
        adapters=args.adapters,
        out=args.out,
        limit=args.limit,
        precision=args.precision,
        device=args.device,
        batch_size=args.batch_size,
        max_length=args.max_length,
        registry=args.registry,
        cache=args.cache,
        no_cache=args.no_cache,
        data_dir=args.data_dir,
        force_base_mismatch=args.force_base_mismatch,
        share_context=args.share_context,
    )
    t0 = time.perf_counter()
    with open_progress(args.quiet or args.json) as progress:
        doc = run_eval(spec, progress=progress.eval_update, log=progress.log)
    if args.json:
        print_json(doc)
        return 0
    from ..results import ResultsDoc

    print_results_table(ResultsDoc.from_dict(doc))
    if args.adapters:
        from ..registry import Registry

        reg = Registry(args.registry)
        console.print("adapters: " + ", ".join(reg.resolve(a).describe(a) for a in args.adapters))
    reqs = {m: v["requests"] for m, v in doc["models"].items()}
    total = sum(r["requests"] for r in reqs.values())
    hits = sum(r["cache_hits"] for r in reqs.values())
    console.print(f"\n{total:,} requests, {hits:,} from cache, {time.perf_counter() - t0:.1f} s  ->  {args.out}/results.json")
    return 0


def print_results_table(doc) -> None:
    """One row per suite and metric (primary first), one column per model: value ± standard error."""
    from rich.table import Table

    models = list(doc.models)
    t = Table(box=None, header_style="bold")
    t.add_column("suite")
    t.add_column("category")
    t.add_column("metric")
    t.add_column("n", justify="right")
    for m in models:
        t.add_column(m, justify="right")
    for suite, meta in doc.suites.items():
        metrics = sorted(doc.results[models[0]].get(suite, {}), key=lambda x: (x != meta.primary_metric, x))
        for metric in metrics:
            cells = []
            for m in models:
                r = doc.results[m].get(suite, {}).get(metric, {})
                v, se = r.get("value"), r.get("stderr")
                cells.append("-" if v is None else (f"{v:.4f}" + (f" ±{se:.4f}" if isinstance(se, (int, float)) else "")))
            n = doc.results[models[0]][suite][metric].get("n")
            t.add_row(suite, meta.category, metric + (" *" if metric == meta.primary_metric else ""), str(n), *cells)
    console.print(t)


def cmd_suites_list(args) -> int:
    from rich.markup import escape

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
    from rich.table import Table

    t = Table(box=None, header_style="bold")
    for c in ("suite", "category", "type", "source", "description"):
        t.add_column(c)
    for r in rows:
        t.add_row(escape(r["name"]), r["category"], r["type"], escape(r["source"]), escape(r["description"]))
    console.print(t)
    console.print("\nalso: lm_eval:<task> for any task registered in lm-eval (hub data)")
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
