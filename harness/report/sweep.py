"""The report's sweep section (``sweep.json`` of ``laf sweep``): the recommendation, a chart of the domain gain and
the general change with CIs per point (points ordered by trainable parameters), and the cost table.

``sweep.json`` comes from a run folder, so it is untrusted: every value is type-checked before it is drawn and
every string is escaped; a malformed entry is skipped, never an error that loses the rest of the report.
"""

from __future__ import annotations

import math
from html import escape

from .svg import AMBER, BLUE, GREEN, GREY, RED, _nice_ticks, drawable


def _num(v) -> float | None:
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return None
    try:
        f = float(v)
    except OverflowError:  # an integer too large for a float
        return None
    return f if math.isfinite(f) else None


def _cell(d) -> tuple[float, float, float] | None:
    if not isinstance(d, dict):
        return None
    v, lo, hi = _num(d.get("improvement")), _num(d.get("ci_low")), _num(d.get("ci_high"))
    if v is None:
        return None
    out = (100 * v, 100 * (lo if lo is not None else v), 100 * (hi if hi is not None else v))
    return out if all(math.isfinite(x) for x in out) else None  # points: a value near the float limit overflows


def chart(points: list[dict]) -> str:
    """Domain gain and general change (points, candidate - base) with their CIs, one column per sweep point."""
    rows = [(str(p.get("name")), _cell(p.get("domain")), _cell(p.get("general"))) for p in points]
    rows = [r for r in rows if r[1] or r[2]]
    if not rows:
        return ""
    vals = [x for _, d, g in rows for c in (d, g) if c for x in c] + [0.0]
    lo, hi = min(vals), max(vals)
    pad = (hi - lo) * 0.08 or 1.0
    lo, hi = lo - pad, hi + pad
    if not drawable(lo, hi):
        return ""  # a span past the float limit: the table below still lists every point
    W, left, right, top, bottom = 760, 60, 20, 30, 90
    H = 320
    col = (W - left - right) / len(rows)
    y = lambda v: top + (hi - v) / (hi - lo) * (H - top - bottom)  # noqa: E731
    out = [f'<svg class="chart" viewBox="0 0 {W} {H}" width="100%" role="img" aria-label="sweep: domain gain and general change per point" '
           'xmlns="http://www.w3.org/2000/svg">']
    for t in _nice_ticks(lo, hi):
        if lo <= t <= hi:
            out.append(f'<line x1="{left}" x2="{W - right}" y1="{y(t):.1f}" y2="{y(t):.1f}" stroke="#eee"/>'
                       f'<text x="{left - 6}" y="{y(t) + 4:.1f}" font-size="11" text-anchor="end" fill="{GREY}">{t:+g}</text>')
    out.append(f'<line x1="{left}" x2="{W - right}" y1="{y(0):.1f}" y2="{y(0):.1f}" stroke="{GREY}"/>')
    for i, (name, d, g) in enumerate(rows):
        cx = left + col * (i + 0.5)
        for off, c, colour in ((-8, d, BLUE), (8, g, AMBER)):
            if c is None:
                continue
            v, a, b = c
            out.append(f'<line x1="{cx + off:.1f}" x2="{cx + off:.1f}" y1="{y(a):.1f}" y2="{y(b):.1f}" stroke="{colour}" stroke-width="2"/>'
                       f'<circle cx="{cx + off:.1f}" cy="{y(v):.1f}" r="4" fill="{colour}"><title>{escape(name)}: {v:+.1f} ({a:+.1f} to {b:+.1f})</title></circle>')
        out.append(f'<text x="{cx:.1f}" y="{H - bottom + 16}" font-size="11" text-anchor="end" transform="rotate(-30 {cx:.1f} {H - bottom + 16})">{escape(name[:40])}</text>')
    out.append(f'<text x="{left}" y="16" font-size="12" fill="{BLUE}">● domain gain (points, 95 % CI)</text>'
               f'<text x="{left + 260}" y="16" font-size="12" fill="{AMBER}">● general change (points, 95 % CI)</text>')
    out.append("</svg>")
    return "".join(out)


def _fmt(v, spec: str = ",.0f", scale: float = 1.0) -> str:
    n = _num(v)
    return "–" if n is None else format(n * scale, spec)


def render(sweep: dict) -> str:
    """The section's HTML."""
    if not isinstance(sweep, dict):
        return ""
    points = [p for p in sweep.get("points") or [] if isinstance(p, dict)]

    def trainable(p):
        c = p.get("cost") if isinstance(p.get("cost"), dict) else {}
        return _num(c.get("trainable_parameters")) or float("inf")

    points.sort(key=trainable)
    rec = sweep.get("recommendation") if isinstance(sweep.get("recommendation"), dict) else {}
    out = [f"<p class='verdict-sentence'><strong>{escape(str(rec.get('sentence') or 'No recommendation recorded.'))}</strong></p>"]
    if rec.get("rule"):
        out.append(f"<p class='muted'>Rule: {escape(str(rec['rule']))}; margin {escape(_fmt(rec.get('margin_points'), 'g'))} points.</p>")
    out.append(chart(points))
    out.append(frontier_section(sweep.get("frontier")))
    sel = sweep.get("selection")
    if isinstance(sel, dict):
        out.append(selection_section({n: v.get("curve") for n, v in sel.items() if isinstance(v, dict)},
                                     {n: v.get("chosen_step") for n, v in sel.items() if isinstance(v, dict)}))
    head = ("<tr><th>point</th><th>parameters</th><th class='num'>trainable</th><th class='num'>%</th><th class='num'>adapter MB</th>"
            "<th class='num'>train s</th><th class='num'>tokens</th><th class='num'>peak MB</th><th class='num'>eval s</th>"
            "<th class='num'>domain gain (CI)</th><th class='num'>general change (CI)</th><th>gate</th>"
            "<th class='num'>full FT: state MB</th><th class='num'>full FT: train s</th></tr>")
    body = []
    for p in points:
        c = p.get("cost") if isinstance(p.get("cost"), dict) else {}
        ft = c.get("full_finetune") if isinstance(c.get("full_finetune"), dict) else {}
        params = p.get("params") if isinstance(p.get("params"), dict) else {}
        d, g = _cell(p.get("domain")), _cell(p.get("general"))
        dc = "–" if d is None else f"{d[0]:+.1f} ({d[1]:+.1f} to {d[2]:+.1f})"
        gc = "–" if g is None else f"{g[0]:+.1f} ({g[1]:+.1f} to {g[2]:+.1f})"
        star = " ★" if p.get("name") == rec.get("point") else ""
        body.append(
            f"<tr><td>{escape(str(p.get('name')))}{star}</td><td>{escape(', '.join(f'{k}={v}' for k, v in params.items()))}</td>"
            f"<td class='num'>{_fmt(c.get('trainable_parameters'))}</td><td class='num'>{_fmt(c.get('trainable_percent'), '.3g')}</td>"
            f"<td class='num'>{_fmt(c.get('adapter_bytes'), '.2f', 1e-6)}</td><td class='num'>{_fmt(c.get('train_time_s'), '.1f')}</td>"
            f"<td class='num'>{_fmt(c.get('tokens'))}</td><td class='num'>{_fmt(c.get('peak_memory_mb'))}</td>"
            f"<td class='num'>{_fmt(c.get('eval_time_s'), '.1f')}</td><td class='num'>{escape(dc)}</td><td class='num'>{escape(gc)}</td>"
            f"<td>{escape(str(p.get('verdict') or '–').upper())}</td><td class='num'>{_fmt(ft.get('state_memory_mb'))}</td>"
            f"<td class='num'>{_fmt(ft.get('train_time_s'), '.1f')}</td></tr>")
    out.append(f"<table>{head}{''.join(body)}</table>")
    if sweep.get("cost_method"):
        out.append(f"<p class='muted'>Full fine-tuning (FT) columns are an extrapolation: {escape(str(sweep['cost_method']))}. "
                   f"Evaluation time: {escape(str(sweep.get('eval_time_method') or ''))}.</p>")
    return "".join(out)


# ---------------------------------------------------------------- the found-vs-lost frontier and the selection curve


def _xy(d) -> tuple[float, float, float] | None:
    if not isinstance(d, dict):
        return None
    v, lo, hi = _num(d.get("value")), _num(d.get("ci_low")), _num(d.get("ci_high"))
    if v is None:
        return None
    return v, (lo if lo is not None else v), (hi if hi is not None else v)


def _scatter(rows: list[tuple[str, tuple, tuple, str, bool]], fx: str, fy: str, region: tuple[float | None, float | None], title: str,
             connect: bool = False) -> str:
    """Points with CI whiskers on both axes; x = found (right is better), y = lost (down is better); the pass region
    (x >= rx, y <= ry) shaded; ``connect`` draws the points in order (a curve over training steps)."""
    if not rows:
        return ""
    rx, ry = region
    xs = [v for _, x, _, _, _ in rows for v in x] + [0.0] + ([rx] if rx is not None else [])
    ys = [v for _, _, y, _, _ in rows for v in y] + [0.0] + ([ry] if ry is not None else [])
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    px, py = (x1 - x0) * 0.08 or 0.05, (y1 - y0) * 0.08 or 0.05
    x0, x1, y0, y1 = x0 - px, x1 + px, y0 - py, y1 + py
    if not drawable(x0, x1) or not drawable(y0, y1):
        return ""  # a span past the float limit (values near ±1e308): the chart is left out
    W, H, left, right, top, bottom = 760, 380, 70, 20, 30, 50
    X = lambda v: left + (v - x0) / (x1 - x0) * (W - left - right)  # noqa: E731
    Y = lambda v: top + (y1 - v) / (y1 - y0) * (H - top - bottom)  # noqa: E731
    out = [f'<svg class="chart" viewBox="0 0 {W} {H}" width="100%" role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">']
    if rx is not None and ry is not None and rx <= x1 and ry >= y0:
        out.append(f'<rect x="{X(max(rx, x0)):.1f}" y="{Y(min(ry, y1)):.1f}" width="{X(x1) - X(max(rx, x0)):.1f}" height="{Y(y0) - Y(min(ry, y1)):.1f}" '
                   f'fill="{GREEN}" fill-opacity="0.10"><title>the gate\'s pass region (point estimates; the gate also needs the CI inside)</title></rect>')
    for t in _nice_ticks(x0, x1):
        if x0 <= t <= x1:
            out.append(f'<line x1="{X(t):.1f}" x2="{X(t):.1f}" y1="{top}" y2="{H - bottom}" stroke="#eee"/>'
                       f'<text x="{X(t):.1f}" y="{H - bottom + 14}" font-size="11" text-anchor="middle" fill="{GREY}">{t:+g}</text>')
    for t in _nice_ticks(y0, y1):
        if y0 <= t <= y1:
            out.append(f'<line x1="{left}" x2="{W - right}" y1="{Y(t):.1f}" y2="{Y(t):.1f}" stroke="#eee"/>'
                       f'<text x="{left - 6}" y="{Y(t) + 4:.1f}" font-size="11" text-anchor="end" fill="{GREY}">{t:+g}</text>')
    out.append(f'<line x1="{X(0):.1f}" x2="{X(0):.1f}" y1="{top}" y2="{H - bottom}" stroke="{GREY}"/>'
               f'<line x1="{left}" x2="{W - right}" y1="{Y(0):.1f}" y2="{Y(0):.1f}" stroke="{GREY}"/>')
    if connect and len(rows) > 1:
        out.append('<polyline fill="none" stroke="#999" stroke-dasharray="4 3" points="'
                   + " ".join(f"{X(x[0]):.1f},{Y(y[0]):.1f}" for _, x, y, _, _ in rows) + '"/>')
    for name, x, y, verdict, front in rows:
        colour = GREEN if verdict == "pass" else RED if verdict == "fail" else AMBER
        out.append(f'<line x1="{X(x[1]):.1f}" x2="{X(x[2]):.1f}" y1="{Y(y[0]):.1f}" y2="{Y(y[0]):.1f}" stroke="{colour}" stroke-opacity="0.6"/>'
                   f'<line x1="{X(x[0]):.1f}" x2="{X(x[0]):.1f}" y1="{Y(y[1]):.1f}" y2="{Y(y[2]):.1f}" stroke="{colour}" stroke-opacity="0.6"/>'
                   f'<circle cx="{X(x[0]):.1f}" cy="{Y(y[0]):.1f}" r="{6 if front else 4}" fill="{colour}" stroke="{"#000" if front else "none"}">'
                   f'<title>{escape(name)}: found {x[0]:+.3f} ({x[1]:+.3f} to {x[2]:+.3f}), lost {y[0]:+.3f} ({y[1]:+.3f} to {y[2]:+.3f}), {escape(verdict)}</title></circle>'
                   f'<text x="{X(x[0]) + 8:.1f}" y="{Y(y[0]) - 6:.1f}" font-size="11">{escape(name[:32])}</text>')
    out.append(f'<text x="{(left + W - right) / 2:.0f}" y="{H - 12}" font-size="12" text-anchor="middle">found: {escape(fx)} (right is better)</text>'
               f'<text x="14" y="{(top + H - bottom) / 2:.0f}" font-size="12" text-anchor="middle" transform="rotate(-90 14 {(top + H - bottom) / 2:.0f})">'
               f'lost: {escape(fy)} (down is better)</text>')
    out.append("</svg>")
    return "".join(out)


def frontier_section(front) -> str:
    """The frontier chart (Pareto points outlined, the pass region shaded) and its table."""
    if not isinstance(front, dict) or not isinstance(front.get("points"), list):
        return ""
    f = front.get("found") if isinstance(front.get("found"), dict) else {}
    lo = front.get("lost") if isinstance(front.get("lost"), dict) else {}
    rows = []
    for p in front["points"]:
        if not isinstance(p, dict):
            continue
        x, y = _xy(p.get("found")), _xy(p.get("lost"))
        if x and y:
            rows.append((str(p.get("name")), x, y, str(p.get("verdict")), bool(p.get("pareto"))))
    if not rows:
        return ""
    sf, sl = (_num(f.get("scale")) or 1.0), (_num(lo.get("scale")) or 1.0)
    fx = f"{f.get('suite')} {f.get('metric')} gain ({f.get('unit') or f.get('metric')})"
    fy = f"{lo.get('suite')} {lo.get('metric')} increase ({lo.get('unit') or lo.get('metric')})"
    scaled = [(n, tuple(v * sf for v in x), tuple(v * sl for v in y), v, fr) for n, x, y, v, fr in rows]
    scaled = [r for r in scaled if all(math.isfinite(c) for c in r[1] + r[2])]  # a value the scale overflows is skipped
    if not scaled:
        return ""
    fm, lm = _num(f.get("margin")), _num(lo.get("margin"))
    chart = _scatter(scaled, fx, fy, (None if fm is None else fm * sf, None if lm is None else lm * sl), "found vs lost frontier")
    ff, fl = (".1f" if sf != 1.0 else ".3f"), (".1f" if sl != 1.0 else ".3f")
    body = "".join(f"<tr><td>{escape(n)}</td><td class='num'>{x[0]:+{ff}} ({x[1]:+{ff}} to {x[2]:+{ff}})</td>"
                   f"<td class='num'>{y[0]:+{fl}} ({y[1]:+{fl}} to {y[2]:+{fl}})</td><td>{'yes' if fr else ''}</td><td>{escape(v.upper())}</td></tr>"
                   for n, x, y, v, fr in scaled)
    sentence = escape(str(front.get("sentence") or ""))
    return (f"<h3>Found vs lost</h3><p class='verdict-sentence'>{sentence}</p>{chart}"
            f"<table><tr><th>point</th><th class='num'>found: {escape(fx)} (95 % CI)</th><th class='num'>lost: {escape(fy)} (95 % CI)</th>"
            f"<th>Pareto</th><th>gate</th></tr>{body}</table>"
            "<p class='muted'>Green region: the gate's margins; a point passes only when its one-sided 95 % bounds clear them (and its other rules pass); the bars are two-sided 95 % CIs.</p>")


def _curve_axes(curve: list) -> list[tuple[str, tuple, tuple, str, bool]]:
    rows = []
    for c in curve:
        if not isinstance(c, dict) or not isinstance(c.get("rules"), list):
            continue
        rules = [r for r in c["rules"] if isinstance(r, dict)]
        f = next((r for r in rules if r.get("kind") == "min_gain"), None)
        lo = next((r for r in rules if r.get("kind") == "max_increase"), None) or next((r for r in rules if r.get("kind") == "max_drop"), None)
        if not f or not lo:
            continue
        fi, fl, fh = _num(f.get("improvement")), _num(f.get("ci_low")), _num(f.get("ci_high"))
        li, ll, lh = _num(lo.get("improvement")), _num(lo.get("ci_low")), _num(lo.get("ci_high"))
        if None in (fi, fl, fh, li, ll, lh):
            continue
        rows.append((f"step {c.get('step')}", (fi, fl, fh), (-li, -lh, -ll), str(c.get("verdict")), bool(c.get("chosen"))))
    return rows


def selection_section(curves, chosen: dict | None = None) -> str:
    """The found-vs-lost curve over each training's snapshots (selection split), the chosen step outlined."""
    if not isinstance(curves, dict):
        return ""
    out = []
    for name, curve in curves.items():
        if not isinstance(curve, list):
            continue
        pick = (chosen or {}).get(name)
        curve = [{**c, "chosen": c.get("step") == pick} for c in curve if isinstance(c, dict)]  # a malformed entry is skipped
        chart = _scatter(_curve_axes(curve), "domain gain", "general loss", (None, None), f"selection curve of {name}", connect=True)
        if chart:
            out.append(f"<h4>{escape(str(name))}</h4>" + chart)
    if not out:
        return ""
    return ("<h3>Checkpoint selection (selection split)</h3><p class='muted'>Each snapshot scored on the selection split; the chosen one is "
            "outlined. Every other figure in this report is on the disjoint confirmation split.</p>" + "".join(out))
