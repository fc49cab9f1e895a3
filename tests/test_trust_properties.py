"""Property-based tests (Hypothesis) for every loader of an untrusted document (issue 27, "close the class").

The property: given any document (random shapes, and valid documents with random parts replaced, removed or
added), a loader returns a valid typed object or raises the project's own error (``LafError``) with a message;
never another exception, never more than a bounded time, never a write outside its output folder.

A bounded number of examples runs in the normal test run (the whole file well under a minute on one core); the
``fuzz`` marker runs many more (``pytest -m fuzz tests/test_trust_properties.py``). The example database is off
(``database=None``): nothing is written into the repository.
"""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import pytest
import yaml
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from harness.errors import LafError
from harness.io import sha256_json
from tests.conftest import run_cli
from tests.synthetic import suite_meta, write_run

NORMAL, FUZZ = 25, 1500
# the normal run does not shrink a failure (minutes on a loaded machine); the fuzz run does
QUICK = [Phase.explicit, Phase.reuse, Phase.generate]
FULL = list(Phase)
MAX_SECONDS = 20.0  # per example, on a loaded 2-core machine; a loader that hangs or explodes fails here

# ---------------------------------------------------------------- strategies

scalars = (st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=True, allow_infinity=True)
           | st.text(max_size=12) | st.sampled_from(["", "..", "../x", "/etc/passwd", "{{ x.__class__ }}", "a" * 300, "NaN", "1e308", "-1", "0", "cpu"]))
keys = st.text(max_size=8) | st.sampled_from(["name", "path", "suite", "rules", "metric", "value", "n", "verdict", "status", "__proto__", ""])
values = st.recursive(scalars, lambda ch: st.lists(ch, max_size=4) | st.dictionaries(keys, ch, max_size=4), max_leaves=12)


@st.composite
def mutated(draw, base):
    """``base`` with 1-3 random edits: a value anywhere replaced, a key removed, or a key added."""
    doc = copy.deepcopy(base)
    for _ in range(draw(st.integers(1, 3))):
        parent, key = None, None
        node = doc
        while isinstance(node, (dict, list)) and node and draw(st.integers(0, 3)) > 0:
            k = draw(st.sampled_from(sorted(node.keys(), key=str) if isinstance(node, dict) else list(range(len(node)))))
            parent, key, node = node, k, node[k]
        if parent is None:
            if isinstance(doc, dict) and draw(st.booleans()):
                doc[draw(keys)] = draw(values)
                continue
            return draw(values) if draw(st.integers(0, 9)) == 0 else doc
        action = draw(st.sampled_from(["replace", "replace", "delete", "add"]))
        if action == "delete" and isinstance(parent, dict):
            del parent[key]
        elif action == "add" and isinstance(node, dict):
            node[draw(keys)] = draw(values)
        else:
            parent[key] = draw(values)
    return doc


def _json(doc) -> str:
    return json.dumps(doc, allow_nan=True, default=str)


def holds(fn):
    """Run ``fn``; only a LafError (with a message) may come out, within MAX_SECONDS."""
    t0 = time.monotonic()
    try:
        fn()
    except LafError as e:
        assert str(e).strip(), "an error without a message"
    assert time.monotonic() - t0 < MAX_SECONDS, f"took {time.monotonic() - t0:.1f} s"


def cli_holds(*argv: str) -> int:
    t0 = time.monotonic()
    code, out, err = run_cli(*argv)
    assert "Traceback" not in err
    assert code in (0, 1, 2, 3), (code, err)
    if code == 3:  # one message (`suites validate` lists its problems on stdout)
        assert err.strip().startswith("error:") or "problem" in out, (out, err)
    assert time.monotonic() - t0 < MAX_SECONDS
    return code


def both(strategy, n: int = NORMAL):
    """The property as two tests: ``n`` examples in the normal run, FUZZ under the fuzz marker."""
    def wrap(prop):
        def make(count):
            @settings(max_examples=count, deadline=None, database=None, derandomize=count == n, phases=QUICK if count == n else FULL,
                      suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture, HealthCheck.data_too_large,
                                             HealthCheck.filter_too_much])
            @given(doc=strategy)
            def test(tmp_path_factory, doc):
                folder = tmp_path_factory.mktemp("prop")
                before = set(Path.cwd().iterdir())
                prop(folder, doc)
                assert set(Path.cwd().iterdir()) == before, "a loader wrote outside its folder"
            return test
        normal = make(n)
        fuzz = pytest.mark.fuzz(make(FUZZ))
        return normal, fuzz
    return wrap


# ---------------------------------------------------------------- valid documents to start from

SUITES = {"domain/skill": suite_meta("domain"), "general/facts": suite_meta("general")}


def _template_run(folder: Path) -> Path:
    vals = [1, 0, 1, 1, 0] * 8
    return write_run(folder, SUITES, {"base": {s: vals for s in SUITES}, "cand@1": {s: [1] * 40 for s in SUITES}})


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    run = _template_run(tmp_path_factory.mktemp("tpl") / "run")
    policy = tmp_path_factory.mktemp("pol") / "p.yaml"
    policy.write_text(yaml.safe_dump({"rules": [{"category": "domain", "min_gain": 0.1}, {"category": "general", "max_drop": 0.05}]}))
    assert run_cli("gate", "--baseline", str(run), "--candidate", f"{run}#cand@1", "--policy", str(policy))[0] == 0
    return {"results": json.loads((run / "results.json").read_text()), "record": json.loads((run / "records.jsonl").read_text().splitlines()[0]),
            "verdict": json.loads((run / "verdict.json").read_text()), "run": run}


RUN_CONFIG = {"name": "q", "model": "default", "data": {"path": "d.jsonl", "eval_fraction": 0.1},
              "train": {"lora": {"r": 8, "alpha": 16, "target_modules": "all-linear"}, "optim": {"lr": 2e-4}, "max_steps": 10, "batch_size": 4},
              "eval": {"suites": ["general/world-facts", {"suite": "domain/tempo-t4", "limit": 20}], "batch_size": 8},
              "gate": {"policy": {"rules": [{"category": "domain", "min_gain": 0.1}]}, "inconclusive": "fail"},
              "merge": [{"name": "m", "method": "linear", "adapters": ["a@1", "b@1"], "weights": [0.5, 0.5]}]}
MERGE_CONFIG = {"name": "m", "method": "ties", "adapters": [{"ref": "a@1", "weight": 0.7}, "b@1"], "density": 0.5, "output": {"rank": 4}}
SWEEP_CONFIG = {**RUN_CONFIG, "sweep": {"lora.r": [2, 4], "optim.lr": [1e-3, 3e-4], "merge.weights": [[0.5, 0.5], [0.3, 0.7]]}}
POLICY = {"rules": [{"category": "domain", "min_gain": 0.1, "pooled": True}, {"suite": "general/facts", "max_drop": 0.02, "required": False}],
          "confidence": 0.95, "min_items": 30}
SFT_ROWS = [{"instruction": "Say hi.", "input": "", "output": "Hi."}, {"prompt": "2+2?", "completion": "4"},
            {"messages": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]}]
PREF_ROWS = [{"prompt": "Q?", "chosen": "good", "rejected": "bad"},
             {"prompt": [{"role": "user", "content": "Q?"}], "chosen": [{"role": "assistant", "content": "A"}], "rejected": [{"role": "assistant", "content": "B"}]}]
SUITE = {"category": "general", "description": "x", "data": {"path": "s.jsonl"},
         "task": {"output_type": "multiple_choice", "doc_to_text": "{{q}}", "doc_to_choice": "{{choices}}", "doc_to_target": "{{gold}}",
                  "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}]}}
SUITE_ROWS = [{"q": f"What is {i}?", "choices": ["a", "b", "c"], "gold": i % 3} for i in range(4)]
MANIFEST = {"kind": "lora", "created": "2026-01-01T00:00:00+00:00", "base_model": {"spec": "default", "kind": "default", "fingerprint": "f" * 64},
            "load": {"precision": "nf4", "compute_dtype": "fp32", "device": "cpu"}, "config": {"lora": {"r": 8}, "license": "mit"},
            "data": {"path": "d.jsonl", "examples": 10}, "steps": 3, "trainable_parameters": 100, "total_parameters": 1000, "final_train_loss": 1.5}


# ---------------------------------------------------------------- configs: run, sweep, merge, train, policy, raw YAML


@both(st.one_of(mutated(RUN_CONFIG), values))
def _run_config(folder, doc):
    from harness.pipeline.config import load_run_config

    p = folder / "run.yaml"
    p.write_text(yaml.safe_dump(doc, allow_unicode=True))
    holds(lambda: load_run_config(p))


test_run_config_loader, test_run_config_loader_fuzz = _run_config


@both(mutated(SWEEP_CONFIG))
def _sweep_config(folder, doc):
    from harness.sweep.config import expand, load_sweep_config

    p = folder / "sweep.yaml"
    p.write_text(yaml.safe_dump(doc, allow_unicode=True))
    holds(lambda: expand(load_sweep_config(p)[0]))


test_sweep_config_loader, test_sweep_config_loader_fuzz = _sweep_config


@both(mutated(MERGE_CONFIG))
def _merge_config(folder, doc):
    from harness.cli.merge import load_merge_config

    p = folder / "merge.yaml"
    p.write_text(yaml.safe_dump(doc, allow_unicode=True))

    def load():
        cfg = load_merge_config(str(p), [])
        cfg.params()  # what the merge records: must be computable for every accepted config
    holds(load)


test_merge_config_loader, test_merge_config_loader_fuzz = _merge_config


@both(mutated({"name": "t", "data": {"path": "d.jsonl"}, **RUN_CONFIG["train"], "device": "cpu", "precision": "nf4"}))
def _train_config(folder, doc):
    from harness.cli.train import load_train_config

    p = folder / "train.yaml"
    p.write_text(yaml.safe_dump(doc, allow_unicode=True))
    holds(lambda: load_train_config(str(p), []))


test_train_config_loader, test_train_config_loader_fuzz = _train_config


@both(mutated(POLICY))
def _policy(folder, doc):
    from harness.gate.policy import load_policy

    p = folder / "policy.yaml"
    p.write_text(yaml.safe_dump(doc, allow_unicode=True))
    holds(lambda: load_policy(p))


test_policy_loader, test_policy_loader_fuzz = _policy


@both(st.text(max_size=300) | st.sampled_from(["a: &x [*x]", "!!python/object:os.system {}", "a: !!binary xyz", "[" * 200, "a: 1\n" * 3,
                                                "{a: 1, a: 2}", "? [a]\n: 1", "a: 1e999", "x: .nan"]))
def _raw_yaml(folder, text):
    from harness.config import load_yaml

    p = folder / "c.yaml"
    p.write_text(text)
    holds(lambda: load_yaml(p))


test_raw_yaml, test_raw_yaml_fuzz = _raw_yaml


# ---------------------------------------------------------------- training and preference rows


@both(st.lists(st.one_of(mutated(SFT_ROWS[0]), mutated(SFT_ROWS[1]), mutated(SFT_ROWS[2]), values), min_size=1, max_size=6))
def _training_rows(folder, rows):
    from harness.data.formats import read_examples

    p = folder / "d.jsonl"
    p.write_text("".join(_json(r) + "\n" for r in rows))
    holds(lambda: read_examples(p, strict=False))
    holds(lambda: read_examples(p, strict=True))


test_training_rows, test_training_rows_fuzz = _training_rows


@both(st.lists(st.one_of(mutated(PREF_ROWS[0]), mutated(PREF_ROWS[1]), values), min_size=1, max_size=6))
def _preference_rows(folder, rows):
    from harness.data.preference import read_pairs

    p = folder / "p.jsonl"
    p.write_text("".join(_json(r) + "\n" for r in rows))
    holds(lambda: read_pairs(p, strict=False))


test_preference_rows, test_preference_rows_fuzz = _preference_rows


# ---------------------------------------------------------------- suites and their item files


@both(st.tuples(mutated(SUITE), st.lists(st.one_of(mutated(SUITE_ROWS[0]), values), min_size=1, max_size=5)), n=15)
def _suite(folder, doc):
    suite, rows = doc
    (folder / "s.jsonl").write_text("".join(_json(r) + "\n" for r in rows))
    p = folder / "s.yaml"
    p.write_text(yaml.safe_dump(suite, allow_unicode=True))
    cli_holds("suites", "validate", str(p))


test_suite_loader, test_suite_loader_fuzz = _suite


# ---------------------------------------------------------------- results, records, verdicts: the readers of a run folder


@pytest.fixture(scope="module")
def docs(template):
    return template


def _results_prop(folder, doc):
    from harness.results import ResultsDoc

    holds(lambda: ResultsDoc.from_dict(doc, "results.json"))


def _record_prop(folder, doc):
    from harness.results import ItemRecord

    holds(lambda: ItemRecord.from_dict(doc))


@pytest.mark.parametrize("count", [pytest.param(NORMAL, id="normal"), pytest.param(FUZZ, marks=pytest.mark.fuzz, id="fuzz")])
def test_results_document_and_record_loaders(template, count):
    @settings(max_examples=count, deadline=None, database=None, derandomize=count == NORMAL, phases=QUICK if count == NORMAL else FULL,
              suppress_health_check=list(HealthCheck))
    @given(res=mutated(template["results"]), rec=mutated(template["record"]))
    def prop(res, rec):
        _results_prop(None, res)
        _record_prop(None, rec)
    prop()


@pytest.mark.parametrize("count", [pytest.param(12, id="normal"), pytest.param(400, marks=pytest.mark.fuzz, id="fuzz")])
def test_a_run_folder_with_any_results_and_verdict_is_read_by_gate_and_report_without_a_traceback(template, tmp_path_factory, count):
    """Mutated results.json (sealed, as an attacker who recomputes the digests would) and mutated verdicts (resealed)."""
    import shutil

    from harness.results import seal_run

    @settings(max_examples=count, deadline=None, database=None, derandomize=count == 12, phases=QUICK if count == 12 else FULL,
              suppress_health_check=list(HealthCheck))
    @given(res=st.one_of(st.just(None), mutated(template["results"])), verdict=st.one_of(st.just(None), mutated(template["verdict"])))
    def prop(res, verdict):
        run = tmp_path_factory.mktemp("rf") / "run"
        shutil.copytree(template["run"], run)
        if res is not None:
            (run / "results.json").write_text(_json(res))
            seal_run(run)
        if verdict is not None:
            verdict.pop("verdict_sha256", None) if isinstance(verdict, dict) else None
            if isinstance(verdict, dict):
                verdict["verdict_sha256"] = sha256_json(verdict)
            (run / "verdict.json").write_text(_json(verdict))
        cli_holds("report", str(run), "-o", str(run / "r.html"))
        cli_holds("report", str(run), "--format", "md", "-o", str(run / "r.md"))
        pol = run / "p.yaml"
        pol.write_text(yaml.safe_dump({"rules": [{"category": "domain", "min_gain": 0.1}, {"category": "general", "max_drop": 0.05}]}))
        cli_holds("gate", "--baseline", str(run), "--candidate", f"{run}#cand@1", "--policy", str(pol), "-o", str(run / "v2.json"))
        cli_holds("compare", str(run), "-o", str(run / "c.json"))
    prop()


@pytest.mark.parametrize("count", [pytest.param(NORMAL, id="normal"), pytest.param(FUZZ, marks=pytest.mark.fuzz, id="fuzz")])
def test_verdict_checker(template, count):
    from harness.gate.verdict import check_verdict

    suites = {s: list(m["metrics"]) for s, m in template["results"]["suites"].items()}

    @settings(max_examples=count, deadline=None, database=None, derandomize=count == NORMAL, phases=QUICK if count == NORMAL else FULL,
              suppress_health_check=list(HealthCheck))
    @given(v=mutated(template["verdict"]), reseal=st.booleans())
    def prop(v, reseal):
        if reseal and isinstance(v, dict):
            v.pop("verdict_sha256", None)
            v["verdict_sha256"] = sha256_json(v)
        holds(lambda: check_verdict(v, "verdict.json", suites, list(template["results"]["models"])))
    prop()


# ---------------------------------------------------------------- manifests


@pytest.mark.parametrize("count", [pytest.param(15, id="normal"), pytest.param(500, marks=pytest.mark.fuzz, id="fuzz")])
def test_manifest_readers(tmp_path_factory, count):
    from harness.registry import MANIFEST as MANIFEST_FILE
    from harness.registry import MANIFEST_DIGEST, Registry, manifest_digest

    root = tmp_path_factory.mktemp("mreg")
    src = root / "src"
    src.mkdir()
    (src / "adapter_model.safetensors").write_bytes(b"\x00" * 32)
    (src / "adapter_config.json").write_text('{"peft_type": "LORA", "r": 8}')
    reg = Registry(root / "reg")
    entry = reg.register("a", src, MANIFEST)
    good = json.loads((entry.path / MANIFEST_FILE).read_text())

    @settings(max_examples=count, deadline=None, database=None, derandomize=count == 15, phases=QUICK if count == 15 else FULL,
              suppress_health_check=list(HealthCheck))
    @given(m=mutated(good), reseal=st.booleans())
    def prop(m, reseal):
        if reseal and isinstance(m, dict):
            m.pop(MANIFEST_DIGEST, None)
            m[MANIFEST_DIGEST] = manifest_digest(m)
        (entry.path / MANIFEST_FILE).write_text(_json(m))
        holds(lambda: reg.verify("a@1"))
        holds(lambda: reg.scan())
        out = root / "export"
        cli_holds("registry", "--registry", str(root / "reg"), "show", "a@1", "--json")
        cli_holds("registry", "--registry", str(root / "reg"), "export", "a@1", str(out), "--force")
    prop()
