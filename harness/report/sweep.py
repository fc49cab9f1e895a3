"""The report's sweep section (``sweep.json`` of ``laf sweep``): the recommendation, a chart of the domain gain and
the general change with CIs per point (points ordered by trainable parameters), and the cost table.

``sweep.json`` comes from a run folder, so it is untrusted: every value is type-checked before it is drawn and
every string is escaped; a malformed entry is skipped, never an error that loses the rest of the report.
"""

from __future__ import annotations

import math
from html import escape

from .svg import AMBER, BLUE, GREY, _nice_ticks


def _num(v) -> float | None:
    return float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else None


def _cell(d) -> tuple[float, float, float] | None:
    if not isinstance(d, dict):
        return None
    v, lo, hi = _num(d.get("improvement")), _num(d.get("ci_low")), _num(d.get("ci_high"))
    if v is None:
        return None
    return 100 * v, 100 * (lo if lo is not None else v), 100 * (hi if hi is not None else v)


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
