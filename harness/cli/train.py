"""``laf train CONFIG``: QLoRA/LoRA training into the adapter registry."""

from __future__ import annotations

from pathlib import Path

from .output import add_format, console, err_console, print_json


def register(sub) -> None:
    p = sub.add_parser("train", help="train a LoRA/QLoRA adapter and register it as name@version")
    p.add_argument("config", help="training config YAML")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE", help="override a config key (dotted, e.g. lora.r=16); repeatable")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint in the run's output_dir")
    add_format(p, "the registered adapter's manifest")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(handler=cmd_train)


def load_train_config(path: str, overrides: list[str]):
    from ..config import apply_overrides, load_yaml, validate
    from ..train import TrainConfig

    data = apply_overrides(load_yaml(path), overrides)
    return validate(TrainConfig, data, path)


def cmd_train(args) -> int:
    from ..train import train
    from .ci import open_progress

    cfg = load_train_config(args.config, args.overrides)
    with open_progress(args.quiet or args.json) as progress:
        result = train(cfg, config_dir=Path(args.config).resolve().parent, resume=args.resume, on_step=progress.train_update, log=progress.log)
    m = result.entry.manifest
    if args.json:
        print_json(m)
        return 0
    console.print(f"[bold green]registered[/] {result.entry.ref}  ->  {result.entry.path}")
    console.print(
        f"  steps {m['steps']}, tokens {m['tokens_seen']:,} ({m['supervised_tokens_seen']:,} supervised), "
        f"trainable {m['trainable_parameters']:,} ({m['trainable_percent']:.2f} %)"
    )
    ev = f", eval loss {m['final_eval_loss']:.4f}" if m.get("final_eval_loss") is not None else ""
    console.print(f"  final loss {m['final_train_loss']:.4f}{ev}, {m['train_time_s']:.0f} s, peak memory {m['peak_memory_mb']:.0f} MB")
    if m["data"]["dropped"]:
        err_console.print(f"  [yellow]dropped {m['data']['dropped']} examples:[/] {m['data']['dropped_reasons']}")
    return 0
