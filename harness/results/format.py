"""How numbers of a metric are written for people: shares in percent and points, anything else in its own units."""

from __future__ import annotations


def fmt_value(v: float | None, proportion: bool) -> str:
    """A metric's value: ``61.4%`` for a share of items, ``0.8123`` otherwise; ``–`` where there is none."""
    if v is None:
        return "–"
    return f"{100 * v:.1f}%" if proportion else f"{v:.4g}"


def fmt_change(v: float, proportion: bool) -> str:
    """A signed change: ``+2.0 points`` for a share of items, ``+0.0123`` otherwise."""
    return f"{100 * v:+.1f} points" if proportion else f"{v:+.4g}"


def fmt_amount(v: float, proportion: bool) -> str:
    """An unsigned size of a change: ``2.0 points`` or ``0.0123``."""
    return f"{100 * abs(v):.1f} points" if proportion else f"{abs(v):.4g}"
