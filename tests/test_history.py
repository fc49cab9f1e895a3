"""The release history (harness/history): on SQLite and on a real PostgreSQL server (tests/conftest.py's
``history_url`` runs each test on both; PostgreSQL skips locally without a server and fails under CI=true).

Recording (idempotent), releases, gating against the release on verified records, trends, exports (Parquet, CSV,
MLflow), bad stores (corrupted, unreachable, wrong password, another application's, newer and older schemas),
strings of any content, concurrency (8 writers x 50 runs) and a writer killed mid-record."""

from __future__ import annotations

import csv
import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from harness.errors import LafError
from harness.gate import run_gate
from harness.history import HistoryStore, build_entry, record_outcome
from tests.conftest import REPO, assert_clean_error, run_cli
from tests.synthetic import PROVENANCE, suite_meta, write_run

SUITES = {"domain/qa": suite_meta("domain"), "general/facts": suite_meta("general")}
POLICY = "rules:\n  - {category: domain, min_gain: 0.05}\n  - {category: general, max_drop: 0.05}\nresamples: 500\nmin_items: 20\n"


def _vals(rnd: random.Random, p: float, n: int = 120) -> list[int]:
    return [1 if rnd.random() < p else 0 for _ in range(n)]


@pytest.fixture
def runs(tmp_path) -> dict[str, Path]:
    """Two synthetic evaluation runs: sup@1 (run1) and sup@2 (run2), each with the base, on the same items."""
    rnd = random.Random(7)
    out = {}
    for v, p in ((1, 0.6), (2, 0.7)):
        out[f"run{v}"] = write_run(tmp_path / f"run{v}", SUITES, {"base": {"domain/qa": _vals(rnd, 0.4), "general/facts": _vals(rnd, 0.6)},
                                                                   f"sup@{v}": {"domain/qa": _vals(rnd, p), "general/facts": _vals(rnd, 0.6)}})
    (tmp_path / "policy.yaml").write_text(POLICY)
    out["policy"] = tmp_path / "policy.yaml"
    return out


def _gate(url: str, *args: str) -> tuple[int, dict]:
    code, out, err = run_cli("gate", *args, "--history", url, "--json")
    assert "Traceback" not in err, err
    return code, (json.loads(out) if out.strip().startswith("{") else {"err": err})


# ---------------------------------------------------------------- recording, releases, gating against the release


def test_record_release_gate_against_release_and_trend(history_url, runs):
    code, v1 = _gate(history_url, "--candidate", str(runs["run1"]), "--policy", str(runs["policy"]))
    assert code in (0, 1, 2) and v1["baseline"]["model"] == "base" and v1["baseline_kind"] == "base"
    assert v1["history"]["recorded"]["new"] is True
    # the same gate again: the same run, one entry
    code_again, again = _gate(history_url, "--candidate", str(runs["run1"]), "--policy", str(runs["policy"]))
    assert again["history"]["recorded"]["new"] is False and again["history"]["recorded"]["run_id"] == v1["history"]["recorded"]["run_id"]
    code, out, err = run_cli("release", "sup@1", "--note", "first release", "--history", history_url, "--json")
    assert code == 0, err
    rel = json.loads(out)
    assert rel["candidate"] == "sup@1" and rel["released_by"] and rel["note"] == "first release" and rel["already"] is False
    assert json.loads(run_cli("release", "sup@1", "--history", history_url, "--json")[1])["already"] is True

    code, v2 = _gate(history_url, "--baseline", "released", "--candidate", str(runs["run2"]), "--policy", str(runs["policy"]))
    assert v2["baseline"]["model"] == "sup@1" and v2["baseline_kind"] == "released"
    assert Path(v2["baseline"]["run"]).resolve() == runs["run1"].resolve()
    assert v2["history"]["release"]["candidate"] == "sup@1"
    # paired on the same items: the baseline's numbers are sup@1's own
    assert v2["summaries"]["suites"]["domain/qa"]["base"] == pytest.approx(v1["summaries"]["suites"]["domain/qa"]["candidate"])

    trend = json.loads((runs["run2"] / "trend.json").read_text())
    versions = trend["adapters"][0]["versions"]
    assert [v["candidate"] for v in versions] == ["sup@1", "sup@2"]
    assert versions[0]["released"]["note"] == "first release" and versions[1]["released"] is None
    assert [v["current"] for v in versions] == [False, True] and versions[1]["baseline"] == "sup@1"
    s = versions[1]["suites"]["domain/qa"]
    assert s["ci_low"] <= s["value"] <= s["ci_high"] and s["n"] == 120 and s["metric"] == "acc"

    code, out, _ = run_cli("history", "show", "sup", "--history", history_url, "--json")
    shown = json.loads(out)
    assert code == 0 and [v["version"] for v in shown["versions"]] == [1, 2] and shown["versions"][0]["released"]["candidate"] == "sup@1"
    only = json.loads(run_cli("history", "show", "sup", "--suite", "general/facts", "--history", history_url, "--json")[1])
    assert all(list(v["suites"]) == ["general/facts"] for v in only["versions"])
    listed = json.loads(run_cli("history", "list", "--history", history_url, "--json")[1])["runs"]
    assert [r["candidate"] for r in listed] == ["sup@2", "sup@1"]  # newest first, the repeated gate not duplicated
    with HistoryStore(history_url) as store:
        assert store.count()["laf_runs"] == 2 and store.count()["laf_releases"] == 1

    # the report shows the trend: both versions, the release marked
    code, _, err = run_cli("report", str(runs["run2"]), "-o", str(runs["run2"] / "r.html"))
    html = (runs["run2"] / "r.html").read_text()
    assert code == 0 and 'id="trend"' in html and "sup@1" in html and "released" in html and "this candidate" in html


def test_released_baseline_is_refused_when_its_records_do_not_pair(history_url, runs, tmp_path):
    run_gate(None, str(runs["run1"]), runs["policy"], history=history_url, record=True)
    run_cli("release", "sup@1", "--history", history_url)
    # a candidate scored on other items (a changed suite): refused with the reason, never compared
    other = write_run(tmp_path / "other", SUITES, {"base": {"domain/qa": [1] * 120, "general/facts": [1] * 120},
                                                   "sup@3": {"domain/qa": [1] * 120, "general/facts": [1] * 120}}, item_salt="changed")
    r = run_cli("gate", "--baseline", "released", "--candidate", str(other), "--policy", str(runs["policy"]), "--history", history_url)
    assert_clean_error(r, "sup@1", "other items")
    # scored with another batch size: not paired
    prov = dict(PROVENANCE, batch_size=2)
    rnd = random.Random(7)
    other_bs = write_run(tmp_path / "bs", SUITES, {"base": {"domain/qa": _vals(rnd, 0.4), "general/facts": _vals(rnd, 0.6)},
                                                   "sup@4": {"domain/qa": _vals(rnd, 0.6), "general/facts": _vals(rnd, 0.6)}}, provenance=prov)
    r = run_cli("gate", "--baseline", "released", "--candidate", str(other_bs), "--policy", str(runs["policy"]), "--history", history_url)
    assert_clean_error(r, "sup@1", "scored differently", "batch_size")
    # the released run folder edited after the release: its digest no longer matches
    rec = runs["run1"] / "records.jsonl"
    rec.write_text(rec.read_text().replace('"prediction": 0', '"prediction": 1', 1))
    r = run_cli("gate", "--baseline", "released", "--candidate", str(runs["run2"]), "--policy", str(runs["policy"]), "--history", history_url)
    assert_clean_error(r, "sup@1", "integrity")
    # the folder gone
    import shutil

    shutil.rmtree(runs["run1"])
    r = run_cli("gate", "--baseline", "released", "--candidate", str(runs["run2"]), "--policy", str(runs["policy"]), "--history", history_url)
    assert_clean_error(r, "sup@1", "cannot be used")
    assert not (runs["run2"] / "verdict.json").exists()  # nothing was decided on other items


def test_no_release_yet_gates_against_the_base_and_says_so(history_url, runs):
    code, v = _gate(history_url, "--baseline", "released", "--candidate", str(runs["run2"]), "--policy", str(runs["policy"]))
    assert v["baseline"]["model"] == "base" and v["baseline_kind"] == "base"
    assert any("no version of sup has been released" in n for n in v["notes"]) and v["notes"][0] in v["warnings"]


def test_compare_records_every_candidate(history_url, runs):
    code, out, err = run_cli("compare", f"{runs['run1']}#sup@1", "--history", history_url, "--json")
    assert code == 0, err
    with HistoryStore(history_url) as store:
        rows = store.runs()
    assert [(r["kind"], r["candidate"], r["verdict"]) for r in rows] == [("compare", "sup@1", None)]


# ---------------------------------------------------------------- strings of any content, bound parameters only

NASTY = ["it's \"quoted\"", "x'; DROP TABLE laf_runs; --", "nul\x00byte", "back\\slash \\0 \\u0041", "lone \ud800 surrogate", "ünïcødé ✓"]


def _entry(candidate: str, suite: str, run_id: str | None = None, value: float = 0.5) -> dict:
    ident = {"run": "/tmp/x", "model": candidate, "adapter_digest": "d" * 64, "records_digest": "r" * 64,
             "suites": {suite: {"fingerprint": "f", "category": "domain", "item_digest": "i", "n": 3, "metric": "acc", "higher_is_better": True,
                                "ideal": None, "value": value, "ci_low": value - 0.1, "ci_high": value + 0.1}}}
    verdict = {"baseline": {"model": "base", "identity": {**ident, "model": "base"}, "base_model": {"fingerprint": "b" * 64, "spec": "tiny"}, "load": {"precision": "fp32"}},
               "candidate": {"model": candidate, "identity": ident}, "summaries": {"suites": {suite: {"improvement": 0.1, "ci_low": 0.0, "ci_high": 0.2}}},
               "rules": [{"rule": suite + " rule", "suite": suite, "metric": "acc", "kind": "min_gain", "margin": 0.05, "required": True, "status": "pass",
                          "stats": {"improvement": 0.1, "ci_low": 0.0, "ci_high": 0.2}}],
               "verdict": "pass", "exit_code": 0, "created": "2026-12-06T00:00:00+00:00", "policy": {"source": "p.yaml"}}
    e = build_entry("gate", [verdict])
    if run_id:
        e["run_id"] = run_id
    return e


def test_strings_of_any_content_come_back_identical(history_url):
    big = ("10 MB note; '; DROP TABLE laf_releases; -- \x00 " * 200_000)[:10_000_000]
    with HistoryStore(history_url, write=True) as store:
        for i, text in enumerate(NASTY):
            name = f"{text}@{i + 1}"
            assert store.record(_entry(name, f"suite {text}"))
            rel = store.release(name, released_by=text, released_at=f"2026-12-06T00:00:0{i}+00:00", git_commit=None, note=text if i else big)
            assert rel["name"] == text and rel["version"] == i + 1
        for i, text in enumerate(NASTY):
            t = store.trend(text)
            assert [v["candidate"] for v in t["versions"]] == [f"{text}@{i + 1}"]
            assert list(t["versions"][0]["suites"]) == [f"suite {text}"]
            rel = t["versions"][0]["released"]
            assert rel["released_by"] == text and rel["note"] == (text if i else big)
            assert store.last_release(text)["name"] == text
        assert store.count()["laf_runs"] == len(NASTY)  # the DROP TABLE strings dropped nothing


# ---------------------------------------------------------------- bad stores: one clear error, the password redacted, nothing lost


def test_corrupted_sqlite_file_is_one_clear_error_and_left_untouched(tmp_path):
    bad = tmp_path / "history.sqlite"
    bad.write_bytes(b"this is not a database" * 100)
    before = bad.read_bytes()
    for argv in (("history", "list"), ("release", "sup@1"), ("history", "migrate")):
        assert_clean_error(run_cli(*argv, "--history", str(bad)), str(bad), "not a readable SQLite database")
    assert bad.read_bytes() == before


def test_unreachable_server_and_bad_urls(tmp_path):
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()  # nothing listens there now
    url = f"postgresql://laf:hunter2secret@127.0.0.1:{port}/db"
    code, out, err = run_cli("history", "list", "--history", url)
    assert_clean_error((code, out, err), f"127.0.0.1:{port}", "***")
    assert "hunter2secret" not in out + err
    assert_clean_error(run_cli("history", "list", "--history", "mysql://u:pw@h/db"), "mysql")
    assert_clean_error(run_cli("history", "list", "--history", "sqlite://"), "names no file")
    assert_clean_error(run_cli("history", "list", "--history", str(tmp_path / "none.sqlite")), "no release history")
    assert not (tmp_path / "none.sqlite").exists()  # reading creates nothing


def test_wrong_password_is_redacted(postgres_server):
    from sqlalchemy.engine import make_url

    url = make_url(postgres_server).set(password="wrong-pass-7734").render_as_string(hide_password=False)
    code, out, err = run_cli("history", "list", "--history", url)
    assert_clean_error((code, out, err), "password authentication failed", "***")
    assert "wrong-pass-7734" not in out + err


def test_password_never_written_into_verdict_junit_summary_report(postgres_db, runs, tmp_path):
    from sqlalchemy.engine import make_url

    password = make_url(postgres_db).password
    assert password
    run_gate(None, str(runs["run1"]), runs["policy"], history=postgres_db, record=True)
    run_cli("release", "sup@1", "--history", postgres_db)
    code, out, err = run_cli("gate", "--baseline", "released", "--candidate", str(runs["run2"]), "--policy", str(runs["policy"]), "--history", postgres_db,
                             "--junit", str(tmp_path / "j.xml"), "--summary", str(tmp_path / "s.md"))
    assert code in (0, 1, 2), err
    run_cli("report", str(runs["run2"]), "-o", str(tmp_path / "r.html"))
    written = [runs["run2"] / "verdict.json", runs["run2"] / "trend.json", tmp_path / "j.xml", tmp_path / "s.md", tmp_path / "r.html"]
    for f in written:
        assert password not in f.read_text(), f
    import xml.etree.ElementTree as ET

    props = {p.get("name"): p.get("value") for p in ET.parse(tmp_path / "j.xml").getroot().iter("property")}
    assert props["baseline_kind"] == "released" and props["baseline"].endswith("#sup@1")
    assert "laf:***@" in (runs["run2"] / "verdict.json").read_text() and "laf:***@" in (tmp_path / "r.html").read_text()
    assert password not in out + err


def _foreign(url: str) -> None:
    from sqlalchemy import create_engine, text

    from harness.history.url import sqlalchemy_url

    eng = create_engine(sqlalchemy_url(url))
    with eng.begin() as c:
        c.execute(text("CREATE TABLE alembic_version (version_num VARCHAR(32))"))
        c.execute(text("INSERT INTO alembic_version VALUES ('abc123')"))
        c.execute(text("CREATE TABLE experiments (id INTEGER)"))
    eng.dispose()


def test_database_of_another_application_is_refused(history_url):
    _foreign(history_url)
    for argv in (("history", "list"), ("history", "migrate"), ("release", "x@1")):
        assert_clean_error(run_cli(*argv, "--history", history_url), "another application")
    from sqlalchemy import create_engine, inspect

    from harness.history.url import sqlalchemy_url

    eng = create_engine(sqlalchemy_url(history_url))
    with eng.connect() as c:
        assert sorted(inspect(c).get_table_names()) == ["alembic_version", "experiments"]  # nothing of ours written into it
    eng.dispose()


def _set_revision(url: str, rev: str) -> None:
    from sqlalchemy import create_engine, text

    from harness.history.url import sqlalchemy_url

    eng = create_engine(sqlalchemy_url(url))
    with eng.begin() as c:
        c.execute(text("UPDATE laf_schema_version SET version_num = :r"), {"r": rev})
    eng.dispose()


def test_newer_schema_is_refused_older_is_migrated(history_url):
    with HistoryStore(history_url, write=True) as store:
        store.record(_entry("a@1", "s"))
    _set_revision(history_url, "9999")
    for argv in (("history", "list"), ("release", "a@1"), ("history", "migrate")):
        assert_clean_error(run_cli(*argv, "--history", history_url), "newer than this laf knows")
    # an older schema (0001, before the trend indexes): refused for writing until migrated, then everything is kept
    _set_revision(history_url, "0002")
    from alembic import command
    from sqlalchemy import create_engine

    from harness.history.store import _alembic_config
    from harness.history.url import sqlalchemy_url

    eng = create_engine(sqlalchemy_url(history_url))
    with eng.begin() as c:
        command.downgrade(_alembic_config(c), "0001")
    eng.dispose()
    assert_clean_error(run_cli("release", "a@1", "--history", history_url), "older schema revision 0001", "laf history migrate")
    code, out, err = run_cli("history", "migrate", "--history", history_url, "--json")
    assert code == 0, err
    assert json.loads(out)["before"] == "0001" and json.loads(out)["after"] == "0002"
    with HistoryStore(history_url) as store:
        assert [v["candidate"] for v in store.trend("a")["versions"]] == ["a@1"]
    assert json.loads(run_cli("history", "migrate", "--history", history_url, "--json")[1])["before"] == "0002"


def test_non_finite_numbers_are_refused_and_nothing_is_half_written(history_url):
    e = _entry("nan@1", "s", value=0.5)
    e["models"]["nan@1"]["suites"]["s"]["ci_high"] = float("nan")
    with HistoryStore(history_url, write=True) as store:
        with pytest.raises(LafError, match="non-finite"):
            store.record(e)
        assert store.count()["laf_runs"] == 0


# ---------------------------------------------------------------- exports


def test_export_parquet_and_csv(history_url, runs, tmp_path):
    run_gate(None, str(runs["run1"]), runs["policy"], history=history_url, record=True)
    run_cli("release", "sup@1", "--note", "n'1", "--history", history_url)
    run_gate("released", str(runs["run2"]), runs["policy"], history=history_url, record=True)
    code, out, err = run_cli("history", "export", "-o", str(tmp_path / "h.parquet"), "--history", history_url, "--json")
    assert code == 0, err
    import pyarrow.parquet as pq

    t = pq.read_table(tmp_path / "h.parquet").to_pylist()
    # per run: each model (baseline and candidate) x 2 suites
    assert len(t) == json.loads(out)["file"]["rows"] == 8
    cand = [r for r in t if r["model"] == "sup@2" and r["suite"] == "domain/qa"][0]
    assert cand["baseline"] == "sup@1" and cand["version"] == 2 and 0 <= cand["value"] <= 1 and cand["improvement"] is not None
    assert [r["release_note"] for r in t if r["model"] == "sup@1" and r["name"] == "sup"][0] == "n'1"
    assert run_cli("history", "export", "-o", str(tmp_path / "h.csv"), "--history", history_url)[0] == 0
    rows = list(csv.DictReader((tmp_path / "h.csv").open()))
    assert len(rows) == 8 and {r["run_verdict"] for r in rows} <= {"pass", "fail", "inconclusive"}
    assert_clean_error(run_cli("history", "export", "-o", str(tmp_path / "h.txt"), "--history", history_url), "format")


def test_export_to_mlflow_is_idempotent(tmp_path, runs, monkeypatch):
    pytest.importorskip("mlflow", reason="the optional 'mlflow' extra (mlflow-skinny) is not installed")
    monkeypatch.chdir(tmp_path)  # MLflow's default artifact root (./mlruns)
    url = str(tmp_path / "h.sqlite")
    run_gate(None, str(runs["run1"]), runs["policy"], history=url, record=True)
    run_cli("report", str(runs["run1"]))
    run_gate(None, str(runs["run2"]), runs["policy"], history=url, record=True)
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    code, out, err = run_cli("history", "export", "--mlflow", uri, "--history", url, "--json")
    assert code == 0, err
    assert json.loads(out)["mlflow"]["logged"] == 2
    again = json.loads(run_cli("history", "export", "--mlflow", uri, "--history", url, "--json")[1])["mlflow"]
    assert again["logged"] == 0 and again["skipped"] == 2
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name("lost-and-found")
    found = {r.data.params["adapter"]: r for r in client.search_runs([exp.experiment_id])}
    assert sorted(found) == ["sup@1", "sup@2"]
    r1 = found["sup@1"]
    assert r1.data.tags["laf.verdict"] in ("pass", "fail", "inconclusive") and r1.data.params["precision"] == "nf4"
    assert {"domain/qa/acc/value", "domain/qa/acc/ci_low", "domain/qa/acc/ci_high"} <= set(r1.data.metrics)
    arts = {a.path for a in client.list_artifacts(r1.info.run_id)}
    assert {"verdict.json", "report.html", "laf-history-entry.json"} <= arts


# ---------------------------------------------------------------- concurrency and a writer killed mid-record

WORKER = r"""
import copy, json, sys
sys.path.insert(0, sys.argv[1])
from harness.history import HistoryStore
url, worker, n, template = sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), json.loads(sys.argv[5])
with HistoryStore(url, write=True) as store:
    for i in range(n):
        e = copy.deepcopy(template)
        first = e["candidates"][0]["candidate"]
        name = first.rsplit("@", 1)[0] + f"@{worker * 1000 + i + 1}"
        e["run_id"] = f"w{worker:02d}-r{i:03d}"
        e["candidates"][0]["candidate"] = name
        e["models"] = {"base": e["models"]["base"], name: e["models"][first]}
        store.record(e)
    shared = copy.deepcopy(template)
    shared["run_id"] = "shared-by-all"
    store.record(shared)  # every worker records this same run: one entry
"""


def test_eight_concurrent_writers_lose_and_duplicate_nothing(history_url, tmp_path):
    template = _entry("conc@1", "domain/qa")
    HistoryStore(history_url, write=True).close()  # the schema exists before they start (creation races are tested below)
    t0 = time.time()
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(REPO), history_url, str(w), "50", json.dumps(template)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for w in range(8)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    elapsed = time.time() - t0
    with HistoryStore(history_url) as store:
        counts = store.count()
        runs = store.runs(limit=10_000)
    assert counts["laf_runs"] == 8 * 50 + 1 and counts["laf_candidates"] == 8 * 50 + 1
    ids = [r["run_id"] for r in runs]
    assert len(ids) == len(set(ids)) == 401
    assert elapsed < 60, elapsed


def test_concurrent_first_writers_create_the_schema_once(history_url):
    template = _entry("first@1", "s")
    procs = [subprocess.Popen([sys.executable, "-c", WORKER, str(REPO), history_url, str(w), "2", json.dumps(template)],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for w in range(4)]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    with HistoryStore(history_url) as store:
        assert store.count()["laf_runs"] == 4 * 2 + 1


def test_connections_opening_a_new_file_together_all_get_wal(tmp_path):
    """SQLite answers ``PRAGMA journal_mode=WAL`` with "database is locked" at once (no busy handler) when several
    connections open a new file together; CI met it once in the test above. Four threads open each of 150 fresh files
    at the same instant: every connection must come up, in WAL mode."""
    import threading

    from harness.history.store import _engine

    errors: list[str] = []
    modes: list[str] = []

    def open_one(url, barrier):
        barrier.wait()
        try:
            engine = _engine(url)
            with engine.connect() as conn:
                modes.append(conn.exec_driver_sql("PRAGMA journal_mode").scalar())
            engine.dispose()
        except Exception as e:  # noqa: BLE001 - every failure is collected and shown
            errors.append(f"{type(e).__name__}: {e}")

    for k in range(150):
        url = str(tmp_path / f"h{k}.sqlite")
        barrier = threading.Barrier(4)
        threads = [threading.Thread(target=open_one, args=(url, barrier)) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
    assert errors == [], errors[:3]
    assert len(modes) == 600 and set(modes) == {"wal"}


KILLED = r"""
import json, sys, time
sys.path.insert(0, sys.argv[1])
from harness.history import HistoryStore
from harness.history import store as S
url, flag, entry = sys.argv[2], sys.argv[3], json.loads(sys.argv[4])
orig = S.HistoryStore._children
def slow(self, conn, rows):
    orig(self, conn, rows)  # the run row and its children are written, the transaction not yet committed
    open(flag, "w").write("mid-record")
    time.sleep(60)
S.HistoryStore._children = slow
with HistoryStore(url, write=True) as store:
    store.record(entry)
"""


def test_writer_killed_mid_record_leaves_the_run_absent_and_the_store_readable(history_url, tmp_path):
    with HistoryStore(history_url, write=True) as store:
        assert store.record(_entry("kept@1", "s", run_id="kept"))
    flag = tmp_path / "flag"
    p = subprocess.Popen([sys.executable, "-c", KILLED, str(REPO), history_url, str(flag), json.dumps(_entry("killed@1", "s", run_id="killed"))],
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.time() + 60
        while not flag.exists() and time.time() < deadline and p.poll() is None:
            time.sleep(0.05)
        assert flag.exists(), p.stderr.read() if p.poll() is not None else "the writer never reached mid-record"
        os.kill(p.pid, signal.SIGKILL)
        p.wait(timeout=30)
    finally:
        if p.poll() is None:
            p.kill()
    with HistoryStore(history_url, write=True) as store:  # readable, and writable again at once
        ids = [r["run_id"] for r in store.runs()]
        assert ids == ["kept"] and store.count()["laf_suite_results"] == 2 and store.count()["laf_candidates"] == 1
        assert store.record(_entry("killed@1", "s", run_id="killed"))  # the partial run is absent: recording it again is new
        assert store.count()["laf_runs"] == 2
    if "://" not in history_url:
        with sqlite3.connect(history_url) as c:
            assert c.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert c.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_history_off_records_nothing(runs, tmp_path, monkeypatch):
    monkeypatch.setenv("LAF_HISTORY_URL", "off")
    code, out, err = run_cli("gate", "--candidate", str(runs["run1"]), "--policy", str(runs["policy"]), "--json")
    assert code in (0, 1, 2) and json.loads(out)["history"] is None
    assert_clean_error(run_cli("gate", "--baseline", "released", "--candidate", str(runs["run2"]), "--policy", str(runs["policy"])), "switched off")
    assert record_outcome(None, "gate", []) is None


def test_release_needs_a_recorded_run(tmp_path):
    url = str(tmp_path / "h.sqlite")
    with HistoryStore(url, write=True) as store:
        store.record(_entry("a@1", "s"))
    assert_clean_error(run_cli("release", "nothere@3", "--history", url), "nothere@3", "no recorded run")
    code, out, _ = run_cli("release", "a@latest", "--history", url, "--json")
    assert code == 0 and json.loads(out)["candidate"] == "a@1"




def test_run_folder_copy_of_the_config_carries_no_password():
    from harness.pipeline import _without_password

    text = b"name: x\nhistory: postgresql://laf:s3cr3t-pw@db:5432/h\n"
    assert _without_password(text, "postgresql://laf:s3cr3t-pw@db:5432/h") == b"name: x\nhistory: postgresql://laf:***@db:5432/h\n"
    assert _without_password(text, "reports/history.sqlite") == text


def test_run_uses_a_verified_release_folder_and_refuses_one_it_cannot_rescore(history_url, runs, tmp_path):
    """`laf run` with gate.baseline: released: a release recorded in another run folder is used as it is when it
    verifies; when it does not and the adapter is not in the registry to re-score, the run stops with the reason."""
    from types import SimpleNamespace

    from harness.pipeline.stages import released_plans, verify_released

    run_gate(None, str(runs["run1"]), runs["policy"], history=history_url, record=True)
    run_cli("release", "sup@1", "--history", history_url)
    ctx = SimpleNamespace(eval_dir=runs["run2"], cfg=SimpleNamespace(registry=str(tmp_path / "registry")))
    plans = released_plans(ctx, ["sup@2"], history_url)
    assert plans["sup@2"].ref == "sup@1" and plans["sup@2"].rescore is None
    assert verify_released(ctx, plans, history_url) == [] and plans["sup@2"].folder.resolve() == runs["run1"].resolve()
    # its own evaluation folder is about to be rewritten: re-scored, said why
    own = released_plans(SimpleNamespace(eval_dir=runs["run1"], cfg=ctx.cfg), ["sup@2"], history_url)
    assert "this run's evaluation folder" in own["sup@2"].rescore
    (runs["run1"] / "records.jsonl").write_text("")
    plans = released_plans(ctx, ["sup@2"], history_url)
    with pytest.raises(LafError, match="cannot be re-scored here"):
        verify_released(ctx, plans, history_url)
