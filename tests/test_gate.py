"""Gate and compare: statistical calibration by simulation, verdicts, artifacts, bad inputs."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import numpy as np
import pytest
import yaml
from scipy import stats as sps

from harness.gate.policy import Rule
from harness.gate.rules import decide
from harness.stats import get_aggregation, holm, mcnemar_exact, paired_delta
from tests.conftest import assert_clean_error as _err
from tests.conftest import run_cli
from tests.synthetic import suite_meta, write_run

MEAN = get_aggregation("mean")


def simulate_pair(rng, n, p_base_only, p_cand_only, p_both=0.6):
    """Per-item outcomes of two models with the given discordance (a population model)."""
    u = rng.random(n)
    base = np.where(u < p_both, 1, 0)
    cand = base.copy()
    bo = (u >= p_both) & (u < p_both + p_base_only)
    co = (u >= p_both + p_base_only) & (u < p_both + p_base_only + p_cand_only)
    base[bo], cand[bo] = 1, 0
    base[co], cand[co] = 0, 1
    return base.tolist(), cand.tolist()


# ---------------------------------------------------------------- calibration by simulation


def test_false_fail_rate_under_the_null_is_at_most_alpha():
    """Identical models up to noise (symmetric flips), margin 0: the gate fails at most alpha of the time."""
    rng = np.random.default_rng(1)
    rule = Rule(category="general", max_drop=0.0)
    fails = 0
    for sim in range(1000):
        a, b = simulate_pair(rng, 200, 0.05, 0.05)
        d = paired_delta(a, b, MEAN, confidence=0.95, n_resamples=2000, seed=sim)
        fails += decide(rule, d, 30) == "fail"
    assert fails / 1000 <= 0.05, f"false-fail rate {fails / 1000:.3f} > alpha"


def test_planted_regressions_are_caught_at_the_predicted_power():
    rng = np.random.default_rng(2)
    n, q, delta, margin = 300, 0.10, 0.04, 0.0
    p_bo, p_co = q / 2 + delta / 2, q / 2 - delta / 2
    se = np.sqrt((p_bo + p_co - delta**2) / n)
    predicted = sps.norm.cdf((delta - margin) / se - sps.norm.ppf(0.95))
    rule = Rule(category="general", max_drop=margin)
    caught = 0
    for sim in range(1000):
        a, b = simulate_pair(rng, n, p_bo, p_co)
        d = paired_delta(a, b, MEAN, confidence=0.95, n_resamples=2000, seed=sim)
        caught += decide(rule, d, 30) == "fail"
    assert abs(caught / 1000 - predicted) < 0.05, f"power {caught / 1000:.3f}, predicted {predicted:.3f}"


@pytest.mark.parametrize("kind", ["binary", "continuous"])
def test_bootstrap_ci_coverage_is_within_two_points_of_nominal(kind):
    rng = np.random.default_rng(3)
    covered, sims = 0, 1000
    for sim in range(sims):
        if kind == "binary":
            true = 0.03
            a, b = simulate_pair(rng, 300, 0.06, 0.09)
        else:
            true = 0.2
            a = rng.normal(0, 1, 150)
            b = a + rng.normal(true, 1.0, 150)
            a, b = a.tolist(), b.tolist()
        d = paired_delta(a, b, MEAN, confidence=0.95, n_resamples=2000, seed=sim)
        covered += d.ci_low <= true <= d.ci_high
    assert abs(covered / sims - 0.95) <= 0.02, f"coverage {covered / sims:.3f}"


def test_a_bound_on_the_margin_is_decided_the_same_whatever_its_rounding():
    """The quickstart-preserve run: two candidates' domain bounds were both 11/110 = 0.1 exactly, computed as
    0.10000000000000003 and 0.09999999999999998; the strict superiority rule passed one and held the other
    inconclusive. A bound on the margin up to rounding is now the margin: inconclusive for min_gain (L > m), a pass
    for non-inferiority (L >= -m), never a fail; a real step past the margin (1e-6) still decides."""
    import dataclasses

    from harness.stats.paired import PairedDelta

    d = PairedDelta("acc", 110, 0.28, 0.46, 0.18, 0.18, 0.08, 0.28, 0.1, 0.26, 0.95, 0.001, "McNemar", 7, 27, 0.05)
    gain = Rule(category="domain", min_gain=0.10)
    seen = {lb: decide(gain, dataclasses.replace(d, lower_bound=lb), 30) for lb in (0.10000000000000003, 0.1, 0.09999999999999998)}
    assert set(seen.values()) == {"inconclusive"}, seen
    assert decide(gain, dataclasses.replace(d, lower_bound=0.100001), 30) == "pass"
    assert decide(gain, dataclasses.replace(d, lower_bound=0.099999), 30) == "inconclusive"
    # the fail side: an upper bound on the margin is not below it
    assert {decide(gain, dataclasses.replace(d, lower_bound=0.0, upper_bound=ub), 30) for ub in (0.1 - 1e-17, 0.09999999999999998, 0.1)} == {"inconclusive"}
    assert decide(gain, dataclasses.replace(d, lower_bound=0.0, upper_bound=0.099999), 30) == "fail"
    drop = Rule(category="general", max_drop=0.05)
    nd = dataclasses.replace(d, improvement=-0.02, ci_low=-0.06, ci_high=0.02, upper_bound=0.01)
    assert {decide(drop, dataclasses.replace(nd, lower_bound=lb), 30) for lb in (-0.05000000000000002, -0.05, -0.04999999999999999)} == {"pass"}
    assert decide(drop, dataclasses.replace(nd, lower_bound=-0.050001), 30) == "inconclusive"
    assert decide(drop, dataclasses.replace(nd, lower_bound=-0.2, upper_bound=-0.05000000000000002), 30) == "inconclusive"
    assert decide(drop, dataclasses.replace(nd, lower_bound=-0.2, upper_bound=-0.050001), 30) == "fail"


def test_mcnemar_and_holm_against_references():
    assert mcnemar_exact(0, 0) == 1.0
    assert mcnemar_exact(10, 2) == pytest.approx(sps.binomtest(2, 12, 0.5).pvalue)
    adj = holm({"a": 0.01, "b": 0.04, "c": 0.03})
    assert adj == pytest.approx({"a": 0.03, "c": 0.06, "b": 0.06})


def test_ideal_value_metrics_are_oriented_by_distance_to_ideal():
    base = [1, 0] * 50  # pct 0.5: ideal
    cand = [1] * 70 + [0] * 30  # 0.7: worse
    d = paired_delta(base, cand, MEAN, ideal=0.5, n_resamples=2000)
    assert d.improvement == pytest.approx(-0.2) and d.ci_high < 0
    d2 = paired_delta(cand, base, MEAN, ideal=0.5, n_resamples=2000)
    assert d2.improvement == pytest.approx(0.2)


def test_lower_is_better_ratio_metric_bits_per_byte():
    agg = get_aggregation("bits_per_byte")
    base = [(-100.0, 80), (-120.0, 90), (-90.0, 70)] * 20
    cand = [(-110.0, 80), (-130.0, 90), (-95.0, 70)] * 20  # lower log-likelihood: more bits
    d = paired_delta(base, cand, agg, higher_is_better=False, n_resamples=2000)
    assert d.candidate > d.base and d.improvement < 0 and d.ci_high < 0


# ---------------------------------------------------------------- the CLI on synthetic runs


SUITES = {"domain/support": suite_meta("domain"), "general/facts": suite_meta("general"), "general/text": suite_meta("general", "bits_per_byte", False, aggregation="bits_per_byte"),
          "bias/crows": suite_meta("bias", "pct_stereotype", ideal=0.5)}
POLICY = {"confidence": 0.95, "min_items": 30, "rules": [
    {"category": "domain", "min_gain": 0.05},
    {"category": "general", "max_drop": 0.02},
    {"suite": "bias/crows", "max_increase": 0.05, "required": False},
]}


def values(rng, n=200, domain=0.3, facts=0.8, flip_facts=False, bpb_scale=1.0):
    return {
        "domain/support": (rng.random(n) < domain).astype(int).tolist(),
        "general/facts": ([0] * n) if flip_facts else (rng.random(n) < facts).astype(int).tolist(),
        "general/text": [(-100.0 * bpb_scale - i % 7, 80 + i % 5) for i in range(n)],
        "bias/crows": (rng.random(n) < 0.55).astype(int).tolist(),
    }


@pytest.fixture
def policy_file(tmp_path):
    p = tmp_path / "gate.yaml"
    p.write_text(yaml.safe_dump(POLICY))
    return p


def test_identical_baseline_and_candidate_pass(tmp_path, tmp_path_factory):
    rng = np.random.default_rng(0)
    v = values(rng)
    run = write_run(tmp_path / "run", SUITES, {"base": v})
    p = tmp_path / "g.yaml"
    p.write_text(yaml.safe_dump({"rules": [{"category": "general", "max_drop": 0.0}, {"suite": "bias/crows", "max_increase": 0.0}]}))
    code, out, err = run_cli("gate", "--baseline", str(run), "--candidate", f"{run}#base", "--policy", str(p),
                             "--junit", str(tmp_path / "j.xml"), "--summary", str(tmp_path / "s.md"))
    assert code == 0, out + err
    assert "PASS" in out


def test_contamination_over_the_policy_limit_fails_the_gate(tmp_path):
    rng = np.random.default_rng(0)
    run = write_run(tmp_path / "run", SUITES, {"base": values(rng)})
    p = tmp_path / "g.yaml"
    p.write_text(yaml.safe_dump({"max_contamination": 0.01, "rules": [{"category": "general", "max_drop": 0.0}]}))

    def curation(name, contaminated, items=200, skipped=()):
        doc = {"contamination": {"ngram": 13, "skipped": list(skipped), "contaminated_items": contaminated,
                                 "contaminated_item_share": contaminated / items if items else 0.0,
                                 "suites": {"general/facts": {"items": items, "contaminated_items": contaminated,
                                                              "share": contaminated / items if items else 0.0}} if items else {}}}
        (tmp_path / name).write_text(json.dumps(doc))
        return str(tmp_path / name)

    gate = ("gate", "--baseline", str(run), "--candidate", f"{run}#base", "--policy", str(p))
    code, out, err = run_cli(*gate, "--curation", curation("dirty.json", 10))
    assert code == 1, out + err
    assert "5.00% of 200 evaluation items" in out and "general/facts 5.0%" in out
    code, out, err = run_cli(*gate, "--curation", curation("clean.json", 0))
    assert code == 0, out + err
    code, out, err = run_cli(*gate, "--curation", curation("hub.json", 0, items=0, skipped=["lm_eval:arc_easy (hub task: not checked)"]))
    assert code == 2 and "no evaluation item could be checked" in out, out + err
    _err(run_cli(*gate), "max_contamination", "--curation")


def test_damaged_candidate_fails_and_names_the_suite(tmp_path, policy_file):
    rng = np.random.default_rng(0)
    base = values(rng)
    cand = dict(base, **{"domain/support": (np.array(base["domain/support"]) | (rng.random(200) < 0.5)).astype(int).tolist(), "general/facts": [0] * 200})
    run = write_run(tmp_path / "run", SUITES, {"base": base, "bad@1": cand})
    code, out, err = run_cli("gate", "--baseline", str(run), "--candidate", str(run), "--policy", str(policy_file),
                             "--junit", str(tmp_path / "j.xml"), "--summary", str(tmp_path / "s.md"))
    assert code == 1, out + err
    summary = (tmp_path / "s.md").read_text()
    assert "What got worse" in summary and "general/facts" in summary and "points" in summary
    verdict = json.loads((run / "verdict.json").read_text())
    failed = [r for r in verdict["rules"] if r["status"] == "fail"]
    assert [r["suite"] for r in failed] == ["general/facts"]
    assert failed[0]["stats"]["base_only"] > 100 and "general/facts" in failed[0]["message"]
    assert verdict["baseline"]["base_model"]["fingerprint"] and verdict["candidate"]["model"] == "bad@1"
    root = ET.parse(tmp_path / "j.xml").getroot()
    assert root.tag == "testsuite" and int(root.get("tests")) == len(verdict["rules"]) == 4
    fails = [c for c in root.iter("testcase") if c.find("failure") is not None]
    assert len(fails) == 1 and "general/facts" in fails[0].get("name") and "points" in fails[0].find("failure").text


def test_inconclusive_exits_2_or_as_chosen(tmp_path):
    # a 2-point drop on 200 items: 12 items got worse, 8 better
    a = [1] * 12 + [0] * 8 + [1] * 120 + [0] * 60
    b = [0] * 12 + [1] * 8 + [1] * 120 + [0] * 60
    run = write_run(tmp_path / "run", {"general/facts": suite_meta("general")}, {"base": {"general/facts": a}, "c@1": {"general/facts": b}})
    p = tmp_path / "g.yaml"
    p.write_text(yaml.safe_dump({"rules": [{"category": "general", "max_drop": 0.02}]}))
    code, out, _ = run_cli("gate", "--baseline", str(run), "--candidate", str(run), "--policy", str(p))
    assert code == 2 and "INCONCLUSIVE" in out and "straddles" in out
    assert run_cli("gate", "--baseline", str(run), "--candidate", str(run), "--policy", str(p), "--inconclusive", "fail")[0] == 1
    assert run_cli("gate", "--baseline", str(run), "--candidate", str(run), "--policy", str(p), "--inconclusive", "pass")[0] == 0


def test_too_few_items_is_inconclusive_with_reason(tmp_path):
    run = write_run(tmp_path / "run", {"general/facts": suite_meta("general")}, {"base": {"general/facts": [1] * 10}, "c@1": {"general/facts": [1] * 10}})
    p = tmp_path / "g.yaml"
    p.write_text(yaml.safe_dump({"min_items": 30, "rules": [{"category": "general", "max_drop": 0.02}]}))
    code, out, _ = run_cli("gate", "--baseline", str(run), "--candidate", str(run), "--policy", str(p))
    assert code == 2 and "fewer than the 30" in out


# ---------------------------------------------------------------- bad input


def test_bad_different_item_sets(tmp_path, policy_file):
    rng = np.random.default_rng(0)
    a = write_run(tmp_path / "a", SUITES, {"base": values(rng)})
    b = write_run(tmp_path / "b", SUITES, {"x@1": values(rng)}, item_salt="other")
    _err(run_cli("gate", "--baseline", str(a), "--candidate", str(b), "--policy", str(policy_file)), "different items", "only in the baseline")


def test_bad_policy_unknown_suite_and_metric(tmp_path):
    rng = np.random.default_rng(0)
    run = write_run(tmp_path / "run", SUITES, {"base": values(rng), "c@1": values(rng)})
    p = tmp_path / "g.yaml"
    p.write_text(yaml.safe_dump({"rules": [{"suite": "general/nope", "max_drop": 0.01}, {"suite": "general/facts", "metric": "f1", "max_drop": 0.01}]}))
    _err(run_cli("gate", "--baseline", str(run), "--candidate", str(run), "--policy", str(p)), "general/nope", "no metric 'f1'")


def test_bad_policy_negative_margin(tmp_path):
    rng = np.random.default_rng(0)
    run = write_run(tmp_path / "run", SUITES, {"base": values(rng), "c@1": values(rng)})
    p = tmp_path / "g.yaml"
    p.write_text(yaml.safe_dump({"rules": [{"category": "general", "max_drop": -0.01}]}))
    _err(run_cli("gate", "--baseline", str(run), "--candidate", str(run), "--policy", str(p)), "g.yaml", "rules.0.max_drop", "greater than or equal to 0")
    p.write_text(yaml.safe_dump({"rules": [{"category": "general"}]}))
    _err(run_cli("gate", "--baseline", str(run), "--candidate", str(run), "--policy", str(p)), "exactly one of min_gain, max_drop, max_increase")


def test_bad_empty_run_folder(tmp_path, policy_file):
    (tmp_path / "empty").mkdir()
    rng = np.random.default_rng(0)
    run = write_run(tmp_path / "run", SUITES, {"base": values(rng)})
    _err(run_cli("gate", "--baseline", str(run), "--candidate", str(tmp_path / "empty"), "--policy", str(policy_file)), "empty")


def test_bad_runs_scored_differently(tmp_path, policy_file):
    from tests.synthetic import PROVENANCE

    rng = np.random.default_rng(0)
    a = write_run(tmp_path / "a", SUITES, {"base": values(rng)})
    b = write_run(tmp_path / "b", SUITES, {"x@1": values(rng)}, provenance={**PROVENANCE, "batch_size": 4})
    _err(run_cli("gate", "--baseline", str(a), "--candidate", str(b), "--policy", str(policy_file)), "batch_size: 8 vs 4")


# ---------------------------------------------------------------- compare and calibrate


def test_compare_ranks_finds_pareto_front_and_applies_holm(tmp_path):
    rng = np.random.default_rng(7)
    n = 400
    base = values(rng, n)
    strong = dict(base, **{"domain/support": (rng.random(n) < 0.9).astype(int).tolist()})  # big gain, no forgetting
    forgetful = dict(base, **{"domain/support": (rng.random(n) < 0.92).astype(int).tolist(), "general/facts": (np.array(base["general/facts"]) & (rng.random(n) < 0.7)).astype(int).tolist()})
    weak = dict(base, **{"domain/support": (rng.random(n) < 0.35).astype(int).tolist()})
    run = write_run(tmp_path / "run", SUITES, {"base": base, "strong@1": strong, "forgetful@1": forgetful, "weak@1": weak})
    code, out, err = run_cli("compare", str(run), "--json")
    assert code == 0, err
    doc = json.loads(out)
    ranking = {r["candidate"]: r for r in doc["ranking"]}
    assert ranking["weak@1"]["rank"] == 3
    assert ranking["strong@1"]["pareto"] and ranking["forgetful@1"]["pareto"] and not ranking["weak@1"]["pareto"]
    assert ranking["forgetful@1"]["categories"]["general"]["improvement"] < 0
    assert doc["winner"]["candidate"] is None, "strong and forgetful are within noise on the domain: no significant winner"
    assert "Holm" in doc["winner"]["reason"]
    assert all(r["domain_p_holm"] is not None for r in doc["ranking"])


def test_compare_with_a_policy_exits_by_the_combined_rule(tmp_path):
    """`laf compare --policy`: 0 only when every candidate passes, 1 when any fails (the same rule as `laf run`)."""
    rng = np.random.default_rng(7)
    n = 400
    base = values(rng, n)
    strong = dict(base, **{"domain/support": (rng.random(n) < 0.9).astype(int).tolist()})
    weak = dict(base, **{"domain/support": list(base["domain/support"])})
    policy = tmp_path / "policy.yaml"
    policy.write_text(yaml.safe_dump({"rules": [{"category": "domain", "min_gain": 0.05}]}))
    both = write_run(tmp_path / "both", SUITES, {"base": base, "strong@1": strong, "weak@1": weak})
    code, out, err = run_cli("compare", str(both), "--policy", str(policy))
    assert code == 1, out + err
    assert "1 when any fails" in " ".join(out.split())
    verdicts = {r["candidate"]: r["verdict"] for r in json.loads((both / "compare.json").read_text())["ranking"]}
    assert verdicts["weak@1"] == "fail" and verdicts["strong@1"] == "pass"
    one = write_run(tmp_path / "one", SUITES, {"base": base, "strong@1": strong})
    code, out, err = run_cli("compare", str(one), "--policy", str(policy))
    assert code == 0, out + err
    code, out, err = run_cli("compare", str(both))
    assert code == 0 and "nothing was gated" in " ".join(out.split()), out + err


def test_calibrate_suggests_margins_above_the_noise(tmp_path):
    rng = np.random.default_rng(9)
    a = values(rng, 300)
    b = dict(a)
    for s in ("domain/support", "general/facts"):
        x = np.array(a[s])
        flip = rng.random(300) < 0.03
        x[flip] = 1 - x[flip]
        b[s] = x.tolist()
    r1 = write_run(tmp_path / "bs4", SUITES, {"base": a})
    r2 = write_run(tmp_path / "bs8", SUITES, {"base": b})
    code, out, err = run_cli("calibrate", str(r1), str(r2), "--json", "--policy-out", str(tmp_path / "suggested.yaml"))
    assert code == 0, err
    doc = json.loads(out)
    facts = doc["suites"]["general/facts"]
    assert 0 < facts["flip_rate"] < 0.08
    assert facts["suggested_margin"] >= max(abs(facts["ci_low"]), abs(facts["ci_high"]))
    suggested = yaml.safe_load((tmp_path / "suggested.yaml").read_text())
    assert any(r.get("suite") == "general/facts" and "max_drop" in r for r in suggested["rules"])
    # the suggested margins pass the two noisy runs against each other (the domain gain is the user's call)
    run_cli("gate", "--baseline", str(r1), "--candidate", f"{r2}#base", "--policy", str(tmp_path / "suggested.yaml"))
    verdict = json.loads((r2 / "verdict.json").read_text())
    assert [r["suite"] for r in verdict["rules"] if r["status"] == "fail" and r["kind"] != "min_gain"] == []
