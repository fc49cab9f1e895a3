"""Hostile and damaged inputs to the release history, releases and signed verdicts (the attack report's D2-D10,
D12, D13): one clear error (exit 3) with the fix for its cause, nothing recorded by a gate that fails, nothing
already written lost, a refused database left exactly as it was, passwords never shown."""

from __future__ import annotations

import hashlib
import json
import os
import random
import sqlite3
from pathlib import Path

import pytest

from harness.errors import LafError
from harness.history import HistoryStore, redact
from harness.history.store import split_candidate
from tests.conftest import assert_clean_error, run_cli
from tests.synthetic import suite_meta, write_run
from tests.test_trust_signing import GOOD, _gate, _passing, world  # noqa: F401 - the signing world fixture

SUITES = {"domain/qa": suite_meta("domain"), "general/facts": suite_meta("general")}
POLICY = "rules:\n  - {category: domain, min_gain: 0.05}\n  - {category: general, max_drop: 0.05}\nresamples: 200\nmin_items: 20\n"


def _run(folder: Path, model: str, seed: int = 7) -> Path:
    rnd = random.Random(seed)

    def vals(p: float) -> list[int]:
        return [1 if rnd.random() < p else 0 for _ in range(60)]

    return write_run(folder, SUITES, {"base": {"domain/qa": vals(0.4), "general/facts": vals(0.6)}, model: {"domain/qa": vals(0.7), "general/facts": vals(0.6)}})


@pytest.fixture
def hist(tmp_path) -> dict:
    """A SQLite history holding sup@1 (gated, released) and sup@2 (gated)."""
    policy = tmp_path / "policy.yaml"
    policy.write_text(POLICY)
    url = str(tmp_path / "h.sqlite")
    for v in (1, 2):
        code, _, err = run_cli("gate", "--candidate", str(_run(tmp_path / f"run{v}", f"sup@{v}", v)), "--policy", str(policy), "--history", url)
        assert code in (0, 1, 2), err
    assert run_cli("release", "sup@1", "--history", url)[0] == 0
    return {"tmp": tmp_path, "url": url, "policy": policy}


def _sha(path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _runs_in(url: str) -> int:
    with HistoryStore(url) as store:
        return store.count()["laf_runs"]


# ---------------------------------------------------------------- D4, D3: a gate that fails changes nothing


def test_a_gate_that_fails_after_recording_leaves_no_run_and_no_trend(hist):
    """D4: signing refused (the candidate is no registered adapter): exit 3, the run is not in the history (so it
    cannot be released) and no trend.json; an unwritable -o likewise."""
    tmp, url = hist["tmp"], hist["url"]
    assert run_cli("keygen", str(tmp / "keys" / "gate"))[0] == 0
    before = _runs_in(url)
    run3 = _run(tmp / "run3", "sup@3", 3)
    assert_clean_error(run_cli("gate", "--candidate", str(run3), "--policy", str(hist["policy"]), "--sign", str(tmp / "keys" / "gate"), "--history", url),
                       "cannot be signed")
    assert _runs_in(url) == before
    assert not (run3 / "trend.json").exists() and not (run3 / "verdict.json").exists()
    assert_clean_error(run_cli("release", "sup@3", "--history", url), "no recorded run")

    (run3 / "vdir").mkdir()
    code, out, err = run_cli("gate", "--candidate", str(run3), "--policy", str(hist["policy"]), "--history", url, "-o", str(run3 / "vdir"))
    assert code == 3 and "Traceback" not in err, err
    assert _runs_in(url) == before and not (run3 / "trend.json").exists()


def test_a_failed_signed_gate_keeps_the_earlier_signature(world, tmp_path):  # noqa: F811
    """D3: a signed PASS, then the same gate with --sign fails (the history is not a database): verdict.json and its
    .sig are byte-identical and still verify."""
    verdict = _passing(world)
    sig = Path(str(verdict) + ".sig")
    v_before, s_before = _sha(verdict), _sha(sig)
    bad = tmp_path / "notdb.sqlite"
    bad.write_text("hello not sqlite\n")
    assert_clean_error(_gate(world, verdict.parent, "--history", str(bad)), "not a readable SQLite database")
    assert _sha(verdict) == v_before and sig.is_file() and _sha(sig) == s_before
    code, _, err = run_cli("verify-verdict", str(verdict), "--key", str(world["pub"]), "--adapter", "cand@1", "--registry", str(world["reg"]))
    assert code == 0, err


# ---------------------------------------------------------------- D2: in-memory SQLite in disguise


@pytest.mark.parametrize("url", ["sqlite:///file:{tmp}/u2.sqlite?mode=memory&uri=true", "sqlite:///{tmp}/u3.sqlite?mode=memory",
                                 "sqlite:///file:{tmp}/u4.sqlite", "sqlite:///:memory:", "sqlite://"])
def test_in_memory_sqlite_urls_are_refused_before_anything_is_created(hist, monkeypatch, url):
    tmp = hist["tmp"] / "cwd"
    tmp.mkdir()
    monkeypatch.chdir(tmp)
    url = url.format(tmp=tmp)
    run1 = hist["tmp"] / "run1"
    assert_clean_error(run_cli("gate", "--candidate", str(run1), "--policy", str(hist["policy"]), "--history", url), "history URL", "give sqlite:///PATH")
    assert list(tmp.iterdir()) == []


# ---------------------------------------------------------------- D5: non-ASCII digits, keygen under a file


def test_unicode_digits_are_never_versions(hist):
    url = hist["url"]
    for ref in ("sup@²", "sup@１"):  # ² passes str.isdigit(), １ is a fullwidth 1: neither is version 1
        assert_clean_error(run_cli("release", ref, "--history", url), "not a plain number")
    assert split_candidate("sup@１") == ("sup@１", None) and split_candidate("sup@12") == ("sup", 12)
    with HistoryStore(url) as store:
        assert store.last_release("sup")["candidate"] == "sup@1"  # nothing released by the refused refs
    run = _run(hist["tmp"] / "sq", "hx@²")
    code, _, err = run_cli("gate", "--candidate", str(run), "--policy", str(hist["policy"]), "--history", url)
    assert code in (0, 1, 2) and "Traceback" not in err, err


def test_verify_verdict_refuses_a_fullwidth_version(world):  # noqa: F811
    verdict = _passing(world)
    assert_clean_error(run_cli("verify-verdict", str(verdict), "--key", str(world["pub"]), "--adapter", "cand@１", "--registry", str(world["reg"])),
                       "not a plain number")


def test_keygen_under_a_file_is_one_clean_error(tmp_path):
    (tmp_path / "prec.csv").write_text("x\n")
    assert_clean_error(run_cli("keygen", str(tmp_path / "prec.csv" / "key")), "prec.csv is a file")
    assert (tmp_path / "prec.csv").read_text() == "x\n"


# ---------------------------------------------------------------- D6: the fix names the cause


def test_a_locked_history_says_wait_not_move_aside(hist, monkeypatch):
    from harness.history import store as store_mod

    monkeypatch.setattr(store_mod, "_BUSY_MS", 300)
    holder = sqlite3.connect(hist["url"], isolation_level=None, check_same_thread=False)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        code, out, err = run_cli("release", "sup@2", "--history", hist["url"])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert_clean_error((code, out, err), "locked", "retry")
    assert "move it aside" not in err


def test_read_only_and_constraint_errors_get_their_own_fix(hist, tmp_path):
    with HistoryStore(hist["url"]) as store:
        ro = store._fail("write a release to", sqlite3.OperationalError("attempt to write a readonly database"))
        bad = store._fail("open", sqlite3.DatabaseError("file is not a database"))
    assert "writable" in ro.fix and "move it aside" not in ro.fix
    assert "move it aside" in bad.fix
    # an unversioned adapter: named before the INSERT, no raw constraint text
    url = str(tmp_path / "pl.sqlite")
    assert run_cli("gate", "--candidate", str(_run(tmp_path / "plain", "plain")), "--policy", str(hist["policy"]), "--history", url)[0] in (0, 1, 2)
    code, out, err = run_cli("release", "plain", "--history", url)
    assert_clean_error((code, out, err), "only NAME@VERSION adapters can be released")
    assert "constraint" not in err and "move it aside" not in err


# ---------------------------------------------------------------- D7, D8: reading and refusing change nothing


def test_reading_a_history_never_writes_it(hist):
    """D7: a reader does not switch the journal mode (it opens the file read-only)."""
    url = hist["url"]
    c = sqlite3.connect(url)
    c.execute("PRAGMA journal_mode=DELETE").fetchall()
    c.close()
    before = _sha(url)
    for cmd in (("history", "list"), ("history", "show", "sup"), ("history", "export", "-o", str(hist["tmp"] / "x.csv"))):
        code, _, err = run_cli(*cmd, "--history", url)
        assert code == 0, err
    assert _sha(url) == before and not Path(url + "-wal").exists()
    assert sqlite3.connect(url).execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_a_history_in_a_read_only_folder_can_be_listed(hist):
    """A reader needs no write access. Root ignores file permissions, so as root the command runs in a forked child
    that has dropped to user nobody (65534), its modules imported before (the interpreter lives under /root, which
    nobody cannot enter); in a folder outside pytest's own (0700)."""
    import shutil
    import tempfile

    base = Path(tempfile.mkdtemp(prefix="laf-ro-"))
    ro = base / "ro"
    try:
        base.chmod(0o755)
        ro.mkdir()
        (ro / "h.sqlite").write_bytes(Path(hist["url"]).read_bytes())
        argv = ("history", "list", "--history", str(ro / "h.sqlite"), "--json")
        code, out, err = run_cli(*argv)  # as this user first: every module the command needs is imported
        assert code == 0, err
        for p in ro.iterdir():
            if p.name != "h.sqlite":
                p.unlink()
        (ro / "h.sqlite").chmod(0o444)
        ro.chmod(0o555)
        if os.geteuid() == 0:
            r, w = os.pipe()
            pid = os.fork()
            if pid == 0:  # the child: nobody, then the command, its result down the pipe
                try:
                    os.close(r)
                    os.setgroups([])
                    os.setgid(65534)
                    os.setuid(65534)
                    os.write(w, json.dumps(run_cli(*argv)).encode())
                finally:
                    os._exit(0)
            os.close(w)
            with os.fdopen(r, "rb") as f:
                data = f.read()
            os.waitpid(pid, 0)
            code, out, err = json.loads(data)
        else:
            code, out, err = run_cli(*argv)
        assert code == 0, err
        assert len(json.loads(out)["runs"]) == 2
        assert sorted(x.name for x in ro.iterdir()) == ["h.sqlite"]  # no -wal, -shm or journal left beside it
    finally:
        ro.chmod(0o755)
        shutil.rmtree(base, ignore_errors=True)


def test_a_foreign_database_is_left_exactly_as_it_was(hist, tmp_path):
    db = tmp_path / "foreign.sqlite"
    c = sqlite3.connect(db)
    c.execute("create table accounts(id, bal)")
    c.execute("insert into accounts values (1, 100)")
    c.commit()
    c.close()
    before = _sha(db)
    for cmd in (("history", "list"), ("history", "migrate"), ("release", "sup@1"),
                ("gate", "--candidate", str(_run(tmp_path / "r", "sup@4")), "--policy", str(hist["policy"]))):
        assert_clean_error(run_cli(*cmd, "--history", str(db)), "another application")
    assert _sha(db) == before and sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("foreign")) == ["foreign.sqlite"]
    assert sqlite3.connect(db).execute("PRAGMA journal_mode").fetchone()[0] == "delete"


def test_a_failed_release_creates_no_folder_and_no_history(tmp_path):
    assert_clean_error(run_cli("release", "sup@1", "--history", str(tmp_path / "typo" / "dir" / "h.sqlite")), "no release history")
    assert not (tmp_path / "typo").exists()
    empty = tmp_path / "empty.sqlite"
    empty.write_bytes(b"")
    assert_clean_error(run_cli("release", "x@1", "--history", str(empty)), "no release history")
    assert empty.read_bytes() == b""


# ---------------------------------------------------------------- D9: passwords


@pytest.mark.parametrize("url,secret", [("postgresql://u@127.0.0.1:1/db?password=SECRETQ", "SECRETQ"),
                                        ("postgresql://127.0.0.1:1/db?user=u&password=SECRETQ", "SECRETQ"),
                                        ("postgresql://u:pa@ss@127.0.0.1:1/db", "ss@"),
                                        ("postgresql://u:s3cr3t@127.0.0.1:1/db", "s3cr3t")])
def test_passwords_in_urls_are_never_shown(url, secret):
    assert secret not in redact(url) and "***" in redact(url)
    code, out, err = run_cli("history", "list", "--history", url)
    assert code == 3 and "Traceback" not in err
    assert secret not in out + err and "***" in err


# ---------------------------------------------------------------- D10: a hand-edited history


@pytest.mark.parametrize("sql,where", [
    ("update laf_releases set note = x'00ff'", "laf_releases.note"),
    ("update laf_candidates set version = 'abc' where candidate = 'sup@2'", "laf_candidates.version"),
    ("update laf_suite_results set value = 'abc'", "laf_suite_results.value"),
    ("update laf_suite_results set ci_low = 9e999, value = -9e999 where model = 'sup@1'", "laf_suite_results.value"),
    ("update laf_candidates set run_folder = '/tmp/a\\0b' where candidate = 'sup@1'", "laf_candidates.run_folder"),
])
def test_damaged_values_read_back_are_one_clean_error(hist, sql, where):
    url = hist["url"]
    c = sqlite3.connect(url)
    c.execute(sql)
    c.commit()
    c.close()
    run3 = _run(hist["tmp"] / "run3", "sup@3", 3)
    for cmd in (("history", "show", "sup"), ("history", "show", "sup", "--json"), ("history", "export", "-o", str(hist["tmp"] / "x.csv")),
                ("gate", "--baseline", "released", "--candidate", str(run3), "--policy", str(hist["policy"]))):
        code, out, err = run_cli(*cmd, "--history", url)
        assert "Infinity" not in out
        if (cmd[0] == "gate" and where.startswith("laf_suite_results")) or (cmd[1:2] == ("export",) and where == "laf_candidates.run_folder"):
            assert "Traceback" not in err  # a column this command does not read
            continue
        assert_clean_error((code, out, err), "damaged value", where)
    assert not (run3 / "trend.json").exists() or "Infinity" not in (run3 / "trend.json").read_text()


# ---------------------------------------------------------------- D12: keygen and the creation race


def test_keygen_never_deletes_a_key_it_did_not_create(tmp_path, monkeypatch):
    from cryptography.hazmat.primitives.asymmetric import ed25519

    from harness.gate import signing

    target = tmp_path / "k"
    orig = ed25519.Ed25519PrivateKey.generate

    def racing():
        target.write_text("OTHER PROCESS'S KEY\n")  # another process wins the race to PATH
        return orig()

    monkeypatch.setattr(ed25519.Ed25519PrivateKey, "generate", staticmethod(racing))
    with pytest.raises(LafError, match="already exists"):
        signing.keygen(target)
    assert target.read_text() == "OTHER PROCESS'S KEY\n" and not Path(str(target) + ".pub").exists()


# ---------------------------------------------------------------- D13: a damaged version table


@pytest.mark.parametrize("sql", ["delete from laf_schema_version", "insert into laf_schema_version values ('zzz')"])
def test_a_damaged_schema_version_table_is_named(hist, sql):
    c = sqlite3.connect(hist["url"])
    c.execute(sql)
    c.commit()
    c.close()
    for cmd in (("history", "list"), ("history", "migrate"), ("release", "sup@2")):
        assert_clean_error(run_cli(*cmd, "--history", hist["url"]), "damaged schema version table", "restore")

