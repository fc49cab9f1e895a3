"""``laf config schema [KIND]``: the JSON Schema of a config kind (run, train, sweep, merge, policy), generated from
the pydantic models that validate it, for editors (``# yaml-language-server: $schema=FILE`` at the top of a YAML)."""

from __future__ import annotations

from .output import print_json


def register(sub) -> None:
    from ..config_schema import KINDS

    p = sub.add_parser("config", help="config files: `laf config schema KIND` prints the JSON Schema of a config kind")
    csub = p.add_subparsers(dest="config_command", metavar="{schema}", required=True)
    s = csub.add_parser("schema", help="print the JSON Schema of a config kind, generated from its model (save it and point your editor "
                        "at it with `# yaml-language-server: $schema=FILE`)")
    s.add_argument("kind", nargs="?", default="run", choices=list(KINDS),
                   help="which config: " + "; ".join(f"{k}: {usage}" for k, (_, _, usage) in KINDS.items()) + " (default: run)")
    s.set_defaults(handler=cmd_schema)


def cmd_schema(args) -> int:
    from ..config_schema import json_schema

    print_json(json_schema(args.kind))
    return 0
