"""The found-vs-lost frontier (``harness/sweep/frontier.py``) and its report rendering, on verdict dicts."""

from __future__ import annotations

from harness.report.sweep import frontier_section, render, selection_section
from harness.sweep.frontier import frontier, markdown


def _verdict(status, gain, gain_ci, loss, loss_ci):
    """A verdict with the quickstart's two gated quantities: domain gain (min_gain 0.10) and prose bits per byte
    (max_increase 0.10; improvement = -increase)."""
    return {"verdict": status, "rules": [
        {"rule": "domain suites: min gain 0.1", "kind": "min_gain", "margin": 0.1, "required": True, "suite": "domain/tempo-t4", "category": "domain",
         "metric": "acc", "status": "pass" if gain_ci[0] >= 0.1 else "fail", "stats": {"improvement": gain, "ci_low": gain_ci[0], "ci_high": gain_ci[1], "n": 110}},
        {"rule": "general/text: max increase 0.1", "kind": "max_increase", "margin": 0.1, "required": True, "suite": "general/text", "category": "general",
         "metric": "bits_per_byte", "status": "pass" if loss_ci[1] <= 0.1 else "fail",
         "stats": {"improvement": -loss, "ci_low": -loss_ci[1], "ci_high": -loss_ci[0], "n": 60}},
    ]}


POINTS = [{"name": n, "model": f"{n}@1"} for n in ("naive", "replay", "kl", "both", "dominated")]
VERDICTS = {
    "naive@1": _verdict("fail", 0.18, (0.10, 0.26), 0.70, (0.65, 0.74)),
    "replay@1": _verdict("fail", 0.15, (0.07, 0.23), 0.20, (0.17, 0.23)),
    "kl@1": _verdict("fail", 0.08, (0.01, 0.15), 0.05, (0.03, 0.07)),
    "both@1": _verdict("pass", 0.14, (0.11, 0.19), 0.04, (0.02, 0.06)),
    "dominated@1": _verdict("fail", 0.07, (0.00, 0.14), 0.30, (0.25, 0.35)),
}


def test_frontier_marks_the_pareto_front_and_the_passing_points():
    doc = frontier(POINTS, VERDICTS)
    by = {p["name"]: p for p in doc["points"]}
    assert by["naive"]["found"] == {"value": 0.18, "ci_low": 0.10, "ci_high": 0.26, "bound": 0.10, "n": 110}  # no one-sided bound: the CI's end
    assert by["naive"]["lost"]["value"] == 0.70 and by["naive"]["lost"]["ci_low"] == 0.65 and by["naive"]["lost"]["ci_high"] == 0.74
    # naive finds the most, both loses the least among the good finders; kl loses little but 'both' beats it on both axes
    assert sorted(doc["pareto"]) == ["both", "naive", "replay"]
    assert doc["passing"] == ["both"] and doc["closest"]["name"] == "both"
    assert doc["found"]["suite"] == "domain/tempo-t4" and doc["lost"]["metric"] == "bits_per_byte"
    md = markdown(doc)
    assert doc["found"]["unit"] == "points" and doc["found"]["scale"] == 100.0 and doc["lost"]["unit"] == "bits_per_byte"
    assert "| both | +14.0 (+11.0 to +19.0) | +0.040 (+0.020 to +0.060) | yes | PASS |  |" in md.splitlines()
    assert by["naive"]["failed_rules"] == ["general/text: max increase 0.1"] and doc["sentence"] == "Passing: both."


def test_frontier_says_how_close_the_best_point_comes_when_none_passes():
    verdicts = {k: v for k, v in VERDICTS.items() if k != "both@1"}
    doc = frontier([p for p in POINTS if p["name"] != "both"], verdicts)
    assert doc["passing"] == []
    # distance in margins, on the bounds the gate uses: kl's gain lower bound 0.01 is 0.09 short (0.9 margins);
    # replay is 0.03 short and its loss upper bound 0.23 is 0.13 over (1.6 margins); naive 6.4 margins over on lost
    c = doc["closest"]
    assert c["name"] == "kl" and abs(c["found_short_by"] - 0.09) < 1e-9 and c["lost_over_by"] == 0.0
    assert abs(c["estimate_found_short_by"] - 0.02) < 1e-9 and c["estimate_lost_over_by"] == 0.0 and c["other_failed_rules"] == []
    assert doc["sentence"] == ("No point passes. The closest is kl: its domain/tempo-t4 gain's one-sided lower bound +1.0 is 9.0 points short of the "
                               "10.0 margin.")
    assert doc["sentence"] in markdown(doc)


def test_frontier_measures_the_closest_point_on_the_one_sided_bounds_the_gate_decided_on():
    """The quickstart-preserve run's KL 0.3 point: domain +18.2 (two-sided 95 % CI +8.2 to +28.2), one-sided lower
    bound exactly +10.0 (rounded to 0.09999999999999998), prose +0.076 (one-sided upper +0.083). The frontier said
    "+8.2 is 1.8 points short" (the two-sided end); the gate decided on +10.0, on the margin of a strict rule."""
    def real(gain, gain_ci, gain_lb, loss, loss_ci, loss_ub, status):
        v = _verdict(status, gain, gain_ci, loss, loss_ci)
        v["rules"][0]["stats"]["lower_bound"] = gain_lb
        v["rules"][1]["stats"]["lower_bound"] = -loss_ub
        return v

    verdicts = {"kl@1": real(0.18181818181818182, (0.0818, 0.2818), 0.09999999999999998, 0.076, (0.068, 0.084), 0.083, "inconclusive"),
                "naive@1": real(0.19, (0.08, 0.30), 0.10000000000000003, 0.415, (0.389, 0.444), 0.439, "fail")}
    doc = frontier([{"name": "kl", "model": "kl@1"}, {"name": "naive", "model": "naive@1"}], verdicts)
    c = doc["closest"]
    assert c["name"] == "kl" and c["found_short_by"] == 0.0 and c["found_on_margin"] is True and c["lost_over_by"] == 0.0
    assert doc["sentence"] == "No point passes. The closest is kl: its domain/tempo-t4 gain's one-sided lower bound +10.0 is exactly the 10.0 margin, and a gain must be above it."
    by = {p["name"]: p for p in doc["points"]}
    assert by["naive"]["lost"]["bound"] == 0.439 and by["kl"]["found"]["ci_low"] == 0.0818  # the chart keeps the two-sided CI
    # a one-sided bound short of the margin is measured on it, not on the CI's end
    verdicts["kl@1"]["rules"][0]["stats"]["lower_bound"] = 0.095
    c = frontier([{"name": "kl", "model": "kl@1"}], {"kl@1": verdicts["kl@1"]})["closest"]
    assert abs(c["found_short_by"] - 0.005) < 1e-12 and c["found_on_margin"] is False


def test_frontier_without_a_lost_rule_is_none():
    v = {"a@1": {"verdict": "pass", "rules": VERDICTS["naive@1"]["rules"][:1]}}
    assert frontier([{"name": "a", "model": "a@1"}], v) is None


def test_report_renders_the_frontier_and_survives_hostile_values():
    html = frontier_section(frontier(POINTS, VERDICTS))
    assert html.count("<circle") == 5 and "pass region" in html
    evil = {"points": [{"name": "<script>alert(1)</script>", "found": {"value": float("nan")}, "lost": {"value": 1}},
                       {"name": "<img src=x>", "found": {"value": 0.1, "ci_low": "x", "ci_high": None}, "lost": {"value": 0.2}, "verdict": "<b>"},
                       "junk", None], "found": "nope", "lost": [], "passing": [1, "<i>"], "closest": {"name": "<s>"}}
    out = frontier_section(evil)
    assert "<script>" not in out and "<img" not in out and "<b>" not in out and "<s>" not in out
    assert out.count("<circle") == 1
    assert render({"points": [], "frontier": evil, "selection": {"x": {"curve": [{"step": 1, "rules": "bad"}], "chosen_step": 1}}})


def test_selection_curve_chart_outlines_the_chosen_step():
    rules = lambda g, l: [{"kind": "min_gain", "improvement": g, "ci_low": g - 0.05, "ci_high": g + 0.05},  # noqa: E731
                          {"kind": "max_increase", "improvement": -l, "ci_low": -l - 0.02, "ci_high": -l + 0.02}]
    curve = [{"step": 10, "verdict": "fail", "rules": rules(0.05, 0.1)}, {"step": 20, "verdict": "fail", "rules": rules(0.12, 0.3)}]
    out = selection_section({"a@1": curve}, {"a@1": 20})
    assert out.count("<circle") == 2 and 'stroke="#000"' in out and "<polyline" in out
