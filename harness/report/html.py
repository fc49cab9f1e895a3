"""Render the report dict as one self-contained HTML file (CSS, JS and SVG inline, no requests)."""

from __future__ import annotations

import json
from html import escape
from importlib import resources

from ..results import MetricMeta, fmt_value, is_proportion
from . import svg

CATEGORY_ORDER = ("domain", "general", "hallucination", "bias")


def _asset(name: str) -> str:
    return resources.files("harness.report").joinpath("assets", name).read_text(encoding="utf-8")


def _json_island(obj) -> str:
    """JSON that cannot end the <script> element or open a comment, whatever the data holds."""
    s = json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str)
    return s.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")


def _fmt(v, prop: bool = False) -> str:
    return fmt_value(v, prop) if v is None or isinstance(v, (int, float)) else escape(str(v))


def _kv(rows: list[tuple[str, object]]) -> str:
    return '<div class="kv">' + "".join(f"<div>{escape(k)}</div><div>{v if isinstance(v, str) and v.startswith('<') else escape(str(v))}</div>" for k, v in rows) + "</div>"


def _section(id_: str, title: str, body: str) -> str:
    return f'<section id="{id_}"><h2>{escape(title)}</h2>{body}</section>' if body else ""


def _warnings(d: dict) -> str:
    """Forced base mismatches, shown above everything else whether or not the run was gated."""
    out = []
    for m, info in d["models"].items():
        a = info.get("adapter") or {}
        if a.get("forced_base_mismatch"):
            out.append(f'<div class="banner inconclusive"><b>Warning:</b> adapter <b>{escape(m)}</b> was trained on another base model '
                       f'(fingerprint <code>{escape(str(a.get("trained_on"))[:12])}…</code>) and was scored on this one only because the '
                       f'evaluation was forced (<code>--force-base-mismatch</code>): its numbers do not describe the model it was trained as.</div>')
    return "".join(out)


def _verdict(d: dict) -> str:
    v = d["verdict"]
    cand = d["candidate"]
    if not v:
        who = f"{escape(d['baseline'])} vs {escape(cand)}" if cand else escape(d["baseline"])
        return (f'<div class="banner none"><div class="big">No gate verdict</div><div>{who}: run <code>laf gate</code> on this folder '
                f"to decide pass / fail under a policy. The paired changes below are still computed on the same items.</div></div>")
    rows = []
    for r in v["rules"]:
        pill = f'<span class="pill {r["status"]}">{r["status"].upper()}</span>' + ("" if r["required"] else ' <span class="pill adv">advisory</span>')
        rows.append(f"<tr><td>{pill}</td><td>{escape(r['rule'])}<div class='muted'>{escape(r['suite'])} · {escape(r['metric'])}</div></td><td>{escape(r['message'])}</td></tr>")
    lost = [r for r in v["rules"] if r["status"] == "fail"]
    head = {"pass": "Ship it: every required rule passes.", "fail": f"Do not ship: {len(lost)} rule(s) failed.", "inconclusive": "Not decided: a required rule is inconclusive."}[v["verdict"]]
    return (f'<div class="banner {v["verdict"]}"><div class="big">{v["verdict"].upper()}</div><div>{escape(head)} '
            f'Baseline <b>{escape(v["baseline"]["model"])}</b> vs candidate <b>{escape(v["candidate"]["model"])}</b>, policy <code>{escape(str(v["policy"].get("source")))}</code>, '
            f'{int(v["policy"]["confidence"] * 100)}% confidence.</div></div>'
            f'<table><tr><th>verdict</th><th>rule</th><th>numbers</th></tr>{"".join(rows)}</table>')


def _found_lost(d: dict) -> str:
    s = d.get("summaries")
    if not s:
        return ""
    prop_rows, other_rows = [], []
    statuses = {}
    for r in (d["verdict"] or {}).get("rules", []):
        statuses.setdefault(r["suite"], r["status"])
    order = sorted(s["suites"].items(), key=lambda kv: (CATEGORY_ORDER.index(kv[1]["category"]) if kv[1]["category"] in CATEGORY_ORDER else 9, kv[0]))
    for name, st in order:
        meta = MetricMeta.from_dict(d["suites"][name]["metrics"][st["metric"]])
        row = {"label": name, "sublabel": f"{st['category']} · {st['metric']}" + (f" (ideal {meta.ideal:g})" if meta.ideal is not None else ""), "status": statuses.get(name)}
        if is_proportion(st["metric"], st["base"], st["candidate"]):
            prop_rows.append({**row, "value": 100 * st["improvement"], "lo": 100 * st["ci_low"], "hi": 100 * st["ci_high"]})
        elif st["base"]:
            scale = 100 / abs(st["base"])
            other_rows.append({**row, "value": scale * st["improvement"], "lo": scale * st["ci_low"], "hi": scale * st["ci_high"]})
    out = [svg.forest(prop_rows, " pt", f"Found vs lost: paired change of {d['candidate']} against {d['baseline']} (points, {int(100 * _conf(d))}% CI; right is better)")]
    if other_rows:
        out.append(svg.forest(other_rows, "%", "Other metrics: change relative to the baseline (%, right is better)"))
    cats = s.get("categories") or {}
    if cats:
        rows = "".join(f"<tr><td>{escape(c)}</td><td>{escape(', '.join(v['suites']))}</td><td class='num'>{v['n']}</td><td class='num'>{100 * v['improvement']:+.1f}</td>"
                       f"<td class='num'>{100 * v['ci_low']:+.1f} to {100 * v['ci_high']:+.1f}</td></tr>" for c, v in cats.items())
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
        out.append(f"<h3>{escape(cat.capitalize())}</h3>")
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
                rows.append(f"<tr><td>{escape(metric)}{' *' if metric == meta['primary_metric'] else ''}</td><td class='muted'>{escape(direction)}</td>{cells}</tr>")
                if mm.ideal is not None and isinstance(vals[0], (int, float)):
                    seen = [v for v in vals if isinstance(v, (int, float))] + [mm.ideal]
                    if mm.scale:
                        lo, hi = mm.scale
                    elif all(0 <= v <= 1 for v in seen):
                        lo, hi = 0.0, 1.0
                    else:  # unbounded (a log-likelihood difference): a symmetric window around the ideal that holds every value
                        r = max(abs(v - mm.ideal) for v in seen) * 1.2 or 1.0
                        lo, hi = mm.ideal - r, mm.ideal + r
                    gauges.append(f"<div class='muted'>{escape(metric)}</div>" + svg.ideal_gauge(f"{n} {metric}", mm.ideal, vals[0], vals[1] if len(vals) > 1 else None, lo, hi))
            head = "".join(f"<th class='num'>{escape(m)}</th>" for m in models)
            out.append(f"<div><b>{escape(n)}</b> <span class='muted'>{escape(meta.get('description', ''))}</span>"
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
            rows.append(f"<tr><td>{escape(metric)}{' *' if metric == meta['primary_metric'] else ''}</td>{''.join(cells)}</tr>")
        n_items = next(iter(d["results"].get(models[0], {}).get(n, {}).values()), {}).get("n", "")
        head = "".join(f"<th class='num'>{escape(m)}</th>" for m in models)
        out.append(f"<h3>{escape(n)} <span class='muted'>({escape(meta['category'])}, {n_items} items, {escape(meta.get('source', ''))})</span></h3>"
                   f"<table><tr><th>metric</th>{head}</tr>{''.join(rows)}</table>")
    return "".join(out) + "<p class='muted'>* primary metric. ± is lm-eval's standard error.</p>"


def _drilldown(d: dict) -> str:
    st = d["item_stats"]
    note = f"{st['items']} items; {st['lost']} lost (base right, adapter wrong), {st['found']} found (base wrong, adapter right)."
    if st["truncated"]:
        note += f" The report keeps every flip and {st['included']} items in all, to stay small; the full records are in records.jsonl."
    default = "flips" if d["candidate"] else "all"
    opts = "".join(f'<option value="{v}"{" selected" if v == default else ""}>{escape(t)}</option>' for v, t in
                   (("flips", "all flips"), ("lost", "lost (base right → adapter wrong)"), ("found", "found (base wrong → adapter right)"), ("same", "unchanged"), ("all", "every item")))
    return (f"<p class='muted'>{escape(note)}</p>"
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
    curve = t.get("curve") or []
    series = [{"name": "train loss", "points": [(c["step"], c["loss"]) for c in curve if c.get("loss") is not None], "color": svg.BLUE}]
    ev = [(c["step"], c["eval_loss"]) for c in curve if c.get("eval_loss") is not None]
    if ev:
        series.append({"name": "held-out loss", "points": ev, "color": svg.AMBER, "dots": True})
    data = t.get("data") or {}
    cfg = t.get("config") or {}
    lora = cfg.get("lora") or {}
    rows = [
        ("adapter", t.get("ref")), ("kind", t.get("kind")), ("trained", t.get("created")),
        ("trainable parameters", f"{t.get('trainable_parameters', 0):,} of {t.get('total_parameters', 0):,} ({t.get('trainable_percent')} %)"),
        ("LoRA", f"r={lora.get('r')}, alpha={lora.get('alpha')}, dropout={lora.get('dropout')}, targets={lora.get('target_modules')}, rsLoRA={lora.get('rslora')}, DoRA={lora.get('dora')}"),
        ("steps / tokens", f"{t.get('steps')} steps, {t.get('tokens_seen', 0):,} tokens ({t.get('supervised_tokens_seen', 0):,} supervised)"),
        ("time / peak memory", f"{t.get('train_time_s')} s training ({t.get('wall_time_s')} s wall), {t.get('peak_memory_mb')} MB"),
        ("final losses", f"train {t.get('final_train_loss')}, held-out {t.get('final_eval_loss')}"),
        ("data", f"{data.get('path')}: {data.get('examples')} examples ({data.get('schema')}), {data.get('dropped')} dropped {data.get('dropped_reasons') or ''}, sha256 {str(data.get('content_sha256'))[:16]}…"),
        ("seed", t.get("seed")),
    ]
    return svg.line_chart(series, "Training loss") + _kv(rows)


def _curation(d: dict) -> str:
    c = d.get("curation")
    if not c:
        return ""
    counts = c.get("counts", {})
    rows = "".join(f"<tr><td>{escape(k)}</td><td class='num'>{v}</td></tr>" for k, v in counts.items())
    cont = c.get("contamination") or {}
    cont_rows = "".join(f"<tr><td>{escape(s)}</td><td class='num'>{v.get('items')}</td><td class='num'>{v.get('contaminated_items')}</td><td class='num'>{100 * (v.get('share') or 0):.2f}%</td></tr>"
                        for s, v in (cont.get("suites") or {}).items())
    out = f"<table><tr><th>rule</th><th class='num'>count</th></tr>{rows}</table>"
    if cont_rows:
        out += (f"<h3>Contamination ({cont.get('ngram', 13)}-gram overlap with training data)</h3>"
                f"<table><tr><th>suite</th><th class='num'>items</th><th class='num'>contaminated</th><th class='num'>share</th></tr>{cont_rows}</table>")
    fp = c.get("fingerprints") or {}
    if fp:
        out += _kv([(k, v) for k, v in fp.items()])
    return out


def _compare(d: dict) -> str:
    c = d.get("compare")
    if not c:
        return ""
    cats = c["categories"]
    head = "".join(f"<th class='num'>{escape(cat)} change (CI)</th>" for cat in cats)
    rows = []
    for r in c["ranking"]:
        cells = "".join(
            (f"<td class='num'>{100 * r['categories'][cat]['improvement']:+.1f} ({100 * r['categories'][cat]['ci_low']:+.1f} to {100 * r['categories'][cat]['ci_high']:+.1f})</td>"
             if cat in r["categories"] else "<td class='num'>–</td>") for cat in cats)
        p = r.get("domain_p_holm")
        rows.append(f"<tr><td class='num'>{r['rank']}</td><td>{escape(r['candidate'])}</td>{cells}<td>{'yes' if r['pareto'] else ''}</td>"
                    f"<td class='num'>{'–' if p is None else f'{p:.3g}'}</td><td>{escape(r.get('verdict', ''))}</td></tr>")
    pts = [{"label": r["candidate"], "x": r["categories"].get("domain", {}).get("improvement", 0.0), "y": r["categories"].get("general", {}).get("improvement", 0.0), "front": r["pareto"]} for r in c["ranking"]]
    w = c["winner"]
    return (f"<table><tr><th class='num'>#</th><th>candidate</th>{head}<th>Pareto</th><th class='num'>domain p (Holm)</th><th>gate</th></tr>{''.join(rows)}</table>"
            f"<p><b>Winner:</b> {escape(str(w.get('candidate')))}: {escape(w.get('reason', ''))}</p>" + svg.pareto(pts, "Domain gain against general change (Pareto front dashed)"))


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
        rows.append(("gate policy", "<pre>" + escape(json.dumps(pol, indent=1)) + "</pre>"))
    t = d.get("training")
    if t and t.get("config"):
        rows.append(("training config", "<pre>" + escape(json.dumps(t["config"], indent=1)) + "</pre>"))
        rows.append(("training packages", ", ".join(f"{k} {val}" for k, val in (t.get("packages") or {}).items() if val)))
        rows.append(("training hardware", json.dumps(t.get("hardware"))))
    rows.append(("report generated", d["generated"]))
    return _kv(rows)


def render_html(d: dict) -> str:
    title = f"lost-and-found report: {d['candidate'] or d['baseline']}"
    island = {"items": d["items"], "suites": list(d["suites"]), "models": {"base": d["baseline"], "candidate": d["candidate"]}}
    sections = [
        ("verdict", "Verdict", _warnings(d) + _verdict(d)),
        ("found-lost", "What the adapter found, what the model lost", _found_lost(d)),
        ("probes", "Truthfulness and fairness", _probe_panels(d)),
        ("suites", "Per-suite results", _suite_tables(d)),
        ("items", "Items that flipped", _drilldown(d)),
        ("training", "Training", _training(d)),
        ("curation", "Data curation", _curation(d)),
        ("compare", "Candidates compared", _compare(d)),
        ("audit", "Audit trail", _audit(d)),
    ]
    toc = "".join(f'<a href="#{i}">{escape(t)}</a>' for i, t, b in sections if b)
    body = "".join(_section(i, t, b) for i, t, b in sections)
    csp = "default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:"
    return (
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
        f"<meta http-equiv='Content-Security-Policy' content=\"{csp}\">"
        f"<meta name='viewport' content='width=device-width, initial-scale=1'><title>{escape(title)}</title>"
        f"<style>{_asset('report.css')}</style></head><body>"
        f"<header class='top'><h1>{escape(title)}</h1><div class='muted'>run {escape(d['run_dir'])} · baseline {escape(d['baseline'])}"
        f"{' · candidate ' + escape(d['candidate']) if d['candidate'] else ''} · generated {escape(d['generated'])}</div><nav class='toc'>{toc}</nav></header>"
        f"<main>{body}</main>"
        f"<script type='application/json' id='laf-data'>{_json_island(island)}</script>"
        f"<script>{_asset('report.js')}</script></body></html>"
    )
