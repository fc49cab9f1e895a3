"""``laf merge CONFIG``: merge registered adapters into a new adapter or a full model folder."""

from __future__ import annotations

from pathlib import Path

from .output import console, print_json


def register(sub) -> None:
    from ..merge.config import METHODS

    methods = "\n".join(f"  {k:<16} {v}" for k, v in METHODS.items())
    p = sub.add_parser(
        "merge",
        help="merge registered adapters (linear, slerp, ties, dare, model_stock, cat) into name@version or a model folder",
        description="Merge LoRA adapters on their exact updates dW = scale * B @ A.\n\nmethods:\n" + methods
        + "\n\nminimal config:  name: m / method: slerp / adapters: [a@1, b@1] / t: 0.5  (see the README's Merging section)",
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="merge config YAML")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config key (dotted, e.g. output.rank=16); repeatable")
    p.add_argument("--json", action="store_true", help="print the merged adapter's manifest (or the model folder's merge.json) as JSON")
    p.set_defaults(handler=cmd_merge)


def load_merge_config(path: str, overrides: list[str]):
    from ..config import apply_overrides, load_yaml, validate
    from ..merge import MergeConfig, check_method_params

    data = apply_overrides(load_yaml(path), overrides)
    cfg = validate(MergeConfig, data, path)
    check_method_params(cfg, path)
    return cfg


def cmd_merge(args) -> int:
    from ..merge import merge_adapters

    cfg = load_merge_config(args.config, args.overrides)
    result = merge_adapters(cfg, source=args.config)
    if args.json:
        print_json({"path": str(result.path), **result.manifest})
        return 0
    lin = result.lineage
    parents = ", ".join(p["ref"] for p in lin["parents"])
    if result.kind == "adapter":
        out = lin["output"]
        console.print(f"[bold green]registered[/] {result.ref}  ->  {result.path}")
        form = "exact (rank = sum of ranks)" if out["exact"] else f"rank {out['rank']}, relative error max {out['relative_error']['max']:.3e}, mean {out['relative_error']['mean']:.3e}"
        console.print(f"  {cfg.method} of {parents}: {form}")
    else:
        console.print(f"[bold green]wrote[/] {Path(result.path)}  ({lin['output']['dtype']}, base weights: {lin['output']['base_weights']})")
        console.print(f"  {cfg.method} of {parents}; use it with --model {result.path}")
    if lin.get("slerp_lerp_fallbacks"):
        console.print(f"  slerp fell back to linear interpolation on {lin['slerp_lerp_fallbacks']} nearly colinear modules")
    console.print(f"  {result.seconds:.2f} s")
    return 0
