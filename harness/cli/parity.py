"""``laf parity ADAPTER``: the adapter on the fly vs merged vs merged + NF4, on the same items."""

from __future__ import annotations

from .argtypes import device_flags, model_flags, scoring_flags, suite_flags
from .output import add_format, console, print_json, show


def register(sub) -> None:
    p = sub.add_parser(
        "parity",
        parents=[model_flags(None, "the base it was trained on (default: the one its manifest names; fingerprint checked)"), suite_flags(),
                 scoring_flags(), device_flags()],
        help="measure what exporting an adapter changes: on the fly vs merged (fp32/bf16) vs merged + NF4",
        description="Scores forms of one registered adapter on the same suite items: on the fly on its training base, "
        "merged into full weights, merged and re-quantised to NF4 (and, opt-in, merged into the original weights). "
        "For each pair: next-token KL at the scored positions (mean, p99), top-1 agreement, mean |delta log-likelihood| "
        "per item, flipped predictions and every metric's paired change with CI. Writes OUT/parity.json, which "
        "gate rules such as {parity: merged_nf4, max_kl: 0.01} read.",
    )
    p.add_argument("adapter", help="registered adapter NAME[@VERSION]")
    p.add_argument("--out", required=True, help="output folder (new or empty): parity.json, forms/<form>/, the merged folder")
    p.add_argument("--form", dest="forms", action="append", default=None, choices=["merged", "merged_nf4", "merged_original"],
                   help="forms compared with the adapter on the fly (repeatable; default merged and merged_nf4)")
    p.add_argument("--dtype", default="fp32", choices=["fp32", "bf16"], help="dtype of the merged folder (default fp32)")
    p.add_argument("--base-weights", default="auto", choices=["auto", "original", "nf4_dequantized"],
                   help="base weights the merge adds to (auto: NF4-dequantised for a QLoRA adapter, else original)")
    add_format(p, "parity.json")
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
    from .rows import parity_metric_rows, parity_rows

    show(parity_rows(doc), args)
    show(parity_metric_rows(doc), args)
    console.print(f"wrote {args.out}/parity.json")
    return 0
