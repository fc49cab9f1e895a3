"""``laf models show MODEL``: resolve and fingerprint a base model."""

from __future__ import annotations

import time

from .output import console, print_json


def register(sub) -> None:
    p = sub.add_parser("models", help="resolve and fingerprint base models")
    msub = p.add_subparsers(dest="models_command", metavar="ACTION")
    msub.required = True
    show = msub.add_parser(
        "show",
        help="resolve a model and print its path, parameter count and fingerprint",
        description="MODEL is 'default' (embedded gemma-3-270m), a Hugging Face folder, a .gguf file, "
        "or a hub id (online, or already in the local HF cache).",
    )
    show.add_argument("model", metavar="MODEL")
    show.add_argument("--json", action="store_true", help="print JSON")
    show.add_argument("--allow-pickle", action="store_true", help="accept .bin/.pt pickle checkpoints (runs code from the file)")
    show.add_argument("--trust-remote-code", action="store_true", help="allow model code from the folder or hub")
    show.set_defaults(handler=cmd_show)


def cmd_show(args) -> int:
    from ..models import resolve_model

    t0 = time.perf_counter()
    resolved = resolve_model(args.model, allow_pickle=args.allow_pickle, trust_remote_code=args.trust_remote_code)
    info = resolved.describe()
    info["seconds"] = round(time.perf_counter() - t0, 2)
    if args.json:
        print_json(info)
        return 0
    console.print(f"[bold]{info['spec']}[/] ({info['kind']}): {info['source']}")
    console.print(f"  path         {info['path']}")
    console.print(f"  architecture {info['architecture']}")
    console.print(f"  parameters   {info['parameters']:,} ({info['parameters'] / 1e6:.0f} M)")
    console.print(f"  weights      {', '.join(info['weights'])}")
    console.print(f"  precisions   {', '.join(info['precisions'])}")
    console.print(f"  fingerprint  sha256:{info['fingerprint']}")
    return 0
