"""``laf parity ADAPTER``: the adapter on the fly vs merged vs merged + NF4, on the same items."""

from __future__ import annotations

from .output import console, print_json


def register(sub) -> None:
    p = sub.add_parser(
        "parity",
        help="measure what exporting an adapter changes: on the fly vs merged (fp32/bf16) vs merged + NF4",
        description="Scores forms of one registered adapter on the same suite items: on the fly on its training base, "
        "merged into full weights, merged and re-quantised to NF4 (and, opt-in, merged into the original weights). "
        "For each pair: next-token KL at the scored positions (mean, p99), top-1 agreement, mean |delta log-likelihood| "
        "per item, flipped predictions and every metric's paired change with CI. Writes OUT/parity.json, which "
        "gate rules such as {parity: merged_nf4, max_kl: 0.01} read.",
    )
    p.add_argument("adapter", help="registered adapter NAME[@VERSION]")
    p.add_argument("--model", default=None, help="the base it was trained on (default: the one its manifest names; fingerprint checked)")
    p.add_argument("--suite", dest="suites", action="append", default=[], metavar="SUITE", help="suite to compare on (repeatable)")
    p.add_argument("--limit", type=int, default=None, help="score only the first N items of each suite")
    p.add_argument("--out", required=True, help="output folder (new or empty): parity.json, forms/<form>/, the merged folder")
    p.add_argument("--form", dest="forms", action="append", default=None, choices=["merged", "merged_nf4", "merged_original"],
                   help="forms compared with the adapter on the fly (repeatable; default merged and merged_nf4)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="dtype of the merged folder (default fp32)")
    p.add_argument("--base-weights", default="auto", choices=["auto", "original", "nf4_dequantized"],
                   help="base weights the merge adds to (auto: NF4-dequantised for a QLoRA adapter, else original)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-length", type=int, default=2048)
    p.add_argument("--device", default="auto")
    p.add_argument("--registry", default="adapters_registry")
    p.add_argument("--cache", default=None, help="response cache file (default: $LAF_CACHE/eval-cache.sqlite)")
    p.add_argument("--no-cache", action="store_true")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--json", action="store_true", help="print parity.json")
    p.set_defaults(handler=cmd_parity)


def cmd_parity(args) -> int:
    from ..merge.parity import DEFAULT_FORMS, ParitySpec, run_parity

    spec = ParitySpec(adapter=args.adapter, suites=args.suites, out=args.out, model=args.model, registry=args.registry,
                      forms=args.forms or list(DEFAULT_FORMS), limit=args.limit, dtype=args.dtype, base_weights=args.base_weights,
                      batch_size=args.batch_size, max_length=args.max_length, device=args.device, data_dir=args.data_dir,
                      cache=args.cache, no_cache=args.no_cache)
    doc = run_parity(spec, log=lambda s: None if args.json else console.print(f"[dim]{s}[/]"))
    if args.json:
        print_json(doc)
        return 0
    for name, m in doc["merge"].items():
        console.print(f"{name}: {m['dtype']} folder merged into the {m['base_weights']} base weights -> {m['path']}")
    for p in doc["pairs"]:
        kl = "n/a" if p["kl_mean"] is None else f"{p['kl_mean']:.3g} (p99 {p['kl_p99']:.3g})"
        agree = "n/a" if p["top1_agreement"] is None else f"{p['top1_agreement']:.1%}"
        dll = "n/a" if p["mean_abs_delta_ll"] is None else f"{p['mean_abs_delta_ll']:.3g}"
        console.print(f"[bold]{p['reference']} -> {p['form']}[/]: KL {kl}, top-1 agreement {agree}, "
                      f"mean |dLL| {dll}, flips {p['flips']}/{p['items']}")
        for s, v in p["suites"].items():
            for m, d in v["metrics"].items():
                console.print(f"    {s} {m}: {d['base']:.4g} -> {d['candidate']:.4g} (delta {d['delta']:+.4g}, "
                              f"CI {d['ci_low']:+.4g} to {d['ci_high']:+.4g})")
    console.print(f"wrote {args.out}/parity.json")
    return 0
