"""``laf merge CONFIG``: merge registered adapters into a new adapter or a full model folder."""

from __future__ import annotations

from pathlib import Path

from .output import add_format, console, err_console, print_json


def register(sub) -> None:
    from ..merge.config import METHODS

    methods = "\n".join(f"  {k:<16} {v}" for k, v in METHODS.items())
    p = sub.add_parser(
        "merge",
        help="merge registered adapters (linear, slerp, ties, dare, model_stock, cat) into name@version or a model folder",
        description="Merge LoRA adapters on their exact updates dW = scale * B @ A.\n\nmethods:\n" + methods
        + "\n\nminimal config:  name: m / method: slerp / adapters: [a@1, b@1] / t: 0.5  (see docs/merging.md)",
        formatter_class=__import__("argparse").RawDescriptionHelpFormatter,
    )
    p.add_argument("config", help="merge config YAML")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config key (dotted, e.g. output.rank=16); repeatable")
    add_format(p, "the merged adapter's manifest (or the model folder's merge.json)")
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
        err = out["relative_error"]
        figures = f"relative error max {err['max']:.3e}, mean {err['mean']:.3e}, whole update {err['overall']:.3e}"
        form = f"exact (rank {out['rank']} = sum of ranks; {figures})" if out["exact"] else f"truncated to rank {out['rank']}: {figures}"
        console.print(f"  {cfg.method} of {parents}: {form}")
        if out.get("approximate"):
            from ..merge.config import APPROXIMATE_MERGE

            err_console.print(f"[yellow]warning:[/] an approximate merge: module updates are off the {cfg.method} merge by up to {err['max']:.3g} "
                              f"(above {APPROXIMATE_MERGE:g}); its scores describe the truncation, and the gate will mark it \"approximate merge\". "
                              + ("Leave output.rank out for the exact merge." if cfg.method in ("linear", "task_arithmetic", "slerp", "model_stock")
                                 else "Raise output.rank, or use output.kind: model for the exact update."))
    else:
        console.print(f"[bold green]wrote[/] {Path(result.path)}  ({lin['output']['dtype']}, base weights: {lin['output']['base_weights']})")
        console.print(f"  {cfg.method} of {parents}; use it with --model {result.path}")
    if lin.get("slerp_lerp_fallbacks"):
        console.print(f"  slerp fell back to linear interpolation on {lin['slerp_lerp_fallbacks']} nearly colinear modules")
    console.print(f"  {result.seconds:.2f} s")
    return 0
