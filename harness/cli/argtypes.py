"""Argument types with ranges: an out-of-range number is an argparse error (exit 2) naming the allowed range,
never a value that silently drops data later."""

from __future__ import annotations

import argparse
import math


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


MAX_TOKENS = 1 << 20  # a context length no model here comes near
