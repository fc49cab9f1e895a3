"""``laf models show MODEL``: resolve and fingerprint a base model."""

from __future__ import annotations

import time

from .output import add_format, print_json, show


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
    add_format(show, "the resolved model (path, parameters, fingerprint)")
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
    from .rows import fields_rows

    show(fields_rows([("model", info["spec"]), ("kind", info["kind"]), ("source", info["source"]), ("path", info["path"]),
                      ("architecture", info["architecture"]), ("parameters", f"{info['parameters']:,} ({info['parameters'] / 1e6:.0f} M)"),
                      ("weights", ", ".join(info["weights"])), ("precisions", ", ".join(info["precisions"])),
                      ("fingerprint", f"sha256:{info['fingerprint']}")]), args)
    return 0
