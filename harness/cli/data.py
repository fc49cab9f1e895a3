"""``laf data check|clean DATA``: curation manifest, cleaned data, contamination against suites."""

from __future__ import annotations

from pathlib import Path

from .. import defaults
from .argtypes import MAX_TOKENS, float_range, int_range
from .output import add_format, console, err_console, print_json


def _common(p) -> None:
    p.add_argument("data", help="training data: .jsonl .json .csv .parquet or a datasets folder")
    p.add_argument("--against", action="append", default=[], metavar="SUITES", help="suites to check for contamination: names, suite files, or a YAML listing suites (e.g. the run config); repeatable")
    p.add_argument("--schema", default="auto", choices=["auto", "alpaca", "prompt_completion", "chat"], help="the data's schema (default: auto-detected)")
    p.add_argument("--format", dest="file_format", default="auto", choices=["auto", "jsonl", "json", "csv", "parquet", "datasets"],
                   help="the data file's format (default: from its suffix); what is printed: --output-format")
    p.add_argument("--strict", action="store_true", help="the first malformed row is an error (default: skip and count)")
    p.add_argument("--model", default="default", help="base model whose tokenizer measures lengths ('none' to skip)")
    p.add_argument("--max-length", type=int_range(8, MAX_TOKENS), default=defaults.TRAIN_MAX_LENGTH,
                   help=f"training max length for the truncation checks (default {defaults.TRAIN_MAX_LENGTH})")
    p.add_argument("--near-dup-threshold", type=float_range(0, 1, lo_open=True), default=0.8, help="Jaccard on character 5-gram shingles, in (0, 1] (default 0.8)")
    p.add_argument("--shingle-size", type=int_range(1, 64), default=5, help="characters per shingle, 1..64 (default 5)")
    p.add_argument("--ngram", type=int_range(4, 1000), default=13, help="n-gram size for contamination, 4..1000 (default 13)")
    p.add_argument("--data-dir", default=None, help="local copies of benchmark data for --against")
    p.add_argument("--out", default=None, help=f"output folder (default {defaults.DATA_OUT}/<name>)")
    add_format(p, "curation.json", format_flag=False)


def register(sub) -> None:
    d = sub.add_parser("data", help="validate, clean and deduplicate training data; check it against eval suites")
    ds = d.add_subparsers(dest="data_command", metavar="ACTION")
    ds.required = True
    check = ds.add_parser("check", help="write a curation manifest; change nothing")
    _common(check)
    check.set_defaults(handler=cmd_data, clean=False)
    clean = ds.add_parser("clean", help="write the cleaned data (canonical chat JSONL) and the manifest; the input is never touched")
    _common(clean)
    clean.add_argument("-o", "--output", default=None, metavar="FILE", help="cleaned data file (default OUT/<name>.clean.jsonl)")
    clean.add_argument("--keep-contaminated", action="store_true", help="keep examples that overlap eval items (they are still reported)")
    clean.set_defaults(handler=cmd_data, clean=True)


def settings_from_args(args):
    from ..data.curate import CurationSettings

    return CurationSettings(
        schema=args.schema, file_format=args.file_format, strict=args.strict, model=None if args.model == "none" else args.model,
        max_length=args.max_length, near_duplicate_threshold=args.near_dup_threshold, shingle_size=args.shingle_size, ngram=args.ngram,
        against=args.against, data_dir=args.data_dir, drop_contaminated=not getattr(args, "keep_contaminated", False),
    )


def cmd_data(args) -> int:
    from rich.markup import escape

    from ..data.curate import check_outputs, curate, write_clean, write_manifest

    data = Path(args.data)
    out = Path(args.out) if args.out else Path(defaults.DATA_OUT) / data.stem
    target = (Path(args.output) if args.output else out / f"{data.stem}.clean.jsonl") if args.clean else None
    check_outputs(data, [out / "curation.json"] + ([target] if target else []))
    result = curate(data, settings_from_args(args), log=lambda m: err_console.print(f"[dim]{escape(m)}[/]"))
    if target is not None:
        write_clean(result, data, target)
    manifest_path = write_manifest(result, out / "curation.json", data)
    m = result.manifest
    if args.json:
        print_json(m)
        return 0
    c = m["counts"]
    console.print(f"[bold]{escape(str(data))}[/]: {c['examples']} examples ({m['input']['data_schema']}, {m['input']['format']}), {c['kept']} kept")
    for rule in ("malformed", "encoding", "schema", "empty_prompt", "empty_response", "no_supervised_tokens", "truncated", "exact_duplicate", "near_duplicate", "contaminated",
                 "empty_chosen", "empty_rejected", "identical", "no_completion_tokens"):
        n = c.get(rule, 0)
        if n:
            first = m["examples"][rule][0]
            console.print(f"  {rule:22} {n:6}   e.g. line {first['line']}: {escape(first['detail'])}")
    t = m.get("tokens")
    if t:
        console.print(f"  tokens: p50 {t['p50']}, p90 {t['p90']}, p99 {t['p99']}, max {t['max']}; {t['truncated']} over max_length {t['max_length']} ({100 * t['truncated_share']:.1f}%)")
    cont = m.get("contamination")
    if cont:
        for s, v in cont["suites"].items():
            console.print(f"  contamination {escape(s)}: {v['contaminated_items']}/{v['items']} items ({100 * v['share']:.2f}%)")
    if args.clean:
        console.print(f"cleaned data -> {m['output']['path']} ({m['output']['examples']} examples)")
    console.print(f"manifest -> {manifest_path}")
    return 0
