"""Two runs into one folder never interleave; a run killed mid-write never leaves a mix (issue 18, item 5, eval side)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from harness.evaluate import EvalSpec, load_run, run_eval
from tests.conftest import REPO
from tests.test_eval import write_mc_suite


def _eval_cmd(model, suite, out, cache, *extra):
    return [sys.executable, "-m", "harness", "eval", "--model", str(model), "--suite", str(suite), "--out", str(out),
            "--cache", str(cache), "--batch-size", "1", "--quiet", *extra]


def _wait_for_lock(out: Path, proc, timeout=120) -> dict:
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        lock = out / ".laf.lock"
        if lock.exists():
            try:
                info = json.loads(lock.read_text() or "null")
            except ValueError:
                info = None
            if info:
                return info
        time.sleep(0.05)
    raise AssertionError(f"the first run never took the lock (exit {proc.poll()})")


def _wait_rows(cache: Path, n: int, proc, timeout=120) -> None:
    import sqlite3

    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if cache.exists():
            try:
                with sqlite3.connect(cache) as c:
                    if c.execute("SELECT COUNT(*) FROM responses").fetchone()[0] >= n:
                        return
            except sqlite3.Error:
                pass
        time.sleep(0.05)
    raise AssertionError("the run did not get far enough")


def test_a_second_run_into_the_same_folder_fails_at_once_naming_the_holder(tiny_model_dir, tmp_path):
    big = write_mc_suite(tmp_path / "big", n=1500, question="Consider the number {i}. What do you get when you add {i} to itself?")
    small = write_mc_suite(tmp_path / "small", n=8)
    out = tmp_path / "out"
    first = subprocess.Popen(_eval_cmd(tiny_model_dir, big, out, tmp_path / "c1.sqlite"), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        info = _wait_for_lock(out, first)
        assert info["pid"] == first.pid and info["host"] == socket.gethostname()
        t0 = time.time()
        second = subprocess.run(_eval_cmd(tiny_model_dir, small, out, tmp_path / "c2.sqlite"), cwd=REPO, capture_output=True, text=True, timeout=300)
        assert second.returncode == 3, second.stderr
        assert f"pid {first.pid}" in second.stderr and socket.gethostname() in second.stderr and "Traceback" not in second.stderr
        assert time.time() - t0 < 60, "refused before any scoring (only the interpreter start and suite checks)"
        assert first.poll() is None, "the first run goes on"
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    # the kernel dropped the killed holder's lock: a new run takes the folder (the stale .laf.lock file blocks nobody)
    third = subprocess.run(_eval_cmd(tiny_model_dir, small, out, tmp_path / "c3.sqlite"), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert third.returncode == 0, third.stderr
    results, records = load_run(out)
    assert results.integrity == "verified" and len(records) == 8


def test_kill_9_mid_write_leaves_the_previous_run_whole(tiny_model_dir, tmp_path):
    small = write_mc_suite(tmp_path / "small", n=8)
    big = write_mc_suite(tmp_path / "big", n=1500, question="Consider the number {i}. What do you get when you add {i} to itself?")
    out = tmp_path / "out"
    done = subprocess.run(_eval_cmd(tiny_model_dir, small, out, tmp_path / "c.sqlite"), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    before = {p: (out / p).read_bytes() for p in ("results.json", "records.jsonl", "results.sqlite", "integrity.json")}
    proc = subprocess.Popen(_eval_cmd(tiny_model_dir, big, out, tmp_path / "c.sqlite"), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _wait_rows(tmp_path / "c.sqlite", 8 * 4 + 200, proc)
    assert (out / "results.sqlite.partial").exists(), "the new run writes its own partial store"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert {p: (out / p).read_bytes() for p in before} == before
    results, records = load_run(out)
    assert results.integrity == "verified" and len(records) == 8


def test_a_reader_never_sees_a_mix_of_two_runs(tiny_model_dir, tmp_path):
    """Runs A (8 items) and B (12 items) publish into one folder one after the other while a reader loads it in a
    loop: every successful read is wholly A or wholly B; anything else is a clear integrity error."""
    a = write_mc_suite(tmp_path / "a", n=8, name="toy")
    b = write_mc_suite(tmp_path / "b", n=12, name="toy")
    out = tmp_path / "out"
    cache = tmp_path / "c.sqlite"

    def publish(suite, folder=out):  # in-process: after the warm-up every run is served from the cache (no model load)
        run_eval(EvalSpec(suites=[str(suite)], model=str(tiny_model_dir), out=str(folder), cache=str(cache), batch_size=4))

    publish(a, tmp_path / "warm-a")
    publish(b, tmp_path / "warm-b")
    publish(a)
    reader = subprocess.Popen([sys.executable, "-c", f"""
import json, time
from harness.errors import LafError
from harness.results import load_run
seen, errors, t0 = [], 0, time.time()
while time.time() - t0 < 15:
    try:
        res, recs = load_run({str(out)!r})
        seen.append([res.suites['toy'].n_docs, len(recs)])
    except LafError as e:
        errors += 1
print(json.dumps({{"seen": seen, "errors": errors}}))
"""], cwd=REPO, stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    time.sleep(3)  # the reader is reading
    for suite in (b, a, b, a, b, a, b, a):
        publish(suite)
    got = json.loads(reader.communicate(timeout=120)[0])
    assert got["seen"], got
    assert all(pair in ([8, 8], [12, 12]) for pair in got["seen"]), [p for p in got["seen"] if p not in ([8, 8], [12, 12])]


def test_a_file_swapped_out_while_a_reader_reads_is_retried_or_one_clear_error(tiny_model_dir, tmp_path, monkeypatch):
    """Publishing removes integrity.json and swaps the records while a reader may be between two calls: the reader
    above once died with FileNotFoundError from ``check_run_files`` (exists, then stat). Now a file that vanishes is
    absent to the folder check, a read that loses a file is read again, and one that keeps losing it is one LafError."""
    from harness.errors import LafError
    from harness.results import store as S

    suite = write_mc_suite(tmp_path / "s", n=4, name="toy")
    out = tmp_path / "out"
    run_eval(EvalSpec(suites=[str(suite)], model=str(tiny_model_dir), out=str(out), cache=str(tmp_path / "c.sqlite"), batch_size=4))
    expected = [r.doc_hash for r in load_run(out)[1]]
    real_lstat, real_read_bytes = Path.lstat, Path.read_bytes

    def lstat_integrity_gone(self):
        if self.name == S.INTEGRITY:
            raise FileNotFoundError(2, "No such file or directory", str(self))
        return real_lstat(self)

    monkeypatch.setattr(Path, "lstat", lstat_integrity_gone)
    S.check_run_files(out)  # a vanished file is absent, not a crash
    monkeypatch.setattr(Path, "lstat", real_lstat)

    lost = {"n": 0}

    def read_bytes_lost_once(self, limit=1):
        if self.name == S.RECORDS and lost["n"] < limit:
            lost["n"] += 1
            raise FileNotFoundError(2, "No such file or directory", str(self))
        return real_read_bytes(self)

    monkeypatch.setattr(Path, "read_bytes", read_bytes_lost_once)
    res, recs = load_run(out)  # the second read finds the file: verified, the same records
    assert lost["n"] == 1 and res.integrity == "verified" and [r.doc_hash for r in recs] == expected

    monkeypatch.setattr(Path, "read_bytes", lambda self: read_bytes_lost_once(self, limit=99))
    try:
        load_run(out)
    except LafError as e:
        assert "changed while it was read" in str(e) and S.RECORDS in str(e)
    else:
        raise AssertionError("a folder that keeps losing a file must be one clear error")
