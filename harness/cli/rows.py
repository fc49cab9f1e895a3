"""Row builders: each turns one document into a :class:`~harness.present.table.Table` (column names and rows of
plain strings and numbers). The CLI renders them as a rich table on a terminal and as Markdown anywhere else; tests
read the rows, not the rendered text.

Numbers stay numbers (the document's own values, never rounded here); a cell that is a phrase in a unit that
changes from row to row (a change with its CI in points or bits per byte) is the text the document's own
formatter writes. Imports of other stages are inside the builders: this module is imported by the CLI only and
stays free of the model stack."""

from __future__ import annotations

from typing import Any

from ..present.table import Table


def results_rows(doc: Any) -> Table:
    """A results document (:class:`harness.results.ResultsDoc`): one row per suite and metric (primary first), two
    columns per model: the value and its standard error."""
    models = list(doc.models)
    cols = ["suite", "category", "metric", "primary", "n"]
    for m in models:
        cols += [m, f"{m} ±"]
    t = Table(cols, formats={c: ".4f" for c in cols[5:]}, right={"n", *cols[5:]})
    for suite, meta in doc.suites.items():
        metrics = sorted(doc.results[models[0]].get(suite, {}), key=lambda x: (x != meta.primary_metric, x)) if models else []
        for metric in metrics:
            cells: list = []
            for m in models:
                r = doc.results[m].get(suite, {}).get(metric, {})
                v, se = r.get("value"), r.get("stderr")
                cells += [v, se if isinstance(se, (int, float)) and not isinstance(se, bool) else None]
            n = doc.results[models[0]][suite][metric].get("n")
            t.add(suite, meta.category, metric, metric == meta.primary_metric, n, *cells)
    t.notes.append("value and standard error per model; primary: the suite's primary metric (the one gates read by default)")
    return t


def verdict_rows(v: Any) -> Table:
    """A verdict (:class:`harness.gate.verdict.Verdict`): one row per rule, the table of the gate's Markdown summary
    (built by the gate, which writes that summary: :func:`harness.gate.artifacts.verdict_table`)."""
    from ..gate.artifacts import verdict_table

    return verdict_table(v)


def suites_rows(rows: list[dict]) -> Table:
    """``laf suites list``: the listing's rows (name, category, type, source, description)."""
    t = Table(["suite", "category", "type", "source", "description"])
    for r in rows:
        t.add(r["name"], r["category"], r["type"], r["source"], r["description"])
    t.notes.append("also: lm_eval:<task> for any task registered in lm-eval (hub data)")
    return t


def compare_rows(doc: dict) -> Table:
    """``compare.json``: a row per gated quantity, one column per candidate (best first), then the Pareto front, the
    Holm-adjusted domain p and each candidate's gate verdict."""
    from ..gate.compare import format_cell
    from ..registry.merge_info import merge_label

    ranking = doc["ranking"]
    heads = []
    for r in ranking:
        name = r["candidate"] if not r.get("resolved_from") else f"{r['candidate']} (from {r['resolved_from']})"
        tag = merge_label(r.get("merge"))
        heads.append(f"#{r['rank']} {name}" + (f" ({tag})" if tag else ""))
    t = Table(["change (CI)", "unit", *heads], formats={h: ".3g" for h in heads})
    for col in doc.get("columns") or []:
        better = "closer is better" if col.get("better") == "closer to the ideal" else f"{col.get('better')} is better"
        what = f"{col['key']} {col.get('metric')}" + (" (distance to ideal)" if str(col.get("shown_as", "")).startswith("change in distance") else "")
        t.add(what, f"{col.get('unit')}, {better}", *[format_cell((r.get("columns") or {}).get(col["key"])) for r in ranking])
    t.add("Pareto front", "", *[bool(r["pareto"]) for r in ranking])
    t.add("domain p (Holm)", "", *[r.get("domain_p_holm") for r in ranking])
    if any("verdict" in r for r in ranking):
        t.add("gate", "", *[None if r.get("verdict") is None else f"{str(r['verdict']).upper()} (exit {r.get('exit_code')})" for r in ranking])
    for r in ranking:
        if r.get("failed_rules"):
            t.notes.append(f"{r['candidate']} {str(r.get('verdict')).upper()}, rules not passed: {'; '.join(r['failed_rules'])}")
    p = doc.get("pareto_on") or {}
    if p:
        t.notes.append(f"Pareto front on: {', '.join(p.get('quantities', []))} ({p.get('source')}); "
                       f"changes are candidate - base with {round(100 * doc.get('confidence', 0.95))}% CIs")
    return t


def calibration_rows(doc: dict) -> Table:
    """``calibration.json``: per suite the run-to-run change with its CI, flipped items, MDE and suggested margin."""
    from ..results import fmt_change, is_proportion

    t = Table(["suite", "metric", "n", "change (CI)", "flipped items", "MDE", "suggested margin"], right={"n"})
    for s, r in doc["suites"].items():
        prop = is_proportion(r["metric"], r["base"], r["candidate"])
        flips = None if r["flip_rate"] is None else f"{100 * r['flip_rate']:.1f}%"
        t.add(s, r["metric"], r["n"], f"{fmt_change(r['improvement'], prop)} ({fmt_change(r['ci_low'], prop)} to {fmt_change(r['ci_high'], prop)})",
              flips, fmt_change(r["minimum_detectable_effect"], prop).lstrip("+"), fmt_change(r["suggested_margin"], prop).lstrip("+"))
    return t


def _pts(v) -> str:
    return "–" if v is None else f"{100 * v:+.1f}"


def sweep_rows(summary: dict) -> Table:
    """``sweep.json``'s points: cost (trainable parameters, adapter size, time, tokens, memory) and the pooled domain
    and general changes in points with their 95 % CIs."""
    cols = ["point", "trainable", "%", "adapter MB", "train s", "tokens", "peak MB", "eval s", "domain gain", "general change", "verdict"]
    t = Table(cols, title="sweep points (gains in points of the pooled domain / general items, 95 % CI)",
              formats={"trainable": ",", "%": ".3g", "adapter MB": ".2f", "train s": ".1f", "tokens": ",", "peak MB": ".0f", "eval s": ".1f"},
              right={"trainable", "%", "adapter MB", "train s", "tokens", "peak MB", "eval s"})
    for p in summary["points"]:
        c, d, g = p["cost"], p["domain"] or {}, p["general"] or {}
        size = c.get("adapter_bytes")
        t.add(p["name"], c.get("trainable_parameters"), c.get("trainable_percent"), None if size is None else size / 1e6, c.get("train_time_s"),
              c.get("tokens"), c.get("peak_memory_mb"), c.get("eval_time_s"),
              f"{_pts(d.get('improvement'))} ({_pts(d.get('ci_low'))}..{_pts(d.get('ci_high'))})",
              f"{_pts(g.get('improvement'))} ({_pts(g.get('ci_low'))}..{_pts(g.get('ci_high'))})", p.get("verdict"))
    return t


def frontier_rows(front: dict) -> Table:
    """The sweep's found-vs-lost frontier (``sweep.json`` ``frontier``): each point's gain and loss with CIs."""
    from ..sweep.frontier import cell

    f, lo = front["found"], front["lost"]
    t = Table(["point", "found (95 % CI)", "lost (95 % CI)", "Pareto", "verdict"],
              title=f"found vs lost: {f['suite']} {f['metric']} gain in {f['unit']} and {lo['suite']} {lo['metric']} increase in {lo['unit']}")
    for r in front["points"]:
        t.add(str(r["name"]), cell(r["found"], f), cell(r["lost"], lo), "yes" if r["pareto"] else "", str(r["verdict"]))
    if front.get("sentence"):
        t.notes.append(str(front["sentence"]))
    return t


def history_runs_rows(rows: list[dict]) -> Table:
    """``laf history list``: recorded runs, newest first."""
    t = Table(["recorded", "kind", "candidate", "baseline", "verdict", "run", "commit"])
    for r in rows:
        t.add(str(r["recorded_at"])[:19], r["kind"], r.get("candidate"), r.get("baseline"), r.get("verdict"), str(r["run_id"])[:12],
              None if not r.get("git_commit") else str(r["git_commit"])[:12])
    return t


def trend_rows(doc: dict) -> Table:
    """``laf history show``: a row per version, per suite its metric value with the 95 % CI."""
    from ..results import fmt_value, is_proportion

    suites = list(dict.fromkeys(s for v in doc["versions"] for s in v["suites"]))
    t = Table(["version", "released", "verdict (vs)", *suites])
    for v in doc["versions"]:
        rel = v.get("released")
        cells: list = []
        for s in suites:
            x = v["suites"].get(s)
            if not x or x.get("value") is None:
                cells.append(None)
                continue
            prop = is_proportion(str(x.get("metric")), x.get("value"), x.get("ci_low"), x.get("ci_high"))
            cells.append(f"{x['metric']} {fmt_value(x['value'], prop)} ({fmt_value(x['ci_low'], prop)}–{fmt_value(x['ci_high'], prop)})")
        t.add(str(v["candidate"]), "yes " + str(rel["released_at"])[:10] if rel else "", f"{v.get('verdict') or '-'} (vs {v.get('baseline')})", *cells)
    return t


def registry_rows(rows: list[dict]) -> Table:
    """``laf registry list``: every readable adapter version (broken ones are reported apart)."""
    t = Table(["ref", "created", "base", "kind", "steps", "eval loss"], formats={"eval loss": ".4f"}, right={"steps", "eval loss"})
    for r in rows:
        if "broken" in r:
            continue
        ev = r.get("final_eval_loss")
        t.add(r["ref"], r.get("created"), r.get("base"), r.get("kind"), r.get("steps"),
              ev if isinstance(ev, (int, float)) and not isinstance(ev, bool) else None)
    return t


def doctor_rows(checks: list[dict]) -> Table:
    """``laf doctor``: one row per check."""
    t = Table(["check", "status", "detail"])
    for c in checks:
        t.add(c["name"], "ok" if c["ok"] else "PROBLEM", c["detail"])
    return t


def fields_rows(pairs: list[tuple[str, Any]]) -> Table:
    """A document shown as field / value pairs (``laf models show``)."""
    t = Table(["field", "value"])
    for k, v in pairs:
        t.add(k, v)
    return t


def parity_rows(doc: dict) -> Table:
    """``parity.json``'s pairs: per form compared with the adapter on the fly, the KL at the scored positions, top-1
    agreement, mean |delta log-likelihood| and flipped predictions."""
    t = Table(["reference", "form", "KL mean", "KL p99", "top-1 agreement", "mean |dLL|", "flips", "items"],
              formats={"KL mean": ".3g", "KL p99": ".3g", "top-1 agreement": ".1%", "mean |dLL|": ".3g"},
              right={"KL mean", "KL p99", "top-1 agreement", "mean |dLL|", "flips", "items"})
    for p in doc["pairs"]:
        t.add(p["reference"], p["form"], p["kl_mean"], p["kl_p99"], p["top1_agreement"], p["mean_abs_delta_ll"], p["flips"], p["items"])
    return t


def parity_metric_rows(doc: dict) -> Table:
    """``parity.json``: every metric's paired change per pair and suite, with its CI."""
    cols = ["form", "suite", "metric", "base", "candidate", "delta", "CI low", "CI high"]
    t = Table(cols, formats={"base": ".4g", "candidate": ".4g", "delta": "+.4g", "CI low": "+.4g", "CI high": "+.4g"}, right=set(cols[3:]))
    for p in doc["pairs"]:
        for s, v in p["suites"].items():
            for m, d in v["metrics"].items():
                t.add(p["form"], s, m, d["base"], d["candidate"], d["delta"], d["ci_low"], d["ci_high"])
    return t


def diversity_items_rows(doc: dict) -> Table:
    """``diversity.json``'s items: per suite the items every candidate answered (paired) and the dropped ones."""
    t = Table(["suite", "paired items", "dropped", "note"], right={"paired items", "dropped"})
    items = doc.get("items")
    if isinstance(items, dict) and "skipped" not in items:
        for s, v in items.items():
            t.add(s, v["paired"], sum(v.get("dropped", {}).values()), v.get("skipped") or "")
    return t


def similarity_rows(doc: dict, key: str, sub: str, name: str, top: int = 5) -> Table | None:
    """A pairwise measure of ``diversity.json`` (``kappa``/``all``, ``weight_cosine``/``overall``, ``cka``/``mean``):
    its ``top`` most alike pairs, most alike first; None when the document has no such matrix."""
    m = (doc.get(key) or {}).get(sub)
    if not isinstance(m, dict) or "values" not in m:
        return None
    labels = m["labels"]
    pairs = [(m["values"][i][j], labels[i], labels[j]) for i in range(len(labels)) for j in range(i + 1, len(labels))]
    shown = sorted(pairs, key=lambda p: -(p[0] if p[0] is not None else -9))[:top]
    t = Table(["candidate", "other", name], title=f"{name} (most alike first)", formats={name: "+.3f"}, right={name})
    for v, a, b in shown:
        t.add(a, b, v)
    return t


def mergeability_rows(doc: dict, top: int = 10) -> Table:
    """``diversity.json``'s predicted mergeability: the scored pairs (best first, as the document orders them)."""
    t = Table(["pair", "score", "prediction"], title="predicted mergeability (score: mean of the measured signals, see diversity.json 'rule')",
              formats={"score": ".3f"}, right={"score"})
    for r in [r for r in (doc.get("predictions") or {}).get("pairs", []) if r.get("score") is not None][:top]:
        t.add(" + ".join(r["pair"]), r["score"], r["prediction"])
    return t
