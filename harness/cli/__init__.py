"""The ``laf`` command: parses arguments, calls one library function, prints.

Errors a user can cause arrive as :class:`harness.errors.LafError` and end as
one readable message with exit code 3 (argument errors: 2); ``--debug`` shows
the traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys

from .. import __version__
from ..errors import LafError
from . import commands

EPILOG = """\
flow:  laf data check -> laf train -> laf eval -> laf gate / laf compare -> laf report
       laf run CONFIG does all of it, each stage cached and resumable.
exit codes: 0 ok / gate pass, 1 gate fail (or doctor/verify found problems),
            2 inconclusive gate, or a usage error (bad arguments): a usage error
              prints `laf ...: error:` after a `usage:` line on stderr and
              writes nothing; an inconclusive gate prints its verdict on stdout
              (verdict.json says "inconclusive"),
            3 error (message says cause and fix).
output: tables go to a terminal as rich tables and to a pipe or file as
        Markdown tables (no width: whole names); --format table|md|json on
        every command that prints a document (--json = --format json).
docs:  README.md (start here) and docs/ (the manual: docs/index.md; `mkdocs serve` to browse)
"""


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The ``laf`` parser. Given the arguments, only the named command's group is registered (with no command, an
    unknown one or ``--help`` first, every group is, so help and "invalid choice" list them all)."""
    parser = argparse.ArgumentParser(
        prog="laf",
        description="lost-and-found: train LoRA/QLoRA adapters, then measure what they found "
        "(domain skill) and what the model lost (general capability, truthfulness, fairness) "
        "on the same items, with paired statistics a release gate can trust.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"lost-and-found {__version__}")
    parser.add_argument("--debug", action="store_true", help="show tracebacks and library logs")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    commands.register_all(sub, commands.command_of(argv) if argv is not None else None)
    return parser


def _configure_quiet_libraries(debug: bool) -> None:
    import logging
    import warnings

    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    if debug:
        logging.basicConfig(level=logging.INFO)
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TQDM_DISABLE", "1")  # lm-eval's own bars; ours are rich  # transformers' "Loading weights" bars too
    os.environ.setdefault("HF_DATASETS_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    warnings.filterwarnings("ignore")
    for name in ("lm-eval", "lm_eval", "transformers", "datasets", "peft", "bitsandbytes", "httpx", "huggingface_hub"):
        logging.getLogger(name).setLevel(logging.ERROR)


_READ_RUNS = ("report", "gate", "compare", "calibrate", "diversity", "history", "release", "verify-verdict")  # read runs, write outputs elsewhere


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    from .output import settle_format

    settle_format(args, parser)
    _configure_quiet_libraries(args.debug)
    from ..io import protecting_inputs

    try:
        with protecting_inputs() if args.command in _READ_RUNS else contextlib.nullcontext():
            code = args.handler(args)
        return int(code or 0)
    except LafError as e:
        if args.debug:
            raise
        from rich.markup import escape

        from .output import err_console

        err_console.print(f"[bold red]error:[/] {escape(e.cause)}", soft_wrap=True)
        if e.fix:
            err_console.print(f"[bold]fix:[/] {escape(e.fix)}", soft_wrap=True)
        return e.exit_code
    except KeyboardInterrupt:
        from .output import err_console

        err_console.print("interrupted; finished work is kept (re-run to resume)")
        return 130


def entry() -> None:  # pragma: no cover - console script shim
    sys.exit(main())
