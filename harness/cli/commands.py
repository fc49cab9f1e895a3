"""Every ``laf`` subcommand registers itself here, one module per command group."""

from __future__ import annotations

import importlib

MODULES = ("doctor", "models", "train", "merge", "parity", "registry", "eval", "gate", "report", "data", "run", "sweep", "diversity", "history", "signing", "config")

# command name -> the module that registers it (tests/test_present.py holds this equal to what the modules register)
COMMANDS = {
    "doctor": "doctor", "models": "models", "train": "train", "merge": "merge", "parity": "parity", "registry": "registry",
    "eval": "eval", "suites": "eval", "gate": "gate", "compare": "gate", "calibrate": "gate", "report": "report", "data": "data",
    "run": "run", "sweep": "sweep", "diversity": "diversity", "history": "history", "release": "history",
    "keygen": "signing", "verify-verdict": "signing", "config": "config", "schema": "config",
}

TOP_FLAGS = ("--debug",)  # the top-level options that take no value and may come before the command


def command_of(argv: list[str]) -> str | None:
    """The subcommand ``argv`` names, when it is a known one and only top-level flags come before it (else None)."""
    for token in argv:
        if token in TOP_FLAGS:
            continue
        return token if token in COMMANDS else None
    return None


def register_all(sub, only: str | None = None) -> None:
    """Register every command group; with ``only`` (a known command), just the group that holds it: a command
    then imports no other group's modules (a fully cached ``laf eval`` answers in well under a second)."""
    for name in MODULES if only is None else (COMMANDS[only],):
        importlib.import_module(f"{__package__}.{name}").register(sub)
