"""Inline SVG charts for the report: no scripts, no external fonts, print-friendly.

Every text that comes from data is escaped here; callers pass plain strings.
"""

from __future__ import annotations

import math
from html import escape

GREEN, RED, GREY, BLUE, AMBER = "#1a7f37", "#cf222e", "#6e7781", "#0969da", "#9a6700"


def drawable(lo: float, hi: float) -> bool:
    """An axis from ``lo`` to ``hi`` can be drawn: both ends and the span are finite and the span is not zero
    (finite values near the float limit, ±1e308, have a span that overflows: such a chart is left out)."""
    try:
        return math.isfinite(lo) and math.isfinite(hi) and math.isfinite(hi - lo) and hi > lo
    except (TypeError, OverflowError):
        return False


def finite(*vs) -> bool:
    """Every value is a finite number (never a bool)."""
    try:
        return all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in vs)
    except OverflowError:
        return False


def _nice_ticks(lo: float, hi: float, n: int = 5) -> list[float]:
    """Round tick values across lo..hi; none where the axis cannot be drawn (see :func:`drawable`)."""
    if finite(lo, hi) and hi <= lo:
        hi = lo + 1
    if not drawable(lo, hi):
        return []
    raw = (hi - lo) / n
    mag = 10 ** math.floor(math.log10(raw))
    step = min((s * mag for s in (1, 2, 2.5, 5, 10) if s * mag >= raw), default=raw)
    start = math.floor(lo / step) * step
    ticks, t = [], start
    while t <= hi + 1e-12:
        ticks.append(round(t, 10))
        t += step
    return ticks


# A row's colour is its verdict: the gate's decision where a rule covers it, else the direction of its interval on the
# oriented improvement (positive = better, also for lower-is-better metrics). Each colour goes with the words shown.
VERDICT_COLOURS = {"pass": GREEN, "fail": RED, "inconclusive": AMBER, "better": GREEN, "worse": RED, "unclear": GREY}
VERDICT_TEXT = {"pass": "PASS", "fail": "FAIL", "inconclusive": "INCONCLUSIVE", "better": "no rule: better",
                "worse": "no rule: worse", "unclear": "no rule: no clear change"}


def row_verdict(r: dict) -> str:
    """The verdict of a row without a rule: the direction its interval of the (oriented) improvement shows."""
    return "better" if r["lo"] > 0 else "worse" if r["hi"] < 0 else "unclear"


def forest(rows: list[dict], unit: str, title: str) -> str:
    """rows: {label, sublabel, value, lo, hi, verdict}; x = improvement (positive = better); verdict: the gate's
    pass / fail / inconclusive for the row, or None (no rule: the direction of the interval)."""
    rows = [r for r in rows if finite(r.get("value"), r.get("lo"), r.get("hi"))]
    if not rows:
        return ""
    lo = min(min(r["lo"], r["value"], 0.0) for r in rows)
    hi = max(max(r["hi"], r["value"], 0.0) for r in rows)
    pad = (hi - lo) * 0.08 or 1.0
    lo, hi = lo - pad, hi + pad
    if not drawable(lo, hi):
        return ""
    W, left, right, row_h, top = 760, 250, 30, 30, 48
    H = top + row_h * len(rows) + 40
    x = lambda v: left + (v - lo) / (hi - lo) * (W - left - right)  # noqa: E731
    out = [f'<svg class="chart" viewBox="0 0 {W} {H}" width="100%" role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
           f'<text x="8" y="16" class="ct">{escape(title)}</text>']
    for t in _nice_ticks(lo, hi):
        out.append(f'<line x1="{x(t):.1f}" y1="{top - 6}" x2="{x(t):.1f}" y2="{H - 34}" class="grid"/>')
        out.append(f'<text x="{x(t):.1f}" y="{H - 18}" text-anchor="middle" class="tick">{t:+g}{escape(unit)}</text>')
    out.append(f'<line x1="{x(0):.1f}" y1="{top - 8}" x2="{x(0):.1f}" y2="{H - 32}" class="zero"/>')
    out.append(f'<text x="{x(0) - 4:.1f}" y="{top - 10}" text-anchor="end" class="tick">← worse</text><text x="{x(0) + 4:.1f}" y="{top - 10}" class="tick">better →</text>')
    for i, r in enumerate(rows):
        y = top + row_h * i + row_h / 2
        verdict = r.get("verdict") or row_verdict(r)
        color = VERDICT_COLOURS[verdict]
        shown = VERDICT_TEXT[verdict]
        out.append(f'<g class="frow" data-verdict="{verdict}">')  # data text only as element text, never in an attribute
        out.append(f'<text x="{left - 10}" y="{y - 2:.1f}" text-anchor="end" class="lab">{escape(r["label"])}</text>')
        out.append(f'<text x="{left - 10}" y="{y + 10:.1f}" text-anchor="end" class="sub"><tspan class="fverdict" fill="{color}">{escape(shown)}</tspan>'
                   f'{" · " + escape(r.get("sublabel", "")) if r.get("sublabel") else ""}</text>')
        out.append(f'<line class="fbar" x1="{x(r["lo"]):.1f}" y1="{y:.1f}" x2="{x(r["hi"]):.1f}" y2="{y:.1f}" stroke="{color}" stroke-width="3"/>')
        out.append(f'<circle class="fdot" cx="{x(r["value"]):.1f}" cy="{y:.1f}" r="5.5" fill="{color}"><title>{escape(r["label"])}: {escape(shown)}, {r["value"]:+.3g}{escape(unit)} ({r["lo"]:+.3g} to {r["hi"]:+.3g})</title></circle>')
        out.append(f'<text x="{W - right + 4}" y="{y + 4:.1f}" class="val" text-anchor="end">{r["value"]:+.3g}</text></g>')
    out.append("</svg>")
    return "".join(out)


def ideal_gauge(label: str, ideal: float, base: float, cand: float | None, lo: float = 0.0, hi: float = 1.0) -> str:
    if not finite(ideal, base, lo, hi) or not drawable(lo, hi) or (cand is not None and not finite(cand)):
        return ""
    W, H, left, right = 520, 62, 20, 150
    x = lambda v: left + (min(max(v, lo), hi) - lo) / (hi - lo) * (W - left - right)  # noqa: E731
    out = [f'<svg class="chart gauge" viewBox="0 0 {W} {H}" width="100%" role="img" aria-label="{escape(label)}" xmlns="http://www.w3.org/2000/svg">',
           f'<line x1="{left}" y1="30" x2="{W - right}" y2="30" class="axis"/>',
           f'<line x1="{x(ideal):.1f}" y1="16" x2="{x(ideal):.1f}" y2="44" stroke="{GREEN}" stroke-width="2" stroke-dasharray="3,2"/>']
    for v in (lo, hi):
        out.append(f'<text x="{x(v):.1f}" y="58" text-anchor="middle" class="tick">{v:g}</text>')
    out.append(f'<circle cx="{x(base):.1f}" cy="30" r="6" fill="{GREY}"><title>baseline {base:.3f}</title></circle>')
    legend = [(GREEN, f"ideal {ideal:g} (dashed)"), (GREY, f"baseline {base:.3f}")]
    if cand is not None:
        out.append(f'<circle cx="{x(cand):.1f}" cy="30" r="4" fill="{BLUE}"><title>candidate {cand:.3f}</title></circle>')
        legend.append((BLUE, f"candidate {cand:.3f}"))
    for i, (color, text) in enumerate(legend):
        y = 14 + 16 * i
        out.append(f'<circle cx="{W - right + 16}" cy="{y - 4}" r="4" fill="{color}"/><text x="{W - right + 26}" y="{y}" class="sub">{escape(text)}</text>')
    out.append("</svg>")
    return "".join(out)


def line_chart(series: list[dict], title: str, xlabel: str = "step") -> str:
    """series: {name, points: [(x, y)], color, dots}; a point that is not a pair of finite numbers is left out, and a
    chart whose range cannot be drawn (see :func:`drawable`) is left out."""
    series = [{**s, "points": [p for p in s["points"] if isinstance(p, (tuple, list)) and len(p) == 2 and finite(*p)]} for s in series]
    pts = [p for s in series for p in s["points"]]
    if not pts:
        return ""
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    if x1 == x0:
        x1 = x0 + 1
    pad = (y1 - y0) * 0.08 or 0.5
    y0, y1 = y0 - pad, y1 + pad
    if not drawable(x0, x1) or not drawable(y0, y1):
        return ""
    W, H, left, right, top, bottom = 760, 260, 56, 20, 28, 40
    X = lambda v: left + (v - x0) / (x1 - x0) * (W - left - right)  # noqa: E731
    Y = lambda v: top + (1 - (v - y0) / (y1 - y0)) * (H - top - bottom)  # noqa: E731
    out = [f'<svg class="chart" viewBox="0 0 {W} {H}" width="100%" role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
           f'<text x="{left}" y="16" class="ct">{escape(title)}</text>']
    for t in _nice_ticks(y0, y1, 4):
        if y0 <= t <= y1:
            out.append(f'<line x1="{left}" y1="{Y(t):.1f}" x2="{W - right}" y2="{Y(t):.1f}" class="grid"/><text x="{left - 6}" y="{Y(t) + 4:.1f}" text-anchor="end" class="tick">{t:g}</text>')
    for t in _nice_ticks(x0, x1, 6):
        if x0 <= t <= x1:
            out.append(f'<text x="{X(t):.1f}" y="{H - 20}" text-anchor="middle" class="tick">{t:g}</text>')
    out.append(f'<text x="{(W + left) / 2:.1f}" y="{H - 4}" text-anchor="middle" class="sub">{escape(xlabel)}</text>')
    lx = left + 10
    for s in series:
        if s.get("dots"):
            for px, py in s["points"]:
                out.append(f'<circle cx="{X(px):.1f}" cy="{Y(py):.1f}" r="3.5" fill="{s["color"]}"><title>{escape(s["name"])} {px:g}: {py:.4g}</title></circle>')
        else:
            d = " ".join(f"{'M' if i == 0 else 'L'}{X(px):.1f},{Y(py):.1f}" for i, (px, py) in enumerate(s["points"]))
            out.append(f'<path d="{d}" fill="none" stroke="{s["color"]}" stroke-width="2"/>')
        out.append(f'<rect x="{lx}" y="{top - 2}" width="10" height="10" fill="{s["color"]}"/><text x="{lx + 14}" y="{top + 7}" class="sub">{escape(s["name"])}</text>')
        lx += 24 + 7 * len(s["name"])
    out.append("</svg>")
    return "".join(out)


def pareto(points: list[dict], title: str) -> str:
    """points: {label, x (domain gain), y (general change), front: bool}."""
    points = [p for p in points if finite(p.get("x"), p.get("y"))]
    if not points:
        return ""
    xs = [p["x"] for p in points] + [0.0]
    ys = [p["y"] for p in points] + [0.0]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    px, py = (x1 - x0) * 0.15 or 0.05, (y1 - y0) * 0.15 or 0.05
    x0, x1, y0, y1 = x0 - px, x1 + px, y0 - py, y1 + py
    if not drawable(x0, x1) or not drawable(y0, y1):
        return ""
    W, H, left, right, top, bottom = 640, 360, 64, 24, 28, 46
    X = lambda v: left + (v - x0) / (x1 - x0) * (W - left - right)  # noqa: E731
    Y = lambda v: top + (1 - (v - y0) / (y1 - y0)) * (H - top - bottom)  # noqa: E731
    out = [f'<svg class="chart" viewBox="0 0 {W} {H}" width="100%" role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
           f'<text x="{left}" y="16" class="ct">{escape(title)}</text>',
           f'<line x1="{X(0):.1f}" y1="{top}" x2="{X(0):.1f}" y2="{H - bottom}" class="zero"/>',
           f'<line x1="{left}" y1="{Y(0):.1f}" x2="{W - right}" y2="{Y(0):.1f}" class="zero"/>',
           f'<text x="{(W + left) / 2:.1f}" y="{H - 8}" text-anchor="middle" class="sub">domain gain (points) →</text>',
           f'<text x="14" y="{(H - bottom + top) / 2:.1f}" class="sub" transform="rotate(-90 14 {(H - bottom + top) / 2:.1f})" text-anchor="middle">general change (points) → less forgetting</text>']
    for t in _nice_ticks(x0, x1, 5):
        if x0 <= t <= x1:
            out.append(f'<text x="{X(t):.1f}" y="{H - bottom + 16}" text-anchor="middle" class="tick">{100 * t:+.0f}</text>')
    for t in _nice_ticks(y0, y1, 5):
        if y0 <= t <= y1:
            out.append(f'<text x="{left - 6}" y="{Y(t) + 4:.1f}" text-anchor="end" class="tick">{100 * t:+.0f}</text>')
    front = sorted((p for p in points if p["front"]), key=lambda p: p["x"])
    if len(front) > 1:
        d = " ".join(f"{'M' if i == 0 else 'L'}{X(p['x']):.1f},{Y(p['y']):.1f}" for i, p in enumerate(front))
        out.append(f'<path d="{d}" fill="none" stroke="{BLUE}" stroke-width="1.5" stroke-dasharray="4,3"/>')
    for p in points:
        color = BLUE if p["front"] else GREY
        out.append(f'<circle cx="{X(p["x"]):.1f}" cy="{Y(p["y"]):.1f}" r="6" fill="{color}"><title>{escape(p["label"])}</title></circle>')
        out.append(f'<text x="{X(p["x"]) + 8:.1f}" y="{Y(p["y"]) - 8:.1f}" class="lab">{escape(p["label"])}</text>')
    out.append("</svg>")
    return "".join(out)


def trend(points: list[dict], title: str, scale: float = 1.0, unit: str = "") -> str:
    """A suite's metric across versions, oldest first. points: {label, value, lo, hi, released, current, verdict};
    released versions are drawn as diamonds and labelled, the candidate of this report in blue and larger."""
    points = [{**p, "value": p.get("value") if finite(p.get("value")) else None, "lo": p.get("lo") if finite(p.get("lo")) else None,
               "hi": p.get("hi") if finite(p.get("hi")) else None} for p in points]
    pts = [p for p in points if p.get("value") is not None]
    if not pts:
        return ""
    vals = [v * scale for p in pts for v in (p["value"], p.get("lo"), p.get("hi")) if v is not None]
    y0, y1 = min(vals), max(vals)
    pad = (y1 - y0) * 0.12 or max(abs(y1) * 0.05, 0.5)
    y0, y1 = y0 - pad, y1 + pad
    if not drawable(y0, y1):
        return ""
    W, left, right, top, bottom = 760, 64, 24, 30, 58
    H = 270
    step = (W - left - right) / max(1, len(points))
    X = lambda i: left + step * (i + 0.5)  # noqa: E731
    Y = lambda v: top + (1 - (v * scale - y0) / (y1 - y0)) * (H - top - bottom)  # noqa: E731
    out = [f'<svg class="chart" viewBox="0 0 {W} {H}" width="100%" role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
           f'<text x="{left}" y="16" class="ct">{escape(title)}</text>']
    for t in _nice_ticks(y0, y1, 4):
        if y0 <= t <= y1:
            yy = top + (1 - (t - y0) / (y1 - y0)) * (H - top - bottom)
            out.append(f'<line x1="{left}" y1="{yy:.1f}" x2="{W - right}" y2="{yy:.1f}" class="grid"/><text x="{left - 6}" y="{yy + 4:.1f}" text-anchor="end" class="tick">{t:g}{escape(unit)}</text>')
    line = [(X(i), Y(p["value"])) for i, p in enumerate(points) if p.get("value") is not None]
    if len(line) > 1:
        out.append('<path d="' + " ".join(f"{'M' if i == 0 else 'L'}{x:.1f},{y:.1f}" for i, (x, y) in enumerate(line)) + f'" fill="none" stroke="{GREY}" stroke-width="1" stroke-dasharray="3,3"/>')
    for i, p in enumerate(points):
        x = X(i)
        out.append(f'<text x="{x:.1f}" y="{H - 36}" text-anchor="middle" class="tick">{escape(str(p["label"]))[:40]}</text>')
        if p.get("released"):
            out.append(f'<text x="{x:.1f}" y="{H - 22}" text-anchor="middle" class="sub">released</text>')
        if p.get("current"):
            out.append(f'<text x="{x:.1f}" y="{H - 8}" text-anchor="middle" class="sub">this candidate</text>')
        if p.get("value") is None:
            continue
        color = BLUE if p.get("current") else ({"pass": GREEN, "fail": RED, "inconclusive": AMBER}.get(p.get("verdict"), GREY))
        if p.get("lo") is not None and p.get("hi") is not None:
            out.append(f'<line x1="{x:.1f}" y1="{Y(p["lo"]):.1f}" x2="{x:.1f}" y2="{Y(p["hi"]):.1f}" stroke="{color}" stroke-width="{3 if p.get("current") else 2}"/>')
            for b in (p["lo"], p["hi"]):
                out.append(f'<line x1="{x - 5:.1f}" y1="{Y(b):.1f}" x2="{x + 5:.1f}" y2="{Y(b):.1f}" stroke="{color}" stroke-width="1.5"/>')
        tip = f'{escape(str(p["label"]))}: {p["value"] * scale:.4g}{escape(unit)}' + (f' ({p["lo"] * scale:.4g} to {p["hi"] * scale:.4g})' if p.get("lo") is not None and p.get("hi") is not None else "") + \
            (f', {escape(str(p.get("verdict")))}' if p.get("verdict") else "") + (", released" if p.get("released") else "")
        r = 7 if p.get("current") else 5
        y = Y(p["value"])
        if p.get("released"):
            out.append(f'<path d="M{x:.1f},{y - r - 1:.1f} L{x + r + 1:.1f},{y:.1f} L{x:.1f},{y + r + 1:.1f} L{x - r - 1:.1f},{y:.1f} Z" fill="{color}" class="released"><title>{tip}</title></path>')
        else:
            out.append(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="{r}" fill="{color}"><title>{tip}</title></circle>')
    out.append("</svg>")
    return "".join(out)
