"""Every ``laf`` subcommand registers itself here, one module per command group."""

from __future__ import annotations

import importlib

MODULES = ("doctor", "models", "train", "merge", "parity", "registry", "eval", "gate", "report", "data", "run", "sweep", "diversity", "history", "signing", "config")


def register_all(sub) -> None:
    for name in MODULES:
        importlib.import_module(f"{__package__}.{name}").register(sub)
