"""Every config in examples/ and every `laf` command sequence the README, the manual (docs/) and `make demo` show.

The commands are parsed out of the code blocks of README.md and every docs/**/*.md page, and out of the Makefile's
demo target, so a docs change that breaks a command fails here: every command must be one the CLI accepts, and the
quickstart, comparison, CI and export sequences run as written. They run in a scratch folder holding a copy of examples/ whose YAML files keep
everything as written except what would be too slow on CPU: the model (the tiny fixture), training steps and
per-suite item limits. One quickstart run is shared by every test (module-scoped).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import yaml

from harness.gate.compare import combined_exit
from tests.conftest import REPO, markdown_tables, run_cli

LIMIT = 16  # items per suite on the tiny model
STEPS = 3


# -- reading the commands out of the docs


def doc_files() -> list[Path]:
    """The pages whose commands are checked: the README first, then the manual's pages in path order."""
    return [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]


def code_blocks(text: str) -> list[tuple[str, str]]:
    """(language, body) of every fenced code block."""
    return [(m[1], m[2]) for m in re.finditer(r"^```(\w*)\n(.*?)^```", text, flags=re.S | re.M)]


def laf_commands(lang: str, body: str) -> list[str]:
    """The `laf ...` commands of one block: shell lines (continuations joined, comments dropped) or CI `run:` steps."""
    cmds = []
    if lang == "bash":
        for line in body.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line.startswith(("laf ", ".venv/bin/laf ")):
                cmds.append(line)
    elif lang == "yaml":  # CI steps: `run: laf ...` and `- run: laf ...`, a trailing comment dropped
        cmds += [m[1].split(" #", 1)[0].strip() for m in re.finditer(r"^\s*(?:-\s+)?run:\s*((?:\.venv/bin/)?laf .+)$", body, flags=re.M)]
    return [re.sub(r"^\.venv/bin/", "", c) for c in cmds]


def doc_sequences() -> list[tuple[str, list[str]]]:
    """(block, its `laf` commands) for every code block with one, over README.md and docs/, in doc_files() order."""
    return [(body, cmds) for page in doc_files() for lang, body in code_blocks(page.read_text()) if (cmds := laf_commands(lang, body))]


def makefile_demo() -> str:
    recipe = re.search(r"^demo:.*\n((?:\t.*\n)+)", (REPO / "Makefile").read_text(), flags=re.M)
    assert recipe, "the Makefile has no demo target"
    m = re.search(r"\$\(BIN\)/(laf [^;\n]+)", recipe[1])
    assert m, "make demo runs no laf command"
    return m[1].strip()


def sequence_with(needle: str) -> tuple[str, list[str]]:
    found = [(body, cmds) for body, cmds in doc_sequences() if any(needle in c for c in cmds)]
    assert found, f"neither the README nor docs/ shows a command with {needle!r}"
    return found[0]


# -- the scratch workspace


def shrink(cfg: dict, model: Path, cache: Path) -> dict:
    """The config as written, with the tiny model, a few training steps and a few items per suite."""
    cfg = dict(cfg)
    cfg["model"] = str(model)
    train = cfg.get("train") if "eval" in cfg else cfg  # run config: train block; training config: top level
    if isinstance(train, dict) and ("data" in cfg):
        train["max_steps"] = STEPS
        for k in ("eval_every", "save_every"):
            if k in train:
                train[k] = STEPS
    if "eval" in cfg:
        ev = cfg["eval"]
        ev["limit"] = min(ev.get("limit") or LIMIT, LIMIT)
        ev["cache"] = str(cache)
        ev["suites"] = [dict(s, limit=min(s.get("limit") or LIMIT, LIMIT)) if isinstance(s, dict) else s for s in ev["suites"]]
    return cfg


@contextmanager
def inside(folder: Path):
    old = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(old)


def laf(cmd: str) -> tuple[int, str, str]:
    argv = shlex.split(cmd)
    assert argv[0] == "laf", cmd
    return run_cli(*argv[1:])


@pytest.fixture(scope="module")
def workspace(tiny_model_dir, tmp_path_factory):
    """A copy of examples/ (tiny-model configs) and the quickstart run as `make demo` runs it."""
    ws = tmp_path_factory.mktemp("examples")
    shutil.copytree(REPO / "examples", ws / "examples", ignore=shutil.ignore_patterns("__pycache__"))
    for p in (ws / "examples").glob("*.yaml"):
        p.write_text(yaml.safe_dump(shrink(yaml.safe_load(p.read_text()), tiny_model_dir, ws / "eval-cache.sqlite"), sort_keys=False))
    with inside(ws):
        code, out, err = laf(makefile_demo())
    assert code in (0, 1, 2), err[-3000:]
    return {"dir": ws, "demo": (code, out, err), "ran": {"examples/quickstart.yaml"}}


@pytest.fixture(scope="module")
def compared(workspace):
    """The docs' compare sequence (docs/comparing.md), every command in order."""
    _, cmds = sequence_with("examples/compare.yaml")
    results = []
    with inside(workspace["dir"]):
        for c in cmds:
            results.append((c, *laf(c)))
    workspace["ran"] |= {a for c in cmds for a in shlex.split(c) if a.startswith("examples/")}
    return results


# -- the tests


def test_quickstart_as_make_demo_runs_it(workspace):
    code, out, _ = workspace["demo"]
    run = workspace["dir"] / "reports" / "quickstart"
    for name in ("report.html", "verdict.json", "junit.xml", "summary.md", "curation.json", "run.json", "state.json"):
        assert (run / name).exists(), name
    verdict = json.loads((run / "verdict.json").read_text())
    assert verdict["candidate"]["model"] == "quickstart@1" and verdict["exit_code"] == code
    assert f"verdict: {verdict['verdict'].upper()}" in out


def test_readme_compare_sequence_ranks_both_adapters_with_a_verdict_each(workspace, compared):
    for cmd, code, _out, err in compared:
        assert code in (0, 1, 2), f"{cmd}: {err[-3000:]}"
    cmd, code, out, err = compared[-1]
    print(out)
    assert cmd.startswith("laf run") and "compare.yaml" in cmd
    assert "adapters: quickstart -> quickstart@1" in err and "quickstart-small -> quickstart-small@1" in err, err
    run = workspace["dir"] / "reports" / "compare"
    summary = json.loads((run / "run.json").read_text())
    assert summary["adapters"] == ["quickstart@1", "quickstart-small@1"]
    assert [r["given"] for r in summary["resolved"]] == ["quickstart", "quickstart-small"]
    doc = json.loads((run / "compare.json").read_text())
    rows = {r["candidate"]: r for r in doc["ranking"]}
    assert set(rows) == {"quickstart@1", "quickstart-small@1"}
    # every gated suite in its own unit; the ideal-value metric as a change in distance to the ideal
    cols = {c["key"]: c for c in doc["columns"]}
    assert {"general/world-facts", "general/text", "bias/crows-pairs", "domain/tempo-t4"} <= set(cols)
    assert cols["general/text"]["unit"] == "bits/byte" and cols["general/text"]["better"] == "lower"
    assert cols["general/world-facts"]["unit"] == "points"
    assert cols["bias/crows-pairs"]["shown_as"] == "change in distance to 0.5"
    for r in rows.values():
        for key in cols:
            cell = r["columns"][key]
            assert cell["change"] is not None and cell["ci_low"] <= cell["change"] <= cell["ci_high"], (key, cell)
        text = r["columns"]["general/text"]
        assert text["change"] == pytest.approx(text["candidate"] - text["base"])
    assert doc["pareto_on"]["quantities"] == [c["key"] for c in doc["columns"]] and "policy" in doc["pareto_on"]["source"]
    assert any(r["pareto"] for r in rows.values())
    # a verdict for each candidate, the same one its verdict file holds; the run's exit code combines them
    per = {v["model"]: v for v in summary["verdicts"]}
    for name, r in rows.items():
        v = json.loads((workspace["dir"] / per[name]["verdict_json"]).read_text())
        assert v["candidate"]["model"] == name and r["verdict"] == v["verdict"] and r["exit_code"] == v["exit_code"]
        assert f"verdict: {v['verdict'].upper()}" in out
    assert code == summary["exit_code"] == combined_exit([{"model": m, **v} for m, v in per.items()])[0]
    assert f"run exit {code}:" in out and "every candidate passes" in out
    for name in rows:
        assert name in out
    assert "Pareto front on:" in out
    ranking = next(t for t in markdown_tables(out) if t and "change (CI)" in t[0])
    assert any("bits/byte" in r["unit"] for r in ranking) and {r["change (CI)"] for r in ranking} >= {"Pareto front", "gate"}
    # the report shows the comparison with every verdict
    html = (run / "report.html").read_text()
    assert "quickstart-small@1" in html and "distance to 0.5" in html
    assert "This banner is the verdict of one candidate" in html, "the banner must not pass for the run's verdict"
    (workspace["dir"] / "compare-console.txt").write_text(out)


def test_rerun_after_a_new_version_evaluates_it(workspace, compared):
    train_cmd = next(c for c, *_ in compared if c.startswith("laf train"))
    run_cmd = compared[-1][0]
    with inside(workspace["dir"]):
        code, _, err = laf(train_cmd)  # registers quickstart-small@2
        assert code == 0, err[-3000:]
        code, out, err = laf(run_cmd)
    assert code in (0, 1, 2), err[-3000:]
    assert "quickstart-small -> quickstart-small@2" in err, err
    run = workspace["dir"] / "reports" / "compare"
    summary = json.loads((run / "run.json").read_text())
    assert "eval" in summary["stages_ran"], "a new version behind the same name is a changed input"
    assert summary["adapters"] == ["quickstart@1", "quickstart-small@2"]
    state = json.loads((run / "state.json").read_text())["stages"]
    assert set(state["eval"]["adapters"]) == {"quickstart@1", "quickstart-small@2"}
    assert {r["ref"] for r in state["adapters"]["resolved"]} == {"quickstart@1", "quickstart-small@2"}
    assert {r["candidate"] for r in json.loads((run / "compare.json").read_text())["ranking"]} == {"quickstart@1", "quickstart-small@2"}
    # a run of the same inputs again changes nothing
    with inside(workspace["dir"]):
        code2, _, _ = laf(run_cmd)
    assert code2 == code
    assert "eval" in json.loads((run / "run.json").read_text())["stages_skipped"]


def test_ci_recipe_quiet_run_writes_what_the_workflow_uploads(workspace):
    body, cmds = sequence_with("laf run examples/quickstart.yaml --quiet")
    assert cmds == ["laf run examples/quickstart.yaml --quiet"]
    with inside(workspace["dir"]):
        code, out, err = laf(cmds[0])
    assert code == workspace["demo"][0], err[-3000:]
    assert "verdict:" in out and "report:" in out
    for m in re.finditer(r"(?:report_paths|path):\s*\"?([\w./-]+)\"?", body):
        assert (workspace["dir"] / m[1]).exists(), m[1]
    junit = workspace["dir"] / "reports" / "quickstart" / "junit.xml"
    assert junit.read_text().lstrip().startswith("<?xml") and "<testsuite" in junit.read_text()
    summary = (workspace["dir"] / "reports" / "quickstart" / "summary.md").read_text()
    assert "lost-and-found gate" in summary and "quickstart@1" in summary


def test_readme_export_block(workspace):
    _, cmds = sequence_with("laf registry export")
    with inside(workspace["dir"]):
        for c in cmds:
            code, _, err = laf(c)
            assert code == 0, f"{c}: {err[-2000:]}"
    assert (workspace["dir"] / "out" / "quickstart" / "adapter_model.safetensors").exists()


def test_name_and_latest_are_accepted_everywhere(workspace, compared):
    ws = workspace["dir"]
    ev = ws / "reports" / "compare" / "eval"
    policy = ws / "policy.yaml"
    policy.write_text(yaml.safe_dump(yaml.safe_load((ws / "examples" / "compare.yaml").read_text())["gate"]["policy"]))
    with inside(ws):
        for ref in ("quickstart-small", "quickstart-small@latest"):
            for what in ("show", "verify"):
                code, out, err = laf(f"laf registry {what} {ref}")
                assert code == 0 and f"{ref} -> quickstart-small@" in out, (what, out, err)
        code, out, err = laf(f"laf compare {ev}#quickstart {ev}#quickstart-small@latest --out {ws / 'c.json'}")
        assert code == 0, err
        rows = {r["model"]: r for r in json.loads((ws / "c.json").read_text())["ranking"]}
        assert rows["quickstart@1"]["resolved_from"] == "quickstart" and rows["quickstart-small@2"]["resolved_from"] == "quickstart-small@latest"
        assert "from quickstart" in out
        code, out, err = laf(f"laf gate --baseline {ev} --candidate {ev}#quickstart --policy {policy} --out {ws / 'v.json'}")
        assert code in (0, 1, 2), err
        assert "candidate: quickstart -> quickstart@1" in out
        assert json.loads((ws / "v.json").read_text())["candidate"]["model"] == "quickstart@1"


# examples whose flow needs more than the docs' command sequences (a registered SFT adapter first, then
# preference training), run end to end by another test; that test must name the file
RUN_ELSEWHERE = {"examples/quickstart-dpo.yaml": "tests/test_preference.py", "examples/quickstart-orpo.yaml": "tests/test_preference.py",
                 "examples/sweep-rank.yaml": "tests/test_sweep.py", "examples/quickstart-preserve.yaml": "tests/test_preserve.py",
                 "examples/quickstart-preserve-dpo.yaml": "tests/test_preserve.py"}


def test_every_example_config_is_run(workspace, compared):
    written = {f"examples/{p.name}" for p in (REPO / "examples").glob("*.yaml")}
    elsewhere = {e for e, test in RUN_ELSEWHERE.items() if Path(e).name in (REPO / test).read_text()}
    missing = written - workspace["ran"] - elsewhere
    assert not missing, f"examples not run by any README/docs/Makefile command or named test: {sorted(missing)}"


# at least what README.md held before the manual moved to docs/ (8 blocks, 19 commands); the docs hold more
MIN_SEQUENCES, MIN_COMMANDS = 9, 22


def unwrap_optional(cmd: str) -> str:
    """`laf history show NAME [--suite S] [--json]` as a runnable line: the optional parts given (brackets dropped)."""
    return re.sub(r"\[([^\[\]]*)\]", r"\1", cmd)


def test_every_documented_command_is_one_the_cli_accepts():
    from harness.cli import build_parser

    seqs = doc_sequences()
    cmds = [c for _, cs in seqs for c in cs] + [makefile_demo()]
    print(f"{len(seqs)} command blocks, {len(cmds) - 1} commands in README.md and docs/, + make demo")
    assert len(seqs) >= MIN_SEQUENCES and len(cmds) - 1 >= MIN_COMMANDS, "a command block was lost from the docs"
    refused = []
    for cmd in cmds:
        argv = shlex.split(unwrap_optional(cmd))
        assert argv[0] == "laf", cmd
        try:
            build_parser().parse_args(argv[1:])
        except SystemExit as e:  # argparse: usage error (2)
            refused.append((cmd, e.code))
    assert not refused, f"documented commands the CLI refuses: {refused}"


def test_readme_links_reach_files():
    """README.md is not part of the docs build (mkdocs checks the links inside docs/): its relative links must hold too."""
    text = (REPO / "README.md").read_text()
    links = [m[1].split("#", 1)[0] for m in re.finditer(r"\]\(([^)\s]+)\)", text) if not re.match(r"[a-z]+:", m[1])]
    assert len(links) >= 20, "the README links into the manual"
    broken = [link for link in links if not (REPO / link).exists()]
    assert not broken, f"README links to missing files: {broken}"


def yaml_block(page: str, first_line: str) -> str:
    """The YAML code block of docs/PAGE whose first line starts with `first_line`."""
    blocks = [body for lang, body in code_blocks((REPO / "docs" / page).read_text()) if lang == "yaml" and body.startswith(first_line)]
    assert len(blocks) == 1, f"docs/{page} should show one yaml block starting with {first_line!r}, found {len(blocks)}"
    return blocks[0]


def _train(data: dict):
    from harness.train.config import TrainConfig

    return TrainConfig, {"name": "example", "data": {"path": "train.jsonl"}, **data}


def _policy(data: dict):
    from harness.gate.policy import Policy

    return Policy, data


def _merge(data: dict):
    from harness.merge.config import MergeConfig

    return MergeConfig, data


def _merge_t(data: dict):
    from harness.merge.config import MergeConfig

    return MergeConfig, {"name": "m", "method": "slerp", "adapters": ["a@1", "b@1"], **data}


def _select(data: dict):
    from harness.pipeline.config import RunSelect

    return RunSelect, data["select"]


def _run(data: dict):
    from harness.pipeline.config import RunConfig

    return RunConfig, data


def _sweep(data: dict):
    from harness.sweep.config import SweepConfig

    return SweepConfig, {"data": {"path": "train.jsonl"}, "eval": {"suites": ["domain/tempo-t4"]}, **data}


# the run config reference shows two placeholders for blocks documented on their own (the training keys, the policy)
RUN_PLACEHOLDERS = {"train: {...}": "train: {lora: {r: 8}}", "policy: {rules: [...]}": "policy: {rules: [{category: domain, min_gain: 0.1}]}"}


# the config examples of the manual that are whole (no `...` placeholders), validated by the model that reads them
CONFIG_EXAMPLES = [
    ("config.md", "name: quickstart", _run),                # the run config reference (placeholders filled)
    ("config.md", "name: support", _train),                 # the training config reference
    ("preference.md", "objective: dpo", _train),            # preference training keys
    ("forgetting.md", "preserve:", _train),                 # the preserve block
    ("forgetting.md", "select:", _select),                  # checkpoint selection
    ("gate-policy.md", "confidence:", _policy),             # the gate policy reference
    ("merging.md", "name: m ", _merge),                     # the minimal merge config
    ("merging.md", "t:", _merge_t),                         # SLERP's filtered t
    ("sweeps.md", "name: sweep-rank", _sweep),              # axes and the recommendation margin
]


@pytest.mark.parametrize("page,first_line,model", CONFIG_EXAMPLES, ids=[f"{p}:{f.strip()}" for p, f, _ in CONFIG_EXAMPLES])
def test_documented_config_examples_validate(page, first_line, model):
    from harness.config import parse_yaml, validate

    text = yaml_block(page, first_line)
    if model is _run:
        for placeholder, filled in RUN_PLACEHOLDERS.items():
            assert placeholder in text, placeholder
            text = text.replace(placeholder, filled)
    cls, data = model(parse_yaml(text))
    cfg = validate(cls, data, f"docs/{page}")
    if cls.__name__ == "MergeConfig":
        from harness.merge.config import check_method_params

        check_method_params(cfg, f"docs/{page}")
    if cls.__name__ == "RunConfig":
        dumped = cfg.model_dump(by_alias=True)  # the same check whether `train:`/`merge:` are dicts or typed models
        assert dumped["train"]["lora"]["r"] == 8 and [m["method"] for m in dumped["merge"]] == ["slerp"]
    if cls.__name__ == "SweepConfig":
        from harness.sweep.config import expand

        points = expand(cfg)
        assert len(points) == 5 * 2 and len({p.name for p in points}) == 10, "lora.r x optim.lr as the page says"


def test_documented_python_snippet_runs_offline(tmp_path):
    """docs/suites.md's `evaluate.load(harness.metrics.path(...))` block, run as written with the hub out of reach."""
    [code] = [body for lang, body in code_blocks((REPO / "docs" / "suites.md").read_text()) if lang == "python"]
    runner = ("import ast, json, sys\nsrc = sys.stdin.read()\ntree = ast.parse(src)\nlast = tree.body.pop()\nns = {}\n"
              "exec(compile(tree, 'snippet', 'exec'), ns)\nprint(json.dumps(eval(compile(ast.Expression(last.value), 'snippet', 'eval'), ns)))\n")
    env = {"PYTHONPATH": str(REPO), "PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HF_HOME": str(tmp_path / "hf"),
           "HF_EVALUATE_OFFLINE": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", runner], input=code, cwd=tmp_path, capture_output=True, text=True, timeout=300, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    # "relay stuck open" vs "Boiler relay stuck open.": 3 shared tokens, precision 1, recall 3/4
    assert got["token_f1"] == pytest.approx(2 * 1 * 0.75 / 1.75)


def test_documented_entry_point_names_the_group_we_read():
    import tomllib

    from harness.suites.suite_types import ENTRY_POINT_GROUP

    [block] = [body for lang, body in code_blocks((REPO / "docs" / "suites.md").read_text()) if lang == "toml"]
    groups = tomllib.loads(block)["project"]["entry-points"]
    assert list(groups) == [ENTRY_POINT_GROUP]
    for target in groups[ENTRY_POINT_GROUP].values():
        assert re.fullmatch(r"[\w.]+:\w+", target), target


def test_exit_code_when_candidates_disagree():
    def v(model, status, code):
        return {"model": model, "verdict": status, "exit_code": code}

    assert combined_exit([v("a@1", "pass", 0), v("b@1", "pass", 0)])[0] == 0
    code, why = combined_exit([v("a@1", "pass", 0), v("b@1", "fail", 1), v("c@1", "inconclusive", 2)])
    assert code == 1 and "a@1 PASS" in why and "b@1 FAIL" in why and "every candidate passes" in why
    assert combined_exit([v("a@1", "pass", 0), v("b@1", "inconclusive", 2)])[0] == 2
    assert combined_exit([v("a@1", "pass", 0), v("b@1", "inconclusive", 0)])[0] == 0, "inconclusive: pass counts as passing"
    assert combined_exit([]) == (0, "exit 0: no gate")


def test_github_actions_annotates_every_candidate(workspace, compared, tmp_path, monkeypatch):
    run_cmd = compared[-1][0]
    monkeypatch.setenv("GITHUB_ACTIONS", "true")
    monkeypatch.setenv("GITHUB_STEP_SUMMARY", str(tmp_path / "step.md"))
    with inside(workspace["dir"]):
        code, _, err = laf(run_cmd)
    assert code in (0, 1, 2), err[-3000:]
    summary = json.loads((workspace["dir"] / "reports" / "compare" / "run.json").read_text())
    notes = [line for line in err.splitlines() if line.startswith(("::error", "::warning"))]
    for v in summary["verdicts"]:
        mine = [n for n in notes if f"title=laf gate {v['model']} " in n]
        assert len(mine) == len(v["failed_rules"]) and all(f"::{v['model']}: " in n for n in mine), (v, notes)
    step = (tmp_path / "step.md").read_text()
    assert all(f"### Candidate `{v['model']}`" in step for v in summary["verdicts"])
    assert summary["exit_explanation"] in step


def test_report_compare_section_is_inert():
    from harness.report.html import _compare

    bad = "<script>alert(1)</script>"
    html = _compare({"compare": {
        "columns": [{"key": bad, "metric": bad, "unit": bad, "shown_as": bad, "better": bad}],
        "ranking": [{"rank": bad, "candidate": bad, "pareto": True, "domain_p_holm": bad, "verdict": bad, "failed_rules": [bad],
                     "columns": {bad: {"change": bad, "unit": "points", "ci_low": 0.1, "ci_high": 0.2}}}],
        "pareto_on": {"quantities": [bad, bad], "source": bad}, "winner": {"candidate": bad, "reason": bad}}})
    assert "<script>" not in html and "&lt;script&gt;" in html
