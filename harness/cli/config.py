"""``laf config schema [KIND]``: the JSON Schema of a config kind (run, train, sweep, merge, policy), generated from
the pydantic models that validate it, for editors (``# yaml-language-server: $schema=FILE`` at the top of a YAML).

``laf schema KIND``: the JSON Schema of an artifact laf writes (results.json, verdict.json, compare.json, ...),
generated from the models every reader validates it with (:mod:`harness.results.artifacts`)."""

from __future__ import annotations

from typing import Any

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

    from ..results.artifacts import KINDS as ARTIFACTS

    a = sub.add_parser("schema", help="print the JSON Schema of an artifact laf writes (results, verdict, compare, sweep, run, calibration, "
                       "parity, diversity), generated from the model its readers validate it with")
    a.add_argument("kind", choices=list(ARTIFACTS), help="which artifact: " + "; ".join(f"{k}: {m.FILE}" for k, m in ARTIFACTS.items()))
    a.set_defaults(handler=cmd_artifact_schema)


SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def model_for(kind: str):
    """The pydantic model that validates a config of ``kind`` (one of ``harness.config_schema.KINDS``)."""
    from ..gate.policy import Policy
    from ..merge.config import MergeConfig
    from ..pipeline.config import RunConfig
    from ..sweep.config import SweepConfig
    from ..train.config import TrainConfig

    models = {"run": RunConfig, "train": TrainConfig, "sweep": SweepConfig, "merge": MergeConfig, "policy": Policy}
    if kind not in models:
        raise ValueError(f"unknown config kind {kind!r}; one of {', '.join(models)}")
    return models[kind]


def json_schema(kind: str) -> dict[str, Any]:
    """The JSON Schema of a ``kind`` config, generated from its model (so it cannot drift from what is validated)."""
    from ..config_schema import KINDS

    schema = model_for(kind).model_json_schema(by_alias=True, mode="validation")
    return {"$schema": SCHEMA_DIALECT, "title": f"lost-and-found {kind} config ({KINDS[kind][2]})", **{k: v for k, v in schema.items() if k != "title"}}


def cmd_schema(args) -> int:
    print_json(json_schema(args.kind))
    return 0


def cmd_artifact_schema(args) -> int:
    from ..results.artifacts import json_schema as artifact_schema

    print_json(artifact_schema(args.kind))
    return 0
