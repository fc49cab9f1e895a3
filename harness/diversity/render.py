"""SVG heatmaps and dendrograms, and the report section, from diversity.json (pure functions, no scripts).

Same conventions as :mod:`harness.report.svg`: inline SVG, CSS classes
``chart ct lab sub tick grid``, every text from data escaped here.
"""

from __future__ import annotations

from html import escape

import numpy as np

GREY, BLUE, RED = "#6e7781", "#0969da", "#cf222e"


def _mix(c1: tuple, c2: tuple, t: float) -> str:
    t = min(max(t, 0.0), 1.0)
    r, g, b = (round(a + (b_ - a) * t) for a, b_ in zip(c1, c2))
    return f"#{r:02x}{g:02x}{b:02x}"


def _color(v: float, lo: float, hi: float) -> str:
    """Diverging when the range spans zero (red - white - blue), sequential (white - blue) otherwise."""
    white, blue, red = (255, 255, 255), (9, 105, 218), (207, 34, 46)
    if lo < 0 < hi:
        return _mix(white, blue, v / hi) if v >= 0 else _mix(white, red, v / lo)
    return _mix(white, blue, (v - lo) / ((hi - lo) or 1.0))


def heatmap_svg(labels: list[str], values: list[list], title: str, lo: float = -1.0, hi: float = 1.0, fmt: str = "{:.2f}") -> str:
    """A labelled matrix; null cells are grey and say 'undefined'."""
    n = len(labels)
    if n == 0:
        return ""
    cell = max(18, min(44, 520 // n))
    left, top = 12 + 7 * min(28, max(len(str(lab)) for lab in labels)), 40
    W = left + cell * n + 20
    H = top + cell * n + 12 + 7 * min(28, max(len(str(lab)) for lab in labels))
    out = [f'<svg class="chart heatmap" viewBox="0 0 {W} {H}" width="100%" role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
           f'<text x="8" y="16" class="ct">{escape(title)}</text>']
    for i, lab in enumerate(labels):
        short = str(lab) if len(str(lab)) <= 28 else str(lab)[:27] + "…"
        y = top + cell * i + cell / 2 + 4
        out.append(f'<text x="{left - 6}" y="{y:.1f}" text-anchor="end" class="lab">{escape(short)}</text>')
        x = left + cell * i + cell / 2
        yb = top + cell * n + 8
        out.append(f'<text x="{x:.1f}" y="{yb:.1f}" transform="rotate(45 {x:.1f} {yb:.1f})" class="lab">{escape(short)}</text>')
        for j in range(n):
            v = values[i][j]
            x0, y0 = left + cell * j, top + cell * i
            if v is None:
                out.append(f'<rect x="{x0}" y="{y0}" width="{cell}" height="{cell}" fill="#d0d7de" stroke="#fff">'
                           f'<title>{escape(str(labels[i]))} / {escape(str(labels[j]))}: undefined</title></rect>')
                continue
            text = fmt.format(v)
            out.append(f'<rect x="{x0}" y="{y0}" width="{cell}" height="{cell}" fill="{_color(float(v), lo, hi)}" stroke="#fff">'
                       f'<title>{escape(str(labels[i]))} / {escape(str(labels[j]))}: {escape(text)}</title></rect>')
            if cell >= 30:
                out.append(f'<text x="{x0 + cell / 2:.1f}" y="{y0 + cell / 2 + 4:.1f}" text-anchor="middle" class="tick">{escape(text)}</text>')
    out.append("</svg>")
    return "".join(out)


def dendrogram_svg(clusters: dict, title: str) -> str:
    """The average-linkage tree of a ``clusters`` entry of diversity.json, leaves on the left, merge height to the right."""
    if not clusters or "linkage" not in clusters:
        return ""
    from scipy.cluster.hierarchy import dendrogram

    labels = [str(x) for x in clusters["labels"]]
    Z = np.asarray(clusters["linkage"], dtype=float)
    d = dendrogram(Z, no_plot=True, labels=labels, orientation="right")
    leaves = d["ivl"]
    n = len(leaves)
    hmax = max(float(Z[:, 2].max()), 1e-9)
    left = 12 + 7 * min(28, max(len(lab) for lab in labels))
    row, top, W = 22, 34, 640
    H = top + row * n + 30
    X = lambda h: left + 8 + h / hmax * (W - left - 40)  # noqa: E731
    Y = lambda i: top + (i - 5) / 10 * row + row / 2  # noqa: E731  (scipy puts leaf k at 10k + 5)
    group = {lab: k for k, g in enumerate(clusters.get("clusters", [])) for lab in g}
    palette = ["#0969da", "#1a7f37", "#9a6700", "#8250df", "#cf222e", "#bf3989", "#6e7781"]
    out = [f'<svg class="chart dendrogram" viewBox="0 0 {W} {H}" width="100%" role="img" aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg">',
           f'<text x="8" y="16" class="ct">{escape(title)}</text>']
    for k, lab in enumerate(leaves):
        color = palette[group.get(lab, 0) % len(palette)]
        short = lab if len(lab) <= 28 else lab[:27] + "…"
        out.append(f'<text x="{left}" y="{Y(10 * k + 5) + 4:.1f}" text-anchor="end" class="lab" fill="{color}">{escape(short)}</text>')
    for ic, dc in zip(d["icoord"], d["dcoord"]):
        pts = " ".join(f"{'M' if i == 0 else 'L'}{X(h):.1f},{Y(p):.1f}" for i, (p, h) in enumerate(zip(ic, dc)))
        out.append(f'<path d="{pts}" fill="none" stroke="{GREY}" stroke-width="1.5"/>')
    cut = (clusters.get("cut") or {}).get("height")
    if cut is not None and cut <= hmax:
        out.append(f'<line x1="{X(cut):.1f}" y1="{top - 6}" x2="{X(cut):.1f}" y2="{H - 26}" stroke="{RED}" stroke-dasharray="4,3"><title>cut at {cut:.3g}</title></line>')
    for t in np.linspace(0, hmax, 5):
        out.append(f'<text x="{X(t):.1f}" y="{H - 10}" text-anchor="middle" class="tick">{t:.2g}</text>')
    out.append(f'<text x="{W - 8}" y="{H - 10}" text-anchor="end" class="sub">{escape(clusters.get("distance", ""))}</text>')
    out.append("</svg>")
    return "".join(out)


def _skipped(name: str, obj) -> str:
    reason = obj.get("skipped") if isinstance(obj, dict) else None
    return f'<p class="sub">{escape(name)}: {escape(reason or "not measured")}</p>'


CHARTS = [
    ("kappa", "all", "Cohen's kappa of the predictions (all paired items)", -1.0, 1.0),
    ("error_correlation", "all", "error correlation (phi)", -1.0, 1.0),
    ("double_fault", "all", "double-fault rate", 0.0, 1.0),
    ("weight_cosine", "overall", "task-vector cosine (whole adapter)", -1.0, 1.0),
    ("subspace_overlap", "overall", "subspace overlap of the B factors", 0.0, 1.0),
    ("cka", "mean", "linear CKA of hidden states (mean over layers)", 0.0, 1.0),
]


def diversity_charts(doc: dict) -> list[tuple[str, str]]:
    """``(name, svg)`` of every heatmap and dendrogram diversity.json has data for (the report shows them; the run
    folder keeps them as files)."""
    out = []
    for key, sub, title, lo, hi in CHARTS:
        obj = doc.get(key) or {}
        m = obj.get(sub) if isinstance(obj, dict) else None
        if isinstance(m, dict) and "values" in m:
            out.append((key, heatmap_svg(m["labels"], m["values"], title, lo, hi)))
    gap = (doc.get("merge_ensemble_gap") or {}).get("kl")
    if isinstance(gap, dict) and "values" in gap:
        vmax = max([v for row in gap["values"] for v in row if v is not None] + [1e-9])
        out.append(("merge_ensemble_gap", heatmap_svg(gap["labels"], gap["values"], "merge-vs-ensemble gap, KL(ensemble || average), nats", 0.0, vmax, "{:.3f}")))
    for space, c in (doc.get("clusters") or {}).items():
        if isinstance(c, dict) and "linkage" in c:
            out.append((f"clusters-{space}", dendrogram_svg(c, f"clusters, {space} space")))
    return out


def render_diversity_section(doc: dict, wrap: bool = True) -> str:
    """The report's "Diversity and mergeability" section as one HTML fragment (all data text escaped); ``wrap=False``
    leaves out the ``<section>`` and its heading (the report adds its own)."""
    h = ['<section id="diversity"><h2>Diversity and mergeability</h2>'] if wrap else []
    for w in doc.get("warnings", []):
        h.append(f'<p class="warn">{escape(str(w))}</p>')
    items = doc.get("items")
    if isinstance(items, dict) and "skipped" not in items:
        h.append('<table><thead><tr><th>suite</th><th>category</th><th>paired items</th><th>dropped</th><th>note</th></tr></thead><tbody>')
        for s, v in items.items():
            dropped = ", ".join(f"{k}: {n}" for k, n in v.get("dropped", {}).items() if n) or "none"
            note = v.get("skipped") or v.get("no_predictions") or v.get("no_errors") or ""
            h.append(f"<tr><td>{escape(s)}</td><td>{escape(str(v.get('category')))}</td><td>{int(v.get('paired', 0))}</td>"
                     f"<td>{escape(dropped)}</td><td>{escape(note)}</td></tr>")
        h.append("</tbody></table>")
    charts = dict(diversity_charts(doc))
    for key, sub, title, _lo, _hi in CHARTS:
        obj = doc.get(key) or {}
        m = obj.get(sub) if isinstance(obj, dict) else None
        if key in charts:
            h.append(charts[key])
            for u in m.get("undefined", []):
                h.append(f'<p class="sub">{escape(" / ".join(map(str, u["pair"])))}: undefined ({escape(str(u["reason"]))})</p>')
        else:
            h.append(_skipped(title, m if isinstance(m, dict) else obj))
    if "merge_ensemble_gap" in charts:
        h.append(charts["merge_ensemble_gap"])
    for space, c in (doc.get("clusters") or {}).items():
        if f"clusters-{space}" in charts:
            h.append(charts[f"clusters-{space}"])
            groups = "; ".join("{" + ", ".join(map(str, g)) + "}" for g in c["clusters"])
            h.append(f'<p class="sub">{escape(space)} clusters ({escape(c["cut"]["rule"])}): {escape(groups)}</p>')
        else:
            h.append(_skipped(f"clusters, {space} space", c))
    pred = doc.get("predictions") or {}
    if pred.get("pairs"):
        h.append(f'<h3>Predicted mergeability</h3><p class="sub">rule: {escape(pred.get("rule", ""))}</p>')
        h.append('<table><thead><tr><th>pair</th><th>score</th><th>prediction</th><th>signals</th></tr></thead><tbody>')
        for r in pred["pairs"]:
            sig = ", ".join(f"{k} {v['value']:+.3f}" for k, v in r.get("signals", {}).items())
            score = "n/a" if r.get("score") is None else f"{r['score']:.3f}"
            h.append(f"<tr><td>{escape(' + '.join(map(str, r['pair'])))}</td><td>{score}</td><td>{escape(str(r.get('prediction') or r.get('reason', '')))}</td><td>{escape(sig)}</td></tr>")
        h.append("</tbody></table>")
        h.append('<p class="sub">sources: ' + escape("; ".join(pred.get("sources", []))) + "</p>")
    h.append(_prediction_check(doc.get("prediction_check")))
    if wrap:
        h.append("</section>")
    return "".join(h)


def _num(v, fmt: str = "{:+.3f}") -> str:
    return fmt.format(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else "n/a"


def _prediction_check(check) -> str:
    """Predicted mergeability against the observed retained gain of the merges in the run, per merge method."""
    if not isinstance(check, dict):
        return ""
    h = ["<h3>Predicted vs observed merges</h3>"]
    if "methods" not in check:
        return h[0] + _skipped("merged candidates", check)
    h.append(f'<p class="sub">{escape(str(check.get("observed", "")))}</p>')
    for method, entry in (check.get("methods") or {}).items():
        res = entry.get("check") or {}
        verdict = res.get("summary") or entry.get("skipped") or ""
        h.append(f"<p><b>{escape(str(method))}</b>: {escape(str(verdict))}</p>")
        h.append('<table><thead><tr><th>merge</th><th>parents</th><th>predicted score</th><th>merge gain</th><th>parents\' gains</th>'
                 '<th>retained gain</th><th>note</th></tr></thead><tbody>')
        for r in entry.get("merges", []):
            pg = r.get("parent_gains") or []
            h.append(f"<tr><td>{escape(str(r.get('merged')))}</td><td>{escape(' + '.join(map(str, r.get('parents', []))))}</td>"
                     f"<td>{_num(r.get('predicted'), '{:.3f}')}</td><td>{_num(r.get('merged_gain'))}</td>"
                     f"<td>{escape(', '.join(_num(g) for g in pg))}</td><td>{_num(r.get('retained_gain'), '{:.3f}')}</td>"
                     f"<td>{escape(str(r.get('reason', '')))}</td></tr>")
        h.append("</tbody></table>")
    return "".join(h)
