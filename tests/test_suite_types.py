"""Suite types: one table, loaded on lookup, open to other packages through an entry-point group."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from harness.suites import suite_types

REPO = Path(__file__).resolve().parents[1]


def test_every_builtin_type_loads_and_path_types_name_their_category():
    for name, t in suite_types.BUILTIN.items():
        assert callable(t.load()), name
    assert {n: t.category for n, t in suite_types.path_types().items() if n in suite_types.BUILTIN} == {
        "truthfulqa_mc": "hallucination", "abstention_mc": "hallucination", "abstention_gen": "hallucination", "factqa": "hallucination",
        "crows_pairs": "bias", "bbq": "bias", "counterfactual": "bias", "counterfactual_gen": "bias", "freeform": "domain", "preference": "domain",
    }


def test_a_lookup_imports_only_that_type(tmp_path):
    code = ("import sys, json; from harness.suites import load_suite; s = load_suite('general/world-facts'); s.build; "
            "print(json.dumps('harness.suites.bias' in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=300, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout.strip().splitlines()[-1]) is False, "an lm_eval suite must not import the bias probes"


def test_a_third_party_type_comes_in_through_the_entry_point_group(tmp_path):
    site = tmp_path / "site"
    (site / "myprobes-0.1.dist-info").mkdir(parents=True)
    (site / "myprobes-0.1.dist-info" / "METADATA").write_text("Metadata-Version: 2.1\nName: myprobes\nVersion: 0.1\n")
    (site / "myprobes-0.1.dist-info" / "entry_points.txt").write_text(f"[{suite_types.ENTRY_POINT_GROUP}]\nechoes = myprobes:echoes\nbbq = myprobes:echoes\n")
    (site / "myprobes.py").write_text(
        "from harness.evaluate.suites import lm_eval_type\n"
        "def echoes(suite, docs):\n    return lm_eval_type(suite, docs)\n"
        "echoes.category = 'bias'\n"
    )
    data = tmp_path / "items.jsonl"
    data.write_text("".join(json.dumps({"q": f"q{i}", "a": "yes"}) + "\n" for i in range(3)))
    code = ("import json; from harness.suites import load_suite, suite_types; "
            f"s = load_suite('echoes:{data}'); "
            "print(json.dumps([s.category, s.spec.type, suite_types.find('bbq').target, suite_types.find('echoes').target]))")
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                         env={"PYTHONPATH": f"{site}:{REPO}", "PATH": "/usr/bin:/bin"})
    assert out.returncode == 0, out.stderr
    category, kind, bbq, echoes = json.loads(out.stdout.strip().splitlines()[-1])
    assert (category, kind) == ("bias", "echoes")
    assert bbq == "harness.suites.bias:bbq", "a built-in name is never replaced by a plugin"
    assert echoes == "myprobes:echoes"


def test_the_old_plugin_path_is_an_alias_of_the_suites_api():
    """Suite types written against ``harness.evaluate.suites`` (the path docs/suites.md named before suites moved)
    keep working: the same objects, nothing else there."""
    import harness.evaluate.suites as alias
    import harness.suites as suites

    assert sorted(alias.__all__) == ["Suite", "TaskBuild", "base_task_config", "lm_eval_type", "meta_from_metric_list", "perplexity_type"]
    assert all(getattr(alias, n) is getattr(suites, n) for n in alias.__all__)
    assert {n for n in vars(alias) if not n.startswith("_")} == set(alias.__all__)
