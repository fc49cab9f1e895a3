"""Argument types with ranges: an out-of-range number is an argparse error (exit 2) naming the allowed range,
never a value that silently drops data later."""

from __future__ import annotations

import argparse
import math

from .. import defaults


def int_range(lo: int, hi: int):
    """An ``int`` in ``[lo, hi]`` (``type=int_range(1, 10**9)``)."""

    def parse(text: str) -> int:
        try:
            v = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number (allowed: {lo}..{hi})") from None
        if not lo <= v <= hi:
            raise argparse.ArgumentTypeError(f"{text} is out of range (allowed: {lo}..{hi})")
        return v

    parse.__name__ = "int"
    return parse


def float_range(lo: float, hi: float, *, lo_open: bool = False, hi_open: bool = False):
    """A finite ``float`` between ``lo`` and ``hi`` (each end open or closed)."""
    shown = f"{'(' if lo_open else '['}{lo:g}, {hi:g}{')' if hi_open else ']'}"

    def parse(text: str) -> float:
        try:
            v = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a number (allowed: {shown})") from None
        if not math.isfinite(v) or v < lo or v > hi or (lo_open and v == lo) or (hi_open and v == hi):
            raise argparse.ArgumentTypeError(f"{text} is out of range (allowed: {shown})")
        return v

    parse.__name__ = "float"
    return parse


MAX_TOKENS = defaults.MAX_TOKENS  # a context length no model here comes near


# -- shared flags: one parent parser per group, so every command that scores takes them with the same names,
# defaults, ranges and help (``parents=[...]`` in add_parser)


def model_flags(default: str | None = defaults.MODEL, help: str | None = None) -> argparse.ArgumentParser:
    """``--model``: the base model spec."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--model", default=default, help=help or "base model: default, a HF folder, a .gguf file or a hub id")
    return p


def suite_flags() -> argparse.ArgumentParser:
    """``--suite`` (repeatable), ``--limit`` and ``--data-dir``: which items are scored."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--suite", dest="suites", action="append", default=[], metavar="SUITE", help="suite name, YAML path, or lm_eval:<task> (repeatable)")
    p.add_argument("--limit", type=int_range(1, 10**9), default=None, help="score only the first N items of each suite")
    p.add_argument("--data-dir", default=None, help="folder with local copies of benchmark data (or LAF_DATA_DIR)")
    return p


def device_flags() -> argparse.ArgumentParser:
    """``--device`` and ``--registry``: where models run and where adapters are found."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--device", default=defaults.DEVICE, help="auto | cpu | cuda | cuda:N (default auto)")
    p.add_argument("--registry", default=defaults.REGISTRY, help=f"adapter registry folder (default: {defaults.REGISTRY})")
    return p


def scoring_flags() -> argparse.ArgumentParser:
    """``--batch-size``, ``--max-length`` and the response cache: how items are scored (the same for every model)."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--batch-size", type=int_range(1, 4096), default=defaults.BATCH_SIZE,
                   help=f"rows per forward pass, identical for every model (default {defaults.BATCH_SIZE})")
    p.add_argument("--max-length", type=int_range(8, MAX_TOKENS), default=defaults.MAX_LENGTH,
                   help=f"context window for scoring (default {defaults.MAX_LENGTH})")
    p.add_argument("--cache", default=None, help="response cache file (default: $LAF_CACHE/eval-cache.sqlite)")
    p.add_argument("--no-cache", action="store_true", help="neither read nor write the response cache")
    return p


# -- --out is a folder, -o/--output a file: the commands that took --out for a file keep it, with a warning


class _DeprecatedFileOut(argparse.Action):
    def __call__(self, parser, namespace, values, option_string=None):
        import sys

        sys.stderr.write(f"warning: {option_string} FILE is deprecated here ({option_string} always names a folder); use -o/--output FILE\n")
        setattr(namespace, self.dest, values)


def output_file_flags(p: argparse.ArgumentParser, what: str, default_help: str) -> None:
    """``-o/--output FILE`` for the file a command writes (``dest="output"``), and the old ``--out FILE`` spelling
    still accepted with a deprecation line on stderr."""
    p.add_argument("-o", "--output", default=None, metavar="FILE", help=f"write {what} here ({default_help})")
    p.add_argument("--out", dest="output", action=_DeprecatedFileOut, default=None, metavar="FILE",
                   help="deprecated spelling of -o/--output (--out names a folder in every other command)")
