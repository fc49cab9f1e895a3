"""``laf train CONFIG``: QLoRA/LoRA training into the adapter registry.

CONFIG is a run config (its curate and train stages run, in the run folder ``laf run`` uses) or a flat training
file (identity and training settings at one level; it keeps loading, with one line saying how to nest it)."""

from __future__ import annotations

import sys
from pathlib import Path

from .output import add_format, console, err_console, print_json


def register(sub) -> None:
    p = sub.add_parser("train", help="train a LoRA/QLoRA adapter and register it as name@version")
    p.add_argument("config", help="run config YAML (its curate and train stages run; see examples/quickstart.yaml) or a flat training file")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key by its dotted YAML path (train.lora.r=16; lora.r=16 means the same); repeatable")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the run's output_dir "
                   "(a run config always resumes a training run of the same inputs)")
    add_format(p, "the registered adapter's manifest")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_train)


FLAT_NOTE = ("note: {path} is a flat training file; as a run config (for `laf train` and `laf run`) it keeps name, model, precision "
             "and data at the top and nests the other settings under train: (add eval: {{suites: [...]}} for `laf run`)")


def load_train_config(path: str, overrides: list[str]):
    """The flat training file at ``path`` (``--set`` paths its own; a ``train.`` prefix, the run config's spelling,
    means the same)."""
    from ..config import apply_overrides, load_yaml, validate
    from ..config_schema import check_shape
    from ..train import TrainConfig

    raw = load_yaml(path)
    check_shape(raw, ("train",), path, "laf train", sorted(TrainConfig.model_fields))
    data = apply_overrides(raw, [o[len("train."):] if o.lstrip().startswith("train.") else o for o in overrides])
    return validate(TrainConfig, data, path)


def config_kind(path: str) -> str | None:
    """``run`` when ``path`` is a run config (it has stages such as train: or eval:), else what it looks like."""
    from ..config import load_yaml
    from ..config_schema import detect_kind

    return detect_kind(load_yaml(path))


def cmd_train(args) -> int:
    from ..train import train
    from .ci import open_progress

    if config_kind(args.config) == "run":
        return _train_run_config(args)
    cfg = load_train_config(args.config, args.overrides)
    print(FLAT_NOTE.format(path=args.config), file=sys.stderr)
    with open_progress(args.quiet or args.json) as progress:
        result = train(cfg, config_dir=Path(args.config).resolve().parent, resume=args.resume, on_step=progress.train_update, log=progress.log)
    return _print_registered(args, result.entry)


def _train_run_config(args) -> int:
    from ..pipeline import run_train_stages
    from ..registry import Registry
    from .ci import open_progress

    with open_progress(args.quiet or args.json, stages=True) as progress:
        summary = run_train_stages(args.config, args.overrides, log=progress.log, train_progress=progress.train_update,
                                   eval_progress=progress.eval_update)
    return _print_registered(args, Registry(summary["registry"]).resolve(summary["adapter"]))


def _print_registered(args, entry) -> int:
    m = entry.manifest
    if args.json:
        print_json(m)
        return 0
    console.print(f"[bold green]registered[/] {entry.ref}  ->  {entry.path}")
    console.print(
        f"  steps {m['steps']}, tokens {m['tokens_seen']:,} ({m['supervised_tokens_seen']:,} supervised), "
        f"trainable {m['trainable_parameters']:,} ({m['trainable_percent']:.2f} %)"
    )
    ev = f", eval loss {m['final_eval_loss']:.4f}" if m.get("final_eval_loss") is not None else ""
    console.print(f"  final loss {m['final_train_loss']:.4f}{ev}, {m['train_time_s']:.0f} s, peak memory {m['peak_memory_mb']:.0f} MB")
    if m["data"]["dropped"]:
        err_console.print(f"  [yellow]dropped {m['data']['dropped']} examples:[/] {m['data']['dropped_reasons']}")
    return 0
