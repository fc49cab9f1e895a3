"""Hostile inputs met by the commands that read run folders and write outputs: an output that names one of the run's
own files, a device, a pipe or a symlink; per-item values of the wrong type, too large or nested too deep; a policy
whose margin is a YAML yes/no; a named pipe where a file is expected; terminal control characters in names."""

from __future__ import annotations

import json
import os
import stat
import threading
from pathlib import Path

import pytest

from harness.errors import LafError
from harness.results import seal_run
from tests.conftest import run_cli
from tests.synthetic import suite_meta, write_run

POLICY = "confidence: 0.95\nmin_items: 10\nrules:\n  - {category: domain, min_gain: 0.0}\n  - {category: general, max_drop: 0.05}\n"


def _run(folder: Path, model: str = "ad@1") -> Path:
    suites = {"dom": suite_meta("domain"), "gen": suite_meta("general")}
    values = {m: {s: [1.0] * k + [0.0] * (40 - k) for s in suites} for m, k in (("base", 20), (model, 24))}
    return write_run(folder, suites, values)


def _tamper(folder: Path, results=None, records=None) -> None:
    """Edit a run's results and records as anyone who can write the folder can, and re-seal it."""
    doc = json.loads((folder / "results.json").read_text())
    recs = [json.loads(line) for line in (folder / "records.jsonl").read_text().splitlines() if line]
    if results:
        results(doc)
    if records:
        records(recs)
    (folder / "results.json").write_text(json.dumps(doc))
    (folder / "records.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    seal_run(folder)


@pytest.fixture()
def run(tmp_path) -> Path:
    return _run(tmp_path / "run")


@pytest.fixture()
def policy(tmp_path) -> Path:
    p = tmp_path / "policy.yaml"
    p.write_text(POLICY)
    return p


# ---------------------------------------------------------------- outputs


@pytest.mark.parametrize("name", ["results.json", "records.jsonl", "integrity.json"])
def test_an_output_never_replaces_the_runs_own_files(run, policy, name):
    before = (run / name).read_bytes()
    for argv in (("report", str(run), "-o", str(run / name)),
                 ("gate", "--baseline", str(run), "--candidate", str(run), "--policy", str(policy), "-o", str(run / name)),
                 ("compare", str(run), "-o", str(run / name))):
        code, _, err = run_cli(*argv)
        assert code == 3, (argv, err)
        assert "one of this command's own inputs" in err
        assert (run / name).read_bytes() == before
    code, _, err = run_cli("report", str(run), "-o", str(run.parent / "r.html"))  # the run still reads
    assert code == 0, err


def test_an_output_does_not_replace_a_symlink_a_pipe_or_a_folder(run, tmp_path):
    target = tmp_path / "precious.txt"
    target.write_text("keep")
    link = tmp_path / "link.html"
    link.symlink_to(target)
    fifo = tmp_path / "pipe.html"
    os.mkfifo(fifo)
    folder = tmp_path / "folder.html"
    folder.mkdir()
    for path, words in ((link, "is a symlink"), (fifo, "is a named pipe"), (folder, "is a folder")):
        code, _, err = run_cli("report", str(run), "-o", str(path))
        assert code == 3 and words in err, err
    assert link.is_symlink() and target.read_text() == "keep"
    assert stat.S_ISFIFO(fifo.lstat().st_mode) and folder.is_dir()


def test_an_output_streams_into_a_device_or_pipe_named_under_dev(tmp_path):
    from harness.io import atomic_write_text

    atomic_write_text("/dev/null", "nothing\n")
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)  # written into, not replaced by a regular file
    r, w = os.pipe()
    try:
        atomic_write_text(f"/proc/self/fd/{w}", "through the pipe\n")
        os.close(w)
        w = None
        assert os.read(r, 100) == b"through the pipe\n"
    finally:
        os.close(r)
        if w is not None:
            os.close(w)
    with open(tmp_path / "redirected.md", "w") as f:  # `laf report RUN --format md -o /dev/stdout > file`
        f.write("printed before\n")
        f.flush()
        atomic_write_text(f"/dev/fd/{f.fileno()}", "the report\n")
    assert (tmp_path / "redirected.md").read_text() == "printed before\nthe report\n"
    assert not (tmp_path / "redirected.md").is_symlink()
    if Path("/dev/full").exists():
        with pytest.raises(LafError, match="No space left"):
            atomic_write_text("/dev/full", "x")
        assert stat.S_ISCHR(os.stat("/dev/full").st_mode)


def test_read_json_refuses_pipes_bombs_and_bad_bytes_without_hanging(tmp_path):
    from harness.io import read_json

    fifo = tmp_path / "c.json"
    os.mkfifo(fifo)
    box: list = []
    t = threading.Thread(target=lambda: box.append(pytest.raises(LafError, read_json, fifo)), daemon=True)
    t.start()
    t.join(10)
    assert box and "named pipe" in str(box[0].value)
    big = tmp_path / "big.json"
    big.write_text(json.dumps({"pad": "x" * 5000}))
    with pytest.raises(LafError, match="larger than"):
        read_json(big, max_bytes=1000)
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(LafError, match="nested too deeply"):
        read_json(deep)
    bad = tmp_path / "bad.json"
    bad.write_bytes(b'{"a": "\xff"}')
    with pytest.raises(LafError, match="not UTF-8"):
        read_json(bad)
    folder = tmp_path / "dir.json"
    folder.mkdir()
    with pytest.raises(LafError, match="a folder"):
        read_json(folder)


# ---------------------------------------------------------------- the run's contents


@pytest.mark.parametrize("value, words", [("x", "expected a number, got str"), ([1, 2, 3, 4, 5, 6, 7, 8, 9], "a list of 9"),
                                          ({"a": 1}, "got dict"), (10**400, "too large for a float"), ([1, "a"], "got str")])
def test_a_metric_value_that_is_not_a_number_is_one_error(run, policy, value, words):
    def edit(recs):
        recs[2]["metrics"]["acc"] = value

    _tamper(run, records=edit)
    for argv in (("gate", "--baseline", str(run), "--candidate", str(run), "--policy", str(policy), "-o", str(run.parent / "v.json")),
                 ("report", str(run), "-o", str(run.parent / "r.html")), ("compare", str(run))):
        code, _, err = run_cli(*argv)
        assert code == 3, (argv, err)
        assert words in err and "metrics.acc" in err and "item 2" in err


def test_a_record_nested_too_deeply_and_a_deep_results_json_are_errors(run, policy):
    def edit(recs):
        recs[2]["target"] = json.loads("[" * 800 + "]" * 800)

    _tamper(run, records=edit)
    code, _, err = run_cli("gate", "--baseline", str(run), "--candidate", str(run), "--policy", str(policy), "-o", str(run.parent / "v.json"))
    assert code == 3 and "target: nested deeper than 64 levels" in err, err
    (run / "results.json").write_text("[" * 200_000 + "]" * 200_000)
    seal_run(run)
    code, _, err = run_cli("report", str(run), "-o", str(run.parent / "r.html"))
    assert code == 3 and "nested too deeply" in err, err


def test_results_json_is_read_within_a_bound(run, monkeypatch):
    import harness.results.store as store

    monkeypatch.setattr(store, "MAX_RESULTS_BYTES", 500)
    code, _, err = run_cli("report", str(run), "-o", str(run.parent / "r.html"))
    assert code == 3 and "larger than" in err, err


def test_values_near_the_float_limit_are_an_error_not_a_traceback(run, policy):
    def edit(recs):
        for i, r in enumerate(recs):
            if r["suite"] == "gen":
                r["metrics"]["acc"] = (1e308 if i % 2 else -1e308) if r["model"] == "ad@1" else 1e308

    _tamper(run, records=edit)
    for argv in (("gate", "--baseline", str(run), "--candidate", str(run), "--policy", str(policy), "-o", str(run.parent / "v.json")),
                 ("compare", str(run))):
        code, _, err = run_cli(*argv)
        assert code == 3 and "overflow the paired statistics" in err, err


def test_compare_refuses_the_same_candidate_twice(run):
    code, _, err = run_cli("compare", str(run), f"{run}#ad@1")
    assert code == 3 and "is given twice" in err, err


# ---------------------------------------------------------------- the policy


@pytest.mark.parametrize("margin", ["yes", "true", "on", "'0x10'", "'ten'"])
def test_a_policy_margin_given_as_yes_or_text_is_refused(run, tmp_path, margin):
    p = tmp_path / "p.yaml"
    p.write_text(f"rules:\n  - {{category: general, max_drop: {margin}}}\n")
    code, _, err = run_cli("gate", "--baseline", str(run), "--candidate", str(run), "--policy", str(p), "-o", str(tmp_path / "v.json"))
    # a yes/no: the configs' shared rule (harness.config.StrictModel); text: pydantic's own number parsing
    assert code == 3 and "max_drop" in err and ("expected a number" in err or "should be a valid number" in err), err
    assert not (tmp_path / "v.json").exists()


def test_a_policy_margin_written_as_1e_2_still_reads_as_a_number(tmp_path):
    from harness.gate.policy import load_policy

    p = tmp_path / "p.yaml"
    p.write_text("min_items: 10\nrules:\n  - {category: general, max_drop: 1e-2}\n")  # PyYAML reads 1e-2 as text
    assert load_policy(p).rules[0].max_drop == 0.01


def test_a_named_pipe_as_the_policy_is_an_error_not_a_hang(run, tmp_path):
    fifo = tmp_path / "policy.yaml"
    os.mkfifo(fifo)
    box: list = []
    t = threading.Thread(target=lambda: box.append(run_cli("gate", "--baseline", str(run), "--candidate", str(run), "--policy", str(fifo),
                                                           "-o", str(tmp_path / "v.json"))), daemon=True)
    t.start()
    t.join(30)
    assert box, "laf gate hung on a named pipe given as --policy"
    code, _, err = box[0]
    assert code == 3 and "empty" in err, err


# ---------------------------------------------------------------- the terminal


def test_terminal_control_characters_from_a_run_never_reach_the_terminal(tmp_path):
    hostile = "ad\x1b]0;PWNED\x07\x1b[31mRED\x9b2J@1"
    run = _run(tmp_path / "run", model=hostile)
    code, out, err = run_cli("compare", str(run), "--format", "md")
    assert code == 0, err
    assert "\x1b" not in out and "\x07" not in out and "\x9b" not in out
    assert "PWNED" in out  # the name is shown, its control characters as U+FFFD
    code, out, err = run_cli("compare", str(run), "--json")
    assert code == 0 and "\x1b" not in out and "\x9b" not in out
    assert any(c["model"] == hostile for c in json.loads(out)["ranking"])  # JSON keeps the name exactly (escaped)
    code, _, err = run_cli("gate", "--baseline", str(run), "--candidate", f"{run}#nosuch\x1b[2J", "--policy", str(tmp_path / "none.yaml"))
    assert code == 3 and "\x1b" not in err


def test_a_lone_surrogate_in_a_name_is_printed_and_written_without_a_traceback(tmp_path):
    hostile = "sur\ud800x@1"  # what a "\\ud800" escape in a run's JSON reads as
    run = _run(tmp_path / "run", model=hostile)
    policy = tmp_path / "p.yaml"
    policy.write_text(POLICY)
    code, out, err = run_cli("gate", "--baseline", str(run), "--candidate", str(run), "--policy", str(policy), "-o", str(tmp_path / "v.json"),
                             "--history", "off")
    assert code in (0, 1, 2), err
    assert json.loads((tmp_path / "v.json").read_text())["candidate"]["model"] == hostile  # the escape reads back as the name
    for fmt in ("md", "json"):
        code, out, err = run_cli("compare", str(run), "--format", fmt)
        assert code == 0, err
        out.encode("utf-8")  # printable: no lone surrogate reached the stream


# ---------------------------------------------------------------- the evaluation's cache and output folder


def _reseal(cache: Path, edit) -> None:
    """Edit the stored suite result and seal it again, as anyone who can write the cache file can."""
    import sqlite3

    from harness.evaluate.cache import SUITE_RESULT_KIND, row_seal

    with sqlite3.connect(cache) as c:
        (key, value), = c.execute("SELECT key, value FROM suite_results").fetchall()
        stored = json.loads(value)
        edit(stored)
        text = json.dumps(stored)
        c.execute("UPDATE suite_results SET value = ?, seal = ?", (text, row_seal(key, SUITE_RESULT_KIND, text)))


@pytest.mark.parametrize("edit", [
    lambda d: d["records"][0]["metrics"].__setitem__("acc", "x"),  # the run folder's reader refuses it
    lambda d: d["records"][0].__setitem__("doc", {"q": json.loads("[" * 300 + "]" * 300)}),
    lambda d: [r.__setitem__("suite", "../../evil") for r in d["records"]],  # another suite's records
    lambda d: d["records"][1].__setitem__("suite", "other"),  # records of two suites
], ids=["metric-text", "deep-doc", "other-suite", "two-suites"])
def test_a_sealed_but_wrong_stored_suite_result_is_a_miss_not_a_failure(tiny_model_dir, tmp_path, edit):
    from harness.evaluate import load_run, run_eval
    from tests.test_eval import spec, write_mc_suite

    suite = write_mc_suite(tmp_path / "s", n=6)
    run_eval(spec(tmp_path, tiny_model_dir, [suite]))
    want = [r.to_dict() for r in load_run(tmp_path / "out")[1]]
    _reseal(tmp_path / "cache.sqlite", edit)
    logs: list[str] = []
    doc = run_eval(spec(tmp_path, tiny_model_dir, [suite], out=str(tmp_path / "o2")), log=logs.append).to_dict()
    assert any("invalid cached row" in line for line in logs)
    assert doc["models"]["base"]["requests"]["computed"] == 0  # re-derived from the responses
    assert [r.to_dict() for r in load_run(tmp_path / "o2")[1]] == want


def test_eval_refuses_a_symlinked_out_and_a_cache_inside_a_run(tiny_model_dir, tmp_path):
    from harness.evaluate import run_eval
    from tests.test_eval import spec, write_mc_suite

    suite = write_mc_suite(tmp_path / "s", n=4)
    run_eval(spec(tmp_path, tiny_model_dir, [suite]))
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()}
    (tmp_path / "link").symlink_to(tmp_path / "out")
    with pytest.raises(LafError, match="is a symlink"):
        run_eval(spec(tmp_path, tiny_model_dir, [suite], out=str(tmp_path / "link"), limit=2))
    with pytest.raises(LafError, match="finished run's results store"):
        run_eval(spec(tmp_path, tiny_model_dir, [suite], out=str(tmp_path / "o2"), cache=str(tmp_path / "out" / "results.sqlite")))
    assert {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()} == before


def test_a_cache_locked_by_another_process_skips_storing_and_the_run_finishes(tiny_model_dir, tmp_path, monkeypatch):
    import sqlite3

    from harness.evaluate import cache as cache_module
    from harness.evaluate import load_run, run_eval
    from tests.test_eval import spec, write_mc_suite

    suite = write_mc_suite(tmp_path / "s", n=4)
    real = cache_module.ResponseCache.put_many

    def locked(self, items):  # as the 60 s busy wait ends when another process holds the write lock
        self._write_failed(sqlite3.OperationalError("database is locked"))

    monkeypatch.setattr(cache_module.ResponseCache, "put_many", locked)
    logs: list[str] = []
    doc = run_eval(spec(tmp_path, tiny_model_dir, [suite]), log=logs.append).to_dict()
    assert doc["results"]["base"]["toy"]["acc"]["n"] == 4 and len(load_run(tmp_path / "out")[1]) == 4
    assert any("another process held it" in line for line in logs)
    monkeypatch.setattr(cache_module.ResponseCache, "put_many", real)

    def full(self, items):
        self._write_failed(sqlite3.OperationalError("database or disk is full"))

    monkeypatch.setattr(cache_module.ResponseCache, "put_many", full)
    with pytest.raises(LafError, match="disk is full"):
        run_eval(spec(tmp_path, tiny_model_dir, [write_mc_suite(tmp_path / "s2", n=3, name="toy2")], out=str(tmp_path / "o3")))
