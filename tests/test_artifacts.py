"""Typed artifacts (harness.results.artifacts): files written before the models existed load and round-trip to the
same JSON, the stages' functions return the models, the one reader turns every kind of bad file into one error
naming the file, the field and the fix, and `laf schema KIND` prints a JSON Schema the artifacts validate against.

tests/fixtures/artifacts/ holds artifacts written by the code before the models (commit 77f29df): sweep.json,
verdict.json and run.json of tests/test_sweep.py's example sweep, tests/test_parity.py's merge + parity run and
tests/test_diversity.py's diversity stage; calibration.json and diversity.json of `laf calibrate` / `laf diversity`
on tests/synthetic.py runs.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from jsonschema import Draft202012Validator

from harness.errors import LafError
from harness.results.artifacts import (
    KINDS,
    MAX_BYTES,
    CalibrationDoc,
    CompareDoc,
    DiversityDoc,
    ParityDoc,
    RunDoc,
    SweepDoc,
    VerdictDoc,
    json_schema,
    read,
)
from tests.conftest import assert_clean_error, run_cli
from tests.synthetic import suite_meta, write_run

FIXTURES = Path(__file__).parent / "fixtures" / "artifacts"
BY_FILE = {"sweep.json": SweepDoc, "verdict-sweep.json": VerdictDoc, "verdict.json": VerdictDoc, "compare.json": CompareDoc, "run.json": RunDoc,
           "run-diversity.json": RunDoc, "parity.json": ParityDoc, "calibration.json": CalibrationDoc, "diversity.json": DiversityDoc,
           "results.json": KINDS["results"]}
SUITES = {"domain/support": suite_meta("domain"), "general/facts": suite_meta("general")}


def _writer_text(doc: dict) -> str:
    """What ``atomic_write_json`` (and ``results.json``'s writer) put on disk."""
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def _values(rng, n: int, p: float = 0.6) -> dict:
    return {s: (rng.random(n) < p).astype(int).tolist() for s in SUITES}


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A synthetic run with a base and two adapters, and two noisy runs of one model (for calibrate)."""
    tmp = tmp_path_factory.mktemp("artifacts")
    rng = np.random.default_rng(3)
    base = _values(rng, 120)
    strong = dict(base, **{"domain/support": (rng.random(120) < 0.95).astype(int).tolist()})
    weak = dict(base, **{"general/facts": (np.array(base["general/facts"]) & (rng.random(120) < 0.8)).astype(int).tolist()})
    run = write_run(tmp / "run", SUITES, {"base": base, "strong@1": strong, "weak@1": weak})
    other = dict(base, **{"general/facts": [1 - v if i < 4 else v for i, v in enumerate(base["general/facts"])]})
    noisy = write_run(tmp / "noisy", SUITES, {"base": other})
    policy = tmp / "policy.yaml"
    policy.write_text("rules:\n  - {category: domain, min_gain: 0.05}\n  - {category: general, max_drop: 0.05}\n")
    return {"tmp": tmp, "run": run, "noisy": noisy, "policy": policy}


# ---------------------------------------------------------------- the JSON on disk does not change


@pytest.mark.parametrize("name", sorted(BY_FILE))
def test_files_written_before_the_models_load_and_round_trip_to_identical_json(name):
    text = (FIXTURES / name).read_text("utf-8")
    model = BY_FILE[name]
    doc = read(FIXTURES / name, model)
    out = doc.to_dict()
    assert out == json.loads(text)
    assert _writer_text(out) == text  # key order and number types included: the bytes a writer puts on disk
    assert model.from_dict(out).to_dict() == out


@pytest.mark.parametrize("name", ["verdict.json", "verdict-sweep.json"])
def test_old_verdicts_still_pass_the_sealed_reader(name):
    from harness.gate.verdict import load_verdict, read_verdict

    v = read_verdict(FIXTURES / name)
    assert v == json.loads((FIXTURES / name).read_text("utf-8"))
    verdict = load_verdict(FIXTURES / name)
    assert verdict.status == v["verdict"] and verdict.to_dict() == v  # the object writes back the same sealed document


def test_the_current_writers_write_what_the_models_read_back(runs, tmp_path):
    """`laf compare`, `laf calibrate`, `laf gate` and `laf diversity` on synthetic runs: each file is its model's
    ``to_dict()``, byte for byte as written."""
    run = Path(shutil.copytree(runs["run"], tmp_path / "run"))
    code, out, err = run_cli("compare", str(run), "--policy", str(runs["policy"]), "--output", str(tmp_path / "compare.json"), "--json",
                             "--history", "off")
    assert code in (0, 1, 2), err
    assert json.loads(out) == json.loads((tmp_path / "compare.json").read_text())
    code, _, err = run_cli("calibrate", str(run), str(runs["noisy"]), "--output", str(tmp_path / "calibration.json"))
    assert code == 0, err
    code, _, err = run_cli("gate", "--baseline", str(run), "--candidate", f"{run}#strong@1", "--policy", str(runs["policy"]), "--history", "off")
    assert code in (0, 1, 2), err
    code, _, err = run_cli("diversity", str(run))
    assert code == 0, err
    for path, model in ((tmp_path / "compare.json", CompareDoc), (tmp_path / "calibration.json", CalibrationDoc), (run / "verdict.json", VerdictDoc),
                        (run / "diversity.json", DiversityDoc)):
        text = path.read_text("utf-8")
        assert _writer_text(read(path, model).to_dict()) == text, path.name


def test_compare_and_calibrate_return_the_models(runs):
    from harness.gate.calibrate import calibrate
    from harness.gate.compare import compare_runs
    from harness.gate.policy import load_policy
    from harness.gate.rules import evaluate_gate
    from harness.gate.runs import load_side

    run = runs["run"]
    doc = compare_runs([str(run)], None, str(runs["policy"]))
    assert isinstance(doc, CompareDoc)
    assert [r.rank for r in doc.ranking] == [1, 2] and doc.ranking[0].model == "strong@1"
    # a verdict handed in as the object the gate made is used as is (laf run's gate stage -> compare stage)
    verdict = evaluate_gate(load_side(f"{run}#base", "baseline", True), load_side(f"{run}#weak@1", "candidate", False),
                            load_policy(runs["policy"]), "p")
    given = compare_runs([str(run)], None, None, verdicts={"weak@1": verdict})
    row = given.row("weak@1")
    assert row is not None and row.verdict == verdict.status and row.exit_code == verdict.exit_code
    assert given.row("strong@1").verdict is None  # no policy and no verdict given: not gated
    cal = calibrate(str(run), str(runs["noisy"]))
    assert isinstance(cal, CalibrationDoc)
    facts = cal.suites["general/facts"]
    assert facts.flip_rate == pytest.approx(4 / 120) and facts.suggested_margin >= max(abs(facts.ci_low), abs(facts.ci_high))


# ---------------------------------------------------------------- bad files: one error naming the file, the field and the fix


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.parametrize("name", sorted(BY_FILE))
def test_every_kind_of_bad_file_is_one_error_naming_file_field_and_fix(name, tmp_path):
    model = BY_FILE[name]
    good = json.loads((FIXTURES / name).read_text("utf-8"))
    path = tmp_path / name

    def refused(text: str, *needles: str) -> LafError:
        _write(path, text)
        with pytest.raises(LafError) as e:
            read(path, model)
        assert str(path) in e.value.cause and e.value.fix, e.value.cause
        for n in needles:
            assert n in e.value.cause, (n, e.value.cause)
        return e.value

    refused("{not json", "not valid JSON")
    refused("[1, 2]", "expected a JSON object")
    path.write_bytes(b"{\"a\": \"\xff\"}")
    with pytest.raises(LafError, match="not UTF-8"):
        read(path, model)
    refused("[" * 100_000 + "]" * 100_000, "nested too deeply")
    if model.model_config.get("extra") == "forbid":  # a key no writer of this version writes
        refused(json.dumps({**good, "zz_unknown": 1}), "field zz_unknown")
    elif "pairs" in good:
        refused(json.dumps({**good, "pairs": "none"}), "field pairs")
    else:
        refused(json.dumps({**good, "schema": "laf.other/9"}), "field schema")
    # a non-finite number anywhere (1e999 parses to infinity; a bare NaN is not JSON)
    refused(json.dumps(good)[:-1] + ', "zz_big": 1e999}', "not a finite number")
    refused(json.dumps(good)[:-1] + ', "zz_nan": NaN}', "NaN")
    # a file larger than any artifact is refused before it is read (a sparse file: no disk used)
    with open(path, "wb") as f:
        f.truncate(MAX_BYTES + 1)
    with pytest.raises(LafError, match="larger than"):
        read(path, model)
    with pytest.raises(LafError, match="file not found"):
        read(tmp_path / "missing.json", model)


def test_a_wrong_type_names_the_field(tmp_path):
    doc = json.loads((FIXTURES / "sweep.json").read_text("utf-8"))
    doc["points"][2]["rank"] = "3"
    with pytest.raises(LafError, match=r"sweep.json: field points\[2\].rank: "):
        read(_write(tmp_path / "sweep.json", json.dumps(doc)), SweepDoc)
    doc = json.loads((FIXTURES / "run.json").read_text("utf-8"))
    doc["exit_code"] = True  # a bool is not an exit code
    with pytest.raises(LafError, match="field exit_code: expected an exit code"):
        read(_write(tmp_path / "run.json", json.dumps(doc)), RunDoc)
    doc = json.loads((FIXTURES / "parity.json").read_text("utf-8"))
    doc["pairs"][0]["items"] = -1
    with pytest.raises(LafError, match=r"field pairs\[0\].items: expected a count"):
        read(_write(tmp_path / "parity.json", json.dumps(doc)), ParityDoc)
    doc = json.loads((FIXTURES / "compare.json").read_text("utf-8"))
    doc["ranking"][0]["columns"][next(iter(doc["ranking"][0]["columns"]))]["change"] = "high"
    with pytest.raises(LafError, match=r"field ranking\[0\].columns\..*\.change: not a finite number"):
        read(_write(tmp_path / "compare.json", json.dumps(doc)), CompareDoc)


def test_the_report_reads_compare_and_sweep_through_the_models(runs, tmp_path):
    """A compare.json or sweep.json of the wrong shape in a run folder stops `laf report` with one error naming it."""
    run = Path(shutil.copytree(runs["run"], tmp_path / "run"))
    assert run_cli("compare", str(run), "--history", "off")[0] == 0
    good = json.loads((run / "compare.json").read_text())
    (run / "compare.json").write_text(json.dumps({**good, "ranking": [{**good["ranking"][0], "rank": "first"}]}))
    assert_clean_error(run_cli("report", str(run), "--out", str(tmp_path / "r.html")), "compare.json", "ranking[0].rank")
    (run / "compare.json").write_text(json.dumps(good))
    (run / "sweep.json").write_text(json.dumps({"schema": "laf.sweep/1", "name": "x"}))
    assert_clean_error(run_cli("report", str(run), "--out", str(tmp_path / "r.html")), "sweep.json", "field")
    assert not (tmp_path / "r.html").exists()
    (run / "sweep.json").unlink()
    assert run_cli("report", str(run), "--out", str(tmp_path / "r.html"))[0] == 0


# ---------------------------------------------------------------- laf schema KIND


def test_laf_schema_prints_a_valid_schema_that_the_artifacts_validate_against(runs):
    assert set(KINDS) == {"results", "verdict", "compare", "sweep", "run", "calibration", "parity", "diversity"}
    for kind in KINDS:
        code, out, err = run_cli("schema", kind)
        assert code == 0, err
        schema = json.loads(out)
        assert schema == json_schema(kind)
        Draft202012Validator.check_schema(schema)
        validator = Draft202012Validator(schema)
        for name, model in BY_FILE.items():
            if model.KIND == kind:
                errors = list(validator.iter_errors(json.loads((FIXTURES / name).read_text("utf-8"))))
                assert not errors, (name, [e.message for e in errors[:3]])
    # what the current code writes validates too, and a wrong document does not
    run = Path(shutil.copytree(runs["run"], runs["tmp"] / "schema-run"))
    assert run_cli("compare", str(run), "--history", "off")[0] == 0
    compare = Draft202012Validator(json_schema("compare"))
    assert not list(compare.iter_errors(json.loads((run / "compare.json").read_text())))
    assert not list(Draft202012Validator(json_schema("results")).iter_errors(json.loads((run / "results.json").read_text())))
    assert list(compare.iter_errors({"schema": "laf.compare/2", "ranking": "x"}))


def usage_error(*argv: str) -> tuple[int, str, str]:
    """``laf`` with bad arguments, in-process: argparse exits through SystemExit (code 2), usage on stderr."""
    import contextlib
    import io

    from harness.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), pytest.raises(SystemExit) as e:
        main(list(argv))
    return int(e.value.code or 0), out.getvalue(), err.getvalue()


def test_laf_schema_with_an_unknown_kind_exits_2_with_the_choices():
    code, out, err = usage_error("schema", "bogus")
    assert code == 2
    assert all(k in err for k in KINDS) and "Traceback" not in err


def test_reader_refuses_a_fifo_without_hanging(tmp_path):
    fifo = tmp_path / "compare.json"
    os.mkfifo(fifo)
    with pytest.raises(LafError, match="not a plain file"):
        read(fifo, CompareDoc)
