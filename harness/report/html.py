"""Render the report dict as one self-contained HTML file (CSS, JS and SVG inline, no requests)."""

from __future__ import annotations

import base64
import hashlib
import json
from html import escape
from importlib import resources

from ..results import MetricMeta, fmt_value, is_proportion
from ..results.checks import is_finite_number
from . import svg

CATEGORY_ORDER = ("domain", "general", "hallucination", "bias")


class Markup(str):
    """HTML the renderer built itself. Every other value is text and is escaped by :func:`_e`."""


def _e(v) -> str:
    """The one place where a value becomes HTML: our own Markup passes, everything else is escaped text."""
    if isinstance(v, Markup):
        return v
    return escape(str(v), quote=True)


def _nt(v, spec: str, scale: float = 1.0) -> str:
    """Plain text: a number formatted with ``spec`` (times ``scale``), anything else (a string in a hand-edited JSON file) as it is."""
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return format(v * scale, spec)
    return "–" if v is None else str(v)


def _n(v, spec: str, scale: float = 1.0) -> str:
    """:func:`_nt` as HTML."""
    return _e(_nt(v, spec, scale))


STATUSES = ("pass", "fail", "inconclusive", "error")


def _status(v) -> str:
    """A verdict or rule status as a CSS class: one of ours, never the file's text."""
    return v if v in STATUSES else "unknown"


def _asset(name: str) -> str:
    return resources.files("harness.report").joinpath("assets", name).read_text(encoding="utf-8")


def _csp_hash(source: str) -> str:
    """The CSP source expression that allows exactly this inline <script> or <style> body."""
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode("utf-8")).digest()).decode("ascii") + "'"


def _json_island(obj) -> str:
    """JSON that cannot end the <script> element or open a comment, whatever the data holds."""
    s = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str)
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _fmt(v, prop: bool = False) -> str:
    return fmt_value(v, prop) if v is None or isinstance(v, (int, float)) else _e(str(v))


def _kv(rows: list[tuple[str, object]]) -> str:
    return '<div class="kv">' + "".join(f"<div>{_e(k)}</div><div>{_e('–' if v is None else v)}</div>" for k, v in rows) + "</div>"


def _section(id_: str, title: str, body: str) -> str:
    return f'<section id="{id_}"><h2>{_e(title)}</h2>{body}</section>' if body else ""


def _warnings(d: dict) -> str:
    """Forced base mismatches, shown above everything else whether or not the run was gated."""
    out = []
    for m, info in d["models"].items():
        a = info.get("adapter") or {}
        if a.get("forced_base_mismatch"):
            out.append(f'<div class="banner inconclusive"><b>Warning:</b> adapter <b>{_e(m)}</b> was trained on another base model '
                       f'(fingerprint <code>{_e(str(a.get("trained_on"))[:12])}…</code>) and was scored on this one only because the '
                       f'evaluation was forced (<code>--force-base-mismatch</code>): its numbers do not describe the model it was trained as.</div>')
        m_sum = (d.get("merges") or {}).get(m)
        if isinstance(m_sum, dict) and m_sum.get("approximate"):
            out.append(f'<div class="banner inconclusive" data-merge="approximate"><b>Approximate merge:</b> adapter <b>{_e(m)}</b> is a '
                       f'{_e(m_sum.get("method"))} merge re-factored to rank {_e(m_sum.get("rank"))}, off its method\'s update by a relative '
                       f'error of up to {_n(m_sum.get("relative_error_max"), ".3g")} (mean {_n(m_sum.get("relative_error_mean"), ".3g")}): '
                       f'its numbers describe that approximation.</div>')
    integrity = str(d.get("integrity") or "")
    if integrity.startswith("modified"):
        out.append(f'<div class="banner fail"><b>Warning:</b> this run folder failed its integrity check and is shown only because of '
                   f'<code>--allow-modified</code> ({_e(integrity[len("modified: "):])}): its records may not be what the evaluation wrote.</div>')
    return "".join(out)


def _verdict(d: dict) -> str:
    v = d["verdict"]
    cand = d["candidate"]
    if not v:
        who = f"{_e(d['baseline'])} vs {_e(cand)}" if cand else _e(d["baseline"])
        return (f'<div class="banner none"><div class="big">No gate verdict</div><div>{who}: run <code>laf gate</code> on this folder '
                f"to decide pass / fail under a policy. The paired changes below are still computed on the same items.</div></div>")
    rows = []
    for r in v["rules"]:
        pill = f'<span class="pill {_status(r.get("status"))}">{_e(str(r.get("status")).upper())}</span>' + ("" if r.get("required") else ' <span class="pill adv">advisory</span>')
        rows.append(f"<tr><td>{pill}</td><td>{_e(r.get('rule'))}<div class='muted'>{_e(r.get('suite'))} · {_e(r.get('metric'))}</div></td><td>{_e(r.get('message'))}</td></tr>")
    lost = [r for r in v["rules"] if r.get("status") == "fail"]
    head = {"pass": "Ship it: every required rule passes.", "fail": f"Do not ship: {len(lost)} rule(s) failed.", "inconclusive": "Not decided: a required rule is inconclusive."}.get(
        v.get("verdict"), "The verdict file holds an unknown verdict: treat the run as not gated.")
    others = [r for r in ((d.get("compare") or {}).get("ranking") or []) if isinstance(r, dict) and r.get("candidate") != v["candidate"]["model"]]
    note = ""
    if others:
        note = ("<div>This banner is the verdict of one candidate; the other candidates' verdicts: "
                + ", ".join(f"<b>{_e(r.get('candidate'))}</b> {_e(str(r.get('verdict') or 'not gated').upper())}" for r in others)
                + ' (see <a href="#compare">Candidates compared</a>).</div>')
    return (f'<div class="banner {_status(v.get("verdict"))}"><div class="big">{_e(str(v.get("verdict")).upper())}</div><div>{_e(head)} '
            f'Baseline <b>{_e(v["baseline"]["model"])}</b> vs candidate <b>{_e(v["candidate"]["model"])}</b>, policy <code>{_e(v["policy"].get("source"))}</code>, '
            f'{_n(v["policy"].get("confidence"), ".0f", 100)}% confidence.</div>{note}</div>'
            f'<table><tr><th>verdict</th><th>rule</th><th>numbers</th></tr>{"".join(rows)}</table>')


def _row_verdict(rules: list[dict], suite: str, category: str, metric: str) -> str | None:
    """The gate's verdict on one chart row: the rules that decide this suite's shown metric (the suite's own rules,
    and a category rule pooled over it), required ones first; the worst of them (fail > inconclusive > pass).
    None when no rule covers the row (the chart then shows the direction of its interval)."""
    covering = [r for r in rules if r.get("metric") in (metric, None)
                and (r.get("suite") == suite or (r.get("suite") == f"{category} (pooled)" and r.get("category") == category))]
    decided = [r for r in covering if r.get("required")] or covering
    statuses = {r.get("status") for r in decided}
    for s in ("fail", "inconclusive", "pass"):
        if s in statuses:
            return s
    return None


def _found_lost(d: dict) -> str:
    s = d.get("summaries")
    if not s:
        return ""
    prop_rows, other_rows = [], []
    rules = [r for r in (d["verdict"] or {}).get("rules", []) if isinstance(r, dict)]
    order = sorted(s["suites"].items(), key=lambda kv: (CATEGORY_ORDER.index(kv[1]["category"]) if kv[1]["category"] in CATEGORY_ORDER else 9, kv[0]))
    for name, st in order:
        # the suite's primary metric, then every other metric a rule of the gate decided this suite on (drawn with that
        # rule's own numbers and verdict: a failed abstention_rate rule is not hidden behind an improved primary metric)
        shown = [(st["metric"], st, _row_verdict(rules, name, st["category"], st["metric"]), "")]
        for r in rules:
            stats = r.get("stats")
            if (r.get("suite") == name and r.get("metric") not in (None, st["metric"]) and isinstance(stats, dict) and r.get("status") in ("pass", "fail", "inconclusive")
                    and r["metric"] in d["suites"][name]["metrics"] and all(is_finite_number(stats.get(k)) for k in ("base", "candidate", "improvement", "ci_low", "ci_high"))
                    and r["metric"] not in [m for m, *_ in shown]):
                shown.append((r["metric"], stats, r["status"], " (gated)"))
        for metric, numbers, verdict, note in shown:
            meta = MetricMeta.from_dict(d["suites"][name]["metrics"][metric])
            row = {"label": name, "sublabel": f"{st['category']} · {metric}{note}" + (f" (ideal {_nt(meta.ideal, 'g')})" if meta.ideal is not None else ""),
                   "verdict": verdict}
            if is_proportion(metric, numbers["base"], numbers["candidate"]):
                prop_rows.append({**row, "value": 100 * numbers["improvement"], "lo": 100 * numbers["ci_low"], "hi": 100 * numbers["ci_high"]})
            elif numbers["base"]:
                scale = 100 / abs(numbers["base"])
                other_rows.append({**row, "value": scale * numbers["improvement"], "lo": scale * numbers["ci_low"], "hi": scale * numbers["ci_high"]})
    out = [svg.forest(prop_rows, " pt", f"Found vs lost: paired change of {d['candidate']} against {d['baseline']} (points, {_nt(_conf(d), '.0f', 100)}% CI; right is better)")]
    if other_rows:
        out.append(svg.forest(other_rows, "%", "Other metrics: change relative to the baseline (%, right is better)"))
    cats = s.get("categories") or {}
    if cats:
        rows = "".join(f"<tr><td>{_e(c)}</td><td>{_e(', '.join(v['suites']))}</td><td class='num'>{_e(v['n'])}</td><td class='num'>{_n(v['improvement'], '+.1f', 100)}</td>"
                       f"<td class='num'>{_n(v['ci_low'], '+.1f', 100)} to {_n(v['ci_high'], '+.1f', 100)}</td></tr>" for c, v in cats.items())
        out.append(f"<h3>Per category (items pooled, primary metrics oriented so + is better)</h3><table><tr><th>category</th><th>suites</th><th class='num'>items</th>"
                   f"<th class='num'>change (points)</th><th class='num'>CI</th></tr>{rows}</table>")
    return "".join(out)


def _conf(d: dict) -> float:
    v = d.get("verdict")
    return v["policy"]["confidence"] if v else 0.95


def _probe_panels(d: dict, categories=("hallucination", "bias")) -> str:
    out = []
    models = [d["baseline"]] + ([d["candidate"]] if d["candidate"] else [])
    for cat in categories:
        names = [n for n, m in d["suites"].items() if m["category"] == cat]
        if not names:
            continue
        out.append(f"<h3>{_e(cat.capitalize())}</h3>")
        for n in names:
            meta = d["suites"][n]
            gauges, rows = [], []
            for metric, raw in meta["metrics"].items():
                mm = MetricMeta.from_dict(raw)
                vals = [d["results"].get(m, {}).get(n, {}).get(metric, {}).get("value") for m in models]
                if all(v is None for v in vals):
                    continue
                direction = mm.direction()
                prop = is_proportion(metric, *[v for v in vals if isinstance(v, (int, float))])
                cells = "".join(f"<td class='num'>{_fmt(v, prop)}</td>" for v in vals)
                rows.append(f"<tr><td>{_e(metric)}{' *' if metric == meta['primary_metric'] else ''}</td><td class='muted'>{_e(direction)}</td>{cells}</tr>")
                if mm.ideal is not None and isinstance(vals[0], (int, float)):
                    seen = [v for v in vals if isinstance(v, (int, float))] + [mm.ideal]
                    if mm.scale:
                        lo, hi = mm.scale
                    elif all(0 <= v <= 1 for v in seen):
                        lo, hi = 0.0, 1.0
                    else:  # unbounded (a log-likelihood difference): a symmetric window around the ideal that holds every value
                        r = max(abs(v - mm.ideal) for v in seen) * 1.2 or 1.0
                        lo, hi = mm.ideal - r, mm.ideal + r
                    gauges.append(f"<div class='muted'>{_e(metric)}</div>" + svg.ideal_gauge(f"{n} {metric}", mm.ideal, vals[0], vals[1] if len(vals) > 1 else None, lo, hi))
            head = "".join(f"<th class='num'>{_e(m)}</th>" for m in models)
            out.append(f"<div><b>{_e(n)}</b> <span class='muted'>{_e(meta.get('description', ''))}</span>"
                       f"<table><tr><th>metric</th><th>direction</th>{head}</tr>{''.join(rows)}</table>{''.join(gauges)}</div>")
    return "".join(out)


def _suite_tables(d: dict) -> str:
    models = list(d["results"])
    out = []
    for n, meta in d["suites"].items():
        rows = []
        for metric in meta["metrics"]:
            cells = []
            for m in models:
                r = d["results"].get(m, {}).get(n, {}).get(metric, {})
                v, se = r.get("value"), r.get("stderr")
                prop = is_proportion(metric, v)
                cells.append(f"<td class='num'>{_fmt(v, prop)}" + (f" <span class='muted'>± {_fmt(se, prop)}</span>" if isinstance(se, (int, float)) else "") + "</td>")
            rows.append(f"<tr><td>{_e(metric)}{' *' if metric == meta['primary_metric'] else ''}</td>{''.join(cells)}</tr>")
        n_items = next(iter(d["results"].get(models[0], {}).get(n, {}).values()), {}).get("n", "")
        head = "".join(f"<th class='num'>{_e(m)}</th>" for m in models)
        out.append(f"<h3>{_e(n)} <span class='muted'>({_e(meta['category'])}, {_e(n_items)} items, {_e(meta.get('source', ''))})</span></h3>"
                   f"<table><tr><th>metric</th>{head}</tr>{''.join(rows)}</table>")
    return "".join(out) + "<p class='muted'>* primary metric. ± is lm-eval's standard error.</p>"


def _drilldown(d: dict) -> str:
    st = d["item_stats"]
    note = f"{st['items']} items; {st['lost']} lost (base right, adapter wrong), {st['found']} found (base wrong, adapter right)."
    if st["truncated"]:
        note += f" The report keeps every flip and {st['included']} items in all, to stay small; the full records are in records.jsonl."
    default = "flips" if d["candidate"] else "all"
    opts = "".join(f'<option value="{v}"{" selected" if v == default else ""}>{_e(t)}</option>' for v, t in
                   (("flips", "all flips"), ("lost", "lost (base right → adapter wrong)"), ("found", "found (base wrong → adapter right)"), ("same", "unchanged"), ("all", "every item")))
    return (f"<p class='muted'>{_e(note)}</p>"
            f'<div class="controls"><label>show <select id="flt-flip">{opts}</select></label>'
            f'<label>suite <select id="flt-suite"><option value="">all suites</option></select></label>'
            f'<input id="flt-q" type="search" placeholder="search prompts, choices, generations" size="36">'
            f'<span id="items-count" class="muted"></span></div>'
            f'<noscript>The item browser needs JavaScript; the records are in records.jsonl.</noscript>'
            f'<div id="items-list"></div><div class="pager"><button id="prev">previous</button><button id="next">next</button></div>')


def _training(d: dict) -> str:
    t = d.get("training")
    if not t:
        return ""
    curve = [c for c in (t.get("curve") or []) if isinstance(c, dict) and is_finite_number(c.get("step"))]
    series = [{"name": "train loss", "points": [(c["step"], c["loss"]) for c in curve if is_finite_number(c.get("loss"))], "color": svg.BLUE}]
    ev = [(c["step"], c["eval_loss"]) for c in curve if is_finite_number(c.get("eval_loss"))]
    if ev:
        series.append({"name": "held-out loss", "points": ev, "color": svg.AMBER, "dots": True})
    data, cfg = _mapping(t.get("data")), _mapping(t.get("config"))  # a manifest is untrusted: a field of another type is left out
    lora = _mapping(cfg.get("lora"))
    rows = [
        ("adapter", t.get("ref")), ("kind", t.get("kind")), ("trained", t.get("created")),
        ("trainable parameters", f"{_nt(t.get('trainable_parameters', 0), ',')} of {_nt(t.get('total_parameters', 0), ',')} ({_nt(t.get('trainable_percent'), 'g')} %)"),
        ("LoRA", f"r={lora.get('r')}, alpha={lora.get('alpha')}, dropout={lora.get('dropout')}, targets={lora.get('target_modules')}, rsLoRA={lora.get('rslora')}, DoRA={lora.get('dora')}"),
        ("steps / tokens", f"{t.get('steps')} steps, {_nt(t.get('tokens_seen', 0), ',')} tokens ({_nt(t.get('supervised_tokens_seen', 0), ',')} supervised)"),
        ("time / peak memory", f"{t.get('train_time_s')} s training ({t.get('wall_time_s')} s wall), {t.get('peak_memory_mb')} MB"),
        ("final losses", f"train {_nt(t.get('final_train_loss'), 'g')}, held-out {_nt(t.get('final_eval_loss'), 'g')}"),
        ("data", f"{data.get('path')}: {data.get('examples')} examples ({data.get('schema')}), {data.get('dropped')} dropped {data.get('dropped_reasons') or ''}, sha256 {str(data.get('content_sha256'))[:16]}…"),
        ("seed", t.get("seed")),
    ]
    return svg.line_chart(series, "Training loss") + _kv(rows)


def _mapping(v) -> dict:
    """A mapping of an untrusted document, or an empty one when the field holds something else."""
    return v if isinstance(v, dict) else {}


def _curation(d: dict) -> str:
    """curation.json (checked by :func:`harness.results.artifacts.read_curation` when gathered; a dict handed in
    directly is still shown defensively: a part of another shape is left out, a number that is not finite is '–')."""
    c = d.get("curation")
    if not isinstance(c, dict) or not c:
        return ""
    counts = _mapping(c.get("counts"))
    rows = "".join(f"<tr><td>{_e(k)}</td><td class='num'>{_e(v) if is_finite_number(v) else '–'}</td></tr>"
                   for k, v in counts.items())
    cont = _mapping(c.get("contamination"))

    def share(v):
        return _n(v, ".2f", 100) + "%" if is_finite_number(v) else "–"

    cont_rows = "".join(f"<tr><td>{_e(s)}</td><td class='num'>{_e(v.get('items'))}</td><td class='num'>{_e(v.get('contaminated_items'))}</td><td class='num'>{share(v.get('share', 0))}</td></tr>"
                        for s, v in _mapping(cont.get("suites")).items() if isinstance(v, dict))
    out = f"<table><tr><th>rule</th><th class='num'>count</th></tr>{rows}</table>"
    if cont_rows:
        ngram = cont.get("ngram", 13)
        out += (f"<h3>Contamination ({_e(ngram if is_finite_number(ngram) else '?')}-gram overlap with training data)</h3>"
                f"<table><tr><th>suite</th><th class='num'>items</th><th class='num'>contaminated</th><th class='num'>share</th></tr>{cont_rows}</table>")
    fp = _mapping(c.get("fingerprints"))
    if fp:
        out += _kv([(k, v) for k, v in fp.items()])
    return out


def _merge_tag(summary) -> str:
    """The merge's accuracy beside a candidate's name (nothing for a trained adapter); data-merge for tests."""
    if not isinstance(summary, dict):
        return ""
    from ..registry.merge_info import merge_label

    try:
        text = merge_label(summary)
    except (KeyError, TypeError, ValueError):
        return ""
    cls = "fail" if summary.get("approximate") else "adv"
    return f" <span class='pill {cls}' data-merge='{'approximate' if summary.get('approximate') else 'exact' if summary.get('exact') else 'truncated'}'>{_e(text)}</span>"


def _compare_columns(c: dict) -> str:
    """compare.json with per-quantity columns: a row per gated quantity in its unit, a column per candidate."""
    from ..gate.compare import format_cell

    ranking = [r for r in c.get("ranking", []) if isinstance(r, dict)]
    cols = [col for col in c["columns"] if isinstance(col, dict) and isinstance(col.get("key"), str)]
    head = "".join(f"<th>#{_e(r.get('rank'))} {_e(r.get('candidate'))}{_merge_tag(r.get('merge'))}</th>" for r in ranking)
    body = []
    for col in cols:
        cells = []
        for r in ranking:
            cell = (r.get("columns") or {}).get(col["key"]) if isinstance(r.get("columns"), dict) else None
            try:
                txt = format_cell(cell) if isinstance(cell, dict) else "–"
            except (KeyError, TypeError, ValueError):
                txt = "–"
            cells.append(f"<td class='num'>{_e(txt)}</td>")
        better = "closer to the ideal is better" if col.get("better") == "closer to the ideal" else f"{col.get('better')} is better"
        body.append(f"<tr><td>{_e(col['key'])} {_e(col.get('metric'))}</td><td>{_e(col.get('shown_as'))} ({_e(col.get('unit'))}; {_e(better)})</td>{''.join(cells)}</tr>")
    body.append("<tr><td>Pareto front</td><td></td>" + "".join(f"<td>{'yes' if r.get('pareto') else 'no'}</td>" for r in ranking) + "</tr>")
    body.append("<tr><td>domain p (Holm)</td><td></td>" + "".join(f"<td class='num'>{_n(r.get('domain_p_holm'), '.3g')}</td>" for r in ranking) + "</tr>")
    body.append("<tr><td>gate</td><td></td>" + "".join(
        f"<td class='{_status(r.get('verdict'))}'>{_e(str(r.get('verdict') or '–').upper())}"
        + (f"<br><small>{_e('; '.join(map(str, r.get('failed_rules') or [])))}</small>" if r.get("failed_rules") else "") + "</td>" for r in ranking) + "</tr>")
    p = c.get("pareto_on") if isinstance(c.get("pareto_on"), dict) else {}
    keys = [k for k in (p.get("quantities") or []) if isinstance(k, str)]
    note = f"<p>Pareto front on: {_e(', '.join(keys))} ({_e(p.get('source'))}). Changes are candidate − base with their CIs.</p>"
    chart = ""
    if len(keys) >= 2:
        def imp(r, k):
            v = ((r.get("columns") or {}).get(k) or {}).get("improvement")
            return float(v) if isinstance(v, (int, float)) else 0.0
        pts = [{"label": str(r.get("candidate")), "x": imp(r, keys[0]), "y": imp(r, keys[1]), "front": bool(r.get("pareto"))} for r in ranking]
        chart = svg.pareto(pts, f"Improvement on {keys[0]} against {keys[1]} (Pareto front over all {len(keys)} gated quantities)")
    w = c.get("winner") if isinstance(c.get("winner"), dict) else {}
    return (f"<table><tr><th>quantity</th><th>shown as</th>{head}</tr>{''.join(body)}</table>{note}"
            f"<p><b>Winner:</b> {_e(str(w.get('candidate')))}: {_e(w.get('reason', ''))}</p>" + chart)


def _selection(d: dict) -> str:
    sel = d.get("selection")
    if not isinstance(sel, dict) or not isinstance(sel.get("curve"), list):
        return ""
    from .sweep import selection_section

    name = str(sel.get("adapter") or "candidate")
    step = sel.get("chosen_step")
    sizes = sel.get("suites") if isinstance(sel.get("suites"), dict) else {}
    split = ", ".join(f"{_e(str(k))}: {_e(str(v.get('selection')))} chose / {_e(str(v.get('confirmation')))} certify"
                      for k, v in sizes.items() if isinstance(v, dict))
    return (f"<p>Registered <b>{_e(name)}</b> = step {_e(str(step))}, chosen on the selection split ({split}).</p>"
            + selection_section({name: sel["curve"]}, {name: step}))


def _sweep(d: dict) -> str:
    if not d.get("sweep"):
        return ""
    from .sweep import render

    return render(d["sweep"])


def _compare(d: dict) -> str:
    c = d.get("compare")
    if not c:
        return ""
    if isinstance(c.get("columns"), list):
        return _compare_columns(c)
    cats = c["categories"]
    head = "".join(f"<th class='num'>{_e(cat)} change (CI)</th>" for cat in cats)
    rows = []
    for r in c["ranking"]:
        cells = "".join(
            (f"<td class='num'>{_n(r['categories'][cat]['improvement'], '+.1f', 100)} ({_n(r['categories'][cat]['ci_low'], '+.1f', 100)} to {_n(r['categories'][cat]['ci_high'], '+.1f', 100)})</td>"
             if cat in r["categories"] else "<td class='num'>–</td>") for cat in cats)
        p = r.get("domain_p_holm")
        rows.append(f"<tr><td class='num'>{_e(r['rank'])}</td><td>{_e(r['candidate'])}{_merge_tag(r.get('merge'))}</td>{cells}<td>{'yes' if r['pareto'] else ''}</td>"
                    f"<td class='num'>{_n(p, '.3g')}</td><td>{_e(r.get('verdict', ''))}</td></tr>")
    pts = [{"label": r["candidate"], "x": r["categories"].get("domain", {}).get("improvement", 0.0), "y": r["categories"].get("general", {}).get("improvement", 0.0), "front": r["pareto"]} for r in c["ranking"]]
    w = c["winner"]
    return (f"<table><tr><th class='num'>#</th><th>candidate</th>{head}<th>Pareto</th><th class='num'>domain p (Holm)</th><th>gate</th></tr>{''.join(rows)}</table>"
            f"<p><b>Winner:</b> {_e(str(w.get('candidate')))}: {_e(w.get('reason', ''))}</p>" + svg.pareto(pts, "Domain gain against general change (Pareto front dashed)"))


def _parity(d: dict) -> str:
    """Export parity (``laf parity``): each pair of forms' next-token drift, flips and metric changes."""
    p = d.get("parity")
    if not p:
        return ""
    merges = "".join(f"<li>{_e(name)}: {_e(m.get('dtype'))} weights merged into the {_e(m.get('base_weights'))} base weights</li>"
                     for name, m in (p.get("merge") or {}).items() if isinstance(m, dict))
    rows, metric_rows = [], []
    for r in p["pairs"]:
        pair = f"{r['reference']} → {r['form']}"
        rows.append(f"<tr><td>{_e(pair)}</td><td class='num'>{_n(r.get('kl_mean'), '.3g')}</td><td class='num'>{_n(r.get('kl_p99'), '.3g')}</td>"
                    f"<td class='num'>{_n(r.get('top1_agreement'), '.2f', 100)}%</td><td class='num'>{_n(r.get('mean_abs_delta_ll'), '.3g')}</td>"
                    f"<td class='num'>{_e(r.get('flips'))} / {_e(r.get('items'))}</td></tr>")
        for s, v in (r.get("suites") or {}).items():
            for m, x in ((v or {}).get("metrics") or {}).items():
                if isinstance(x, dict):
                    metric_rows.append(f"<tr><td>{_e(pair)}</td><td>{_e(s)}</td><td>{_e(m)}</td><td class='num'>{_n(x.get('base'), '.4g')}</td>"
                                       f"<td class='num'>{_n(x.get('candidate'), '.4g')}</td><td class='num'>{_n(x.get('delta'), '+.4g')}</td>"
                                       f"<td class='num'>{_n(x.get('ci_low'), '+.4g')} to {_n(x.get('ci_high'), '+.4g')}</td></tr>")
    out = (f"<p>Adapter {_e(p.get('adapter'))} scored on the same items in each form; KL(reference ‖ form) of the next-token "
           f"distributions at every scored position, in nats.</p>" + (f"<ul>{merges}</ul>" if merges else "")
           + "<table><tr><th>pair</th><th class='num'>KL mean</th><th class='num'>KL p99</th><th class='num'>top-1 agreement</th>"
           f"<th class='num'>mean |Δ log-lik.|</th><th class='num'>flips</th></tr>{''.join(rows)}</table>")
    if metric_rows:
        out += ("<h3>Metric changes (paired, with CI of the improvement)</h3><table><tr><th>pair</th><th>suite</th><th>metric</th>"
                f"<th class='num'>reference</th><th class='num'>form</th><th class='num'>Δ</th><th class='num'>CI</th></tr>{''.join(metric_rows)}</table>")
    return out


def _audit(d: dict) -> str:
    p = d["provenance"]
    rows = [
        ("base model", f"{p['base_model']['spec']} ({p['base_model']['source']})"),
        ("base fingerprint", f"sha256:{p['base_model']['fingerprint']}"),
        ("load", json.dumps(p.get("load"))),
        ("batch size / max length", f"{p.get('batch_size')} / {p.get('max_length')} (identical for every model)"),
        ("scoring", f"{p.get('scoring_version')}, shared context {p.get('share_context')}"),
        ("evaluated", p.get("time")),
        ("command", p.get("command")),
        ("machine", json.dumps(p.get("machine"))),
        ("response cache", p.get("cache")),
        ("integrity", d.get("integrity")),
    ]
    for m, info in d["models"].items():
        a = info.get("adapter")
        if a:
            rows.append((f"adapter {m}", f"weights sha256:{a.get('weights_sha256')} · trained on {str(a.get('trained_on'))[:16]}…" + (" · FORCED onto another base" if a.get("forced_base_mismatch") else "")))
        rows.append((f"identity {m}", info.get("identity")))
    for s, meta in d["suites"].items():
        rows.append((f"suite {s}", f"{meta.get('n_docs')} items, data sha256:{str(meta.get('data_sha256'))[:16]}…, seed {meta.get('seed')}, {meta.get('source')}"))
    pk = p.get("packages") or {}
    rows.append(("packages", ", ".join(f"{k} {v}" for k, v in pk.items() if v)))
    v = d.get("verdict")
    if v:
        pol = {k: val for k, val in v["policy"].items()}
        rows.append(("gate policy", Markup("<pre>" + _e(json.dumps(pol, indent=1, default=str)) + "</pre>")))
    t = d.get("training")
    if t and t.get("config"):
        rows.append(("training config", Markup("<pre>" + _e(json.dumps(t["config"], indent=1, default=str)) + "</pre>")))
        rows.append(("training packages", ", ".join(f"{k} {val}" for k, val in (t.get("packages") or {}).items() if val)))
        rows.append(("training hardware", json.dumps(t.get("hardware"))))
    rows.append(("report generated", d["generated"]))
    return _kv(rows)


def _diversity(d: dict) -> str:
    if not d.get("diversity"):
        return ""
    from ..diversity import render_diversity_section

    return render_diversity_section(d["diversity"], wrap=False)


def _trend(d: dict) -> str:
    """Each gated suite's primary metric across the adapter's recorded versions (release history), with CIs: a drift
    that no single gate fails shows here."""
    t = d.get("trend")
    if not t or not t.get("adapters"):
        return ""
    parts = [f"<p class='muted'>From the release history {_e(t.get('store'))}: each version's latest recorded run; bars are 95% intervals, "
             "diamonds are released versions, the blue point is this candidate.</p>"]
    for a in t["adapters"]:
        versions = a["versions"]
        for s in a["suites"]:
            metric = next((v["suites"][s]["metric"] for v in versions if s in v["suites"]), "")
            vals = [x for v in versions if s in v["suites"] for x in (v["suites"][s]["value"], v["suites"][s]["ci_low"], v["suites"][s]["ci_high"]) if x is not None]
            prop = is_proportion(metric, *vals)
            better = next((v["suites"][s]["higher_is_better"] for v in versions if s in v["suites"]), True)
            pts = [{"label": v["candidate"], "value": v["suites"].get(s, {}).get("value"), "lo": v["suites"].get(s, {}).get("ci_low"),
                    "hi": v["suites"].get(s, {}).get("ci_high"), "released": v["released"] is not None, "current": v["current"], "verdict": v["verdict"]}
                   for v in versions]
            parts.append(Markup(svg.trend(pts, f"{a['name']}: {s} {metric} per version ({'higher' if better else 'lower'} is better)",
                                          100.0 if prop else 1.0, "%" if prop else "")))
        rows = "".join(
            f"<tr class='{'current' if v['current'] else ''}'><td>{_e(v['candidate'])}{' (this candidate)' if v['current'] else ''}</td>"
            f"<td>{_e(('released ' + v['released']['released_at'][:10] + ' by ' + v['released']['released_by'] + ((': ' + v['released']['note']) if v['released']['note'] else '')) if v['released'] else '')}</td>"
            f"<td class='{_status(v['verdict'])}'>{_e(v['verdict'] or '–')}</td><td>{_e(v['baseline'])}</td>"
            + "".join(f"<td>{_fmt(v['suites'].get(s, {}).get('value'), is_proportion(v['suites'].get(s, {}).get('metric', ''), v['suites'].get(s, {}).get('value')))}</td>" for s in a["suites"])
            + "</tr>" for v in versions)
        head = "".join(f"<th>{_e(s)}</th>" for s in a["suites"])
        parts.append(f"<table><thead><tr><th>version</th><th>release</th><th>verdict</th><th>gated against</th>{head}</tr></thead><tbody>{rows}</tbody></table>")
    return "".join(parts)


def render_html(d: dict) -> str:
    title = f"lost-and-found report: {d['candidate'] or d['baseline']}"
    island = {"items": d["items"], "suites": list(d["suites"]), "models": {"base": d["baseline"], "candidate": d["candidate"]}}
    sections = [
        ("verdict", "Verdict", _warnings(d) + _verdict(d)),
        ("found-lost", "What the adapter found, what the model lost", _found_lost(d)),
        ("probes", "Truthfulness and fairness", _probe_panels(d)),
        ("suites", "Per-suite results", _suite_tables(d)),
        ("items", "Items that flipped", _drilldown(d)),
        ("training", "Training", _training(d) + _selection(d)),
        ("curation", "Data curation", _curation(d)),
        ("sweep", "Sweep", _sweep(d)),
        ("compare", "Candidates compared", _compare(d)),
        ("trend", "Trend across versions", _trend(d)),
        ("parity", "Export parity", _parity(d)),
        ("diversity", "Diversity and mergeability", _diversity(d)),
        ("audit", "Audit trail", _audit(d)),
    ]
    toc = "".join(f'<a href="#{i}">{_e(t)}</a>' for i, t, b in sections if b)
    body = "".join(_section(i, t, b) for i, t, b in sections)
    css, js = _asset("report.css"), _asset("report.js")
    # No 'unsafe-inline': the browser runs our one script and applies our one style block because their
    # hashes are listed; an injected <script>, event handler (onerror=), javascript: URL or <style> is refused.
    csp = (f"default-src 'none'; script-src {_csp_hash(js)}; style-src {_csp_hash(css)}; img-src data:; "
           "base-uri 'none'; form-action 'none'")
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{csp}\">"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{_e(title)}</title>"
        f"<style>{css}</style></head><body>"
        f"<header class='top'><h1>{_e(title)}</h1><div class='muted'>run {_e(d['run_dir'])} · baseline {_e(d['baseline'])}"
        f"{' · candidate ' + _e(d['candidate']) + _merge_tag((d.get('merges') or {}).get(d['candidate'])) if d['candidate'] else ''} · generated {_e(d['generated'])}</div><nav class='toc'>{toc}</nav></header>"
        f"<main>{body}</main>"
        f"<script type='application/json' id='laf-data'>{_json_island(island)}</script>"
        f"<script>{js}</script></body></html>"
    )
