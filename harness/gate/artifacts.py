"""CI artifacts of a verdict: verdict.json, JUnit XML (one testcase per rule), a Markdown summary."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

from ..io import atomic_write_json, atomic_write_text
from ..present import Table, markdown_table, md_code, md_escape
from ..results import fmt_change, fmt_value
from .sentences import delta_is_proportion
from .verdict import Verdict

MARK = {"pass": "PASS", "fail": "FAIL", "inconclusive": "INCONCLUSIVE"}
ICON = {"pass": "✅", "fail": "❌", "inconclusive": "⚠️"}


def write_verdict(v: Verdict, path: Path) -> Path:
    return atomic_write_json(path, v.to_dict())


def junit_xml(v: Verdict) -> str:
    cases = v.rules
    suite = ET.Element("testsuite", {
        "name": "laf gate",
        "tests": str(len(cases)),
        "failures": str(sum(1 for r in cases if r.required and r.status == "fail")),
        "errors": "0",
        "skipped": str(sum(1 for r in cases if not r.required or r.status == "inconclusive")),
        "timestamp": v.created,
    })
    props = ET.SubElement(suite, "properties")
    for k, val in (("verdict", v.status), ("baseline", v.baseline["ref"]), ("baseline_kind", v.baseline_kind), ("candidate", v.candidate["ref"]),
                   ("policy", v.policy.get("source", ""))):
        ET.SubElement(props, "property", {"name": k, "value": str(val)})
    for r in cases:
        case = ET.SubElement(suite, "testcase", {"classname": f"laf.{r.category}", "name": f"{r.rule} [{r.suite} {r.metric}]"})
        if r.status == "fail" and r.required:
            el = ET.SubElement(case, "failure", {"message": r.message[:500], "type": "regression" if r.kind != "min_gain" else "insufficient_gain"})
            el.text = r.message
        elif r.status == "fail":
            ET.SubElement(case, "skipped", {"message": "advisory rule failed: " + r.message[:480]})
        elif r.status == "inconclusive":
            if v.policy.get("inconclusive_as") == "fail" and r.required:
                el = ET.SubElement(case, "failure", {"message": r.message[:500], "type": "inconclusive"})
                el.text = r.message
            else:
                ET.SubElement(case, "skipped", {"message": "inconclusive: " + r.message[:480]})
        out = ET.SubElement(case, "system-out")
        out.text = r.message
    ET.indent(suite)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(suite, encoding="unicode") + "\n"


def verdict_table(v: Verdict) -> Table:
    """One row per rule: the status mark, the rule (advisory ones say so), the paired baseline and candidate values,
    the change with its CI, the margin and the minimum detectable effect, each in the metric's own unit (points for
    shares of items). The summary below is this table; ``harness.cli.rows.verdict_rows`` gives it to the CLI."""
    t = Table(["", "rule", "suite", "metric", "baseline", "candidate", "change (CI)", "margin", "MDE"])
    for r in v.rules:
        d = r.delta
        if d is None:
            t.add(ICON[r.status], r.rule, r.suite, r.metric, "", "", "", f"{r.margin:g}", "")
            continue
        prop = delta_is_proportion(d)
        t.add(ICON[r.status], r.rule + ("" if r.required else " (advisory)"), r.suite, r.metric, fmt_value(d.base, prop), fmt_value(d.candidate, prop),
              f"{fmt_change(d.improvement, prop)} ({fmt_change(d.ci_low, prop)} to {fmt_change(d.ci_high, prop)})",
              fmt_change(r.margin, prop).lstrip("+"), fmt_change(r.mde or 0, prop).lstrip("+"))
    return t


def markdown_summary(v: Verdict) -> str:
    lines = [f"## {ICON[v.status]} lost-and-found gate: **{MARK[v.status]}**", ""]
    lines.append(f"Baseline {md_code(v.baseline['ref'])} ({md_escape(v.baseline['model'])}) vs candidate {md_code(v.candidate['ref'])} ({md_escape(v.candidate['model'])}), "
                 f"policy {md_code(v.policy.get('source', ''))}, {int(v.policy['confidence'] * 100)}% confidence.")
    lines.append("")
    for w in v.warnings:
        lines += [f"> **Warning:** {md_escape(w)}", ""]
    regressions = v.regressions
    if regressions:
        lines.append("### What got worse")
        for r in regressions:
            lines.append(f"- {ICON['fail']} **{md_escape(r.suite)}** ({md_escape(r.metric)}): {md_escape(r.message)}")
        lines.append("")
    inconc = [r for r in v.rules if r.status == "inconclusive"]
    if inconc:
        lines.append("### Not decided (needs more items or a wider margin)")
        for r in inconc:
            lines.append(f"- {ICON['inconclusive']} **{md_escape(r.suite)}** ({md_escape(r.metric)}): {md_escape(r.message)}")
        lines.append("")
    table = verdict_table(v)
    lines += markdown_table(table.columns, table.text_rows())
    lines.append("")
    lines.append("Change is oriented so that positive is better; CI is two-sided. MDE: minimum detectable effect at 80% power for this suite size.")
    return "\n".join(lines) + "\n"


def write_artifacts(v: Verdict, verdict_path: Path, junit: Path | None, summary: Path | None) -> None:
    """verdict.json, and the JUnit XML and Markdown summary where paths are given (each written atomically)."""
    write_verdict(v, verdict_path)
    if junit:
        atomic_write_text(junit, junit_xml(v))
    if summary:
        atomic_write_text(summary, markdown_summary(v))
