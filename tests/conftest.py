"""Test setup: offline Hugging Face, a private HF_HOME, the tiny fixture model, the real default model."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pytest

# No test may reach a hub: set before transformers / datasets / huggingface_hub import.
_HF_HOME = tempfile.mkdtemp(prefix="laf-test-hf-")
os.environ["HF_HOME"] = _HF_HOME
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"
os.environ["HF_DATASETS_OFFLINE"] = "1"
os.environ["HF_EVALUATE_OFFLINE"] = "1"
os.environ["TOKENIZERS_PARALLELISM"] = "false"
# `make test` runs the suite in several processes (pytest-xdist): each gets its share of the cores for torch's
# thread pools (here and in the subprocesses it starts), so workers do not oversubscribe the machine.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT") or 1)
if _WORKERS > 1:
    _threads = str(max(1, len(os.sched_getaffinity(0)) // _WORKERS))
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(_var, _threads)
# Every gate, compare and run records into a release history (default reports/history.sqlite in the working
# directory): tests record into a private one unless they name their own.
os.environ["LAF_HISTORY_URL"] = os.path.join(_HF_HOME, "history.sqlite")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Tests that run a gate must not annotate or append to the step summary of the CI job running the tests.
os.environ.pop("GITHUB_ACTIONS", None)
os.environ.pop("GITHUB_STEP_SUMMARY", None)

REPO = Path(__file__).resolve().parent.parent
SHARED_BENCH = REPO.parent / "shared" / "data" / "benchmarks"


# The files whose tests take longest (real-model conversion, lm-eval parity, Ray clusters, default-model validity)
# are handed out first, so the two `make test` workers finish together instead of one waiting on the other's last
# long file (longest first). Only the order of files changes; a file's own order is kept.
HEAVY_FIRST = ("test_models.py", "test_eval.py", "test_ray.py", "test_validity.py", "test_trust_locking.py", "test_preserve.py",
               "test_pipeline.py", "test_trust_train_lock.py", "test_train.py")


def pytest_collection_modifyitems(session, config, items):
    rank = {name: i for i, name in enumerate(HEAVY_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_HF_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory) -> Path:
    from tests.tiny import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny") / "tiny-gemma3")


@pytest.fixture(scope="session")
def default_model():
    """The real default model (gemma-3-270m), converted once into the user's cache."""
    from harness.models import resolve_model

    return resolve_model("default")


@pytest.fixture(scope="session")
def shared_benchmarks() -> Path:
    if not SHARED_BENCH.is_dir():
        pytest.skip(f"real benchmark data not present at {SHARED_BENCH} (only on the project's machines)")
    return SHARED_BENCH


@pytest.fixture
def isolated_cache(tmp_path, monkeypatch) -> Path:
    """A private LAF_CACHE for tests that write into the cache."""
    cache = tmp_path / "laf-cache"
    monkeypatch.setenv("LAF_CACHE", str(cache))
    return cache


def run_cli(*argv: str) -> tuple[int, str, str]:
    """Run ``laf`` in-process and capture what it prints."""
    import contextlib
    import io

    from harness.cli import main, output

    out, err = io.StringIO(), io.StringIO()
    old = output.console.file, output.err_console.file
    output.console.file, output.err_console.file = out, err
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(argv))
    finally:
        output.console.file, output.err_console.file = old
    return code, out.getvalue(), err.getvalue()


def assert_clean_error(result: tuple[int, str, str], *needles: str) -> None:
    """A user error: exit 3, no traceback, and the message names what it should."""
    code, out, err = result
    assert code == 3, (code, out, err)
    assert "Traceback" not in err
    for n in needles:
        assert n in err, err


def _postgres_binaries() -> bool:
    import glob

    return bool(glob.glob("/usr/lib/postgresql/*/bin/initdb"))


@pytest.fixture(scope="session")
def postgres_server():
    """A PostgreSQL server URL for the history tests: LAF_TEST_POSTGRES_URL (`.ci/run` exports it), else a throw-away
    cluster started here with `.ci/postgres.sh` and stopped at the end of the session (also when tests fail). Without
    a server: skipped locally, a failure under CI=true."""
    import subprocess

    url = os.environ.get("LAF_TEST_POSTGRES_URL")
    if url:
        yield url
        return
    if not _postgres_binaries():
        reason = "no PostgreSQL server: set LAF_TEST_POSTGRES_URL or install Debian's postgresql (.ci/run does)"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(reason + " (CI=true: a missing PostgreSQL is a failure)")
        pytest.skip(reason)
    out = subprocess.run([str(REPO / ".ci" / "postgres.sh"), "start"], capture_output=True, text=True, timeout=120)
    if out.returncode != 0:
        msg = f"could not start a PostgreSQL cluster: {out.stderr.strip()[-500:]}"
        if os.environ.get("CI", "").lower() in ("1", "true", "yes"):
            pytest.fail(msg)
        pytest.skip(msg)
    folder, url = out.stdout.strip().split(" ", 1)
    try:
        yield url
    finally:
        subprocess.run([str(REPO / ".ci" / "postgres.sh"), "stop", folder], capture_output=True, timeout=120)


@pytest.fixture
def postgres_db(postgres_server):
    """A fresh, empty database on the test server for one test (dropped afterwards); its URL."""
    import uuid

    import psycopg
    from sqlalchemy.engine import make_url

    name = f"laf_test_{uuid.uuid4().hex[:12]}"
    admin = make_url(postgres_server)
    dsn = dict(host=admin.host, port=admin.port, user=admin.username, password=admin.password, dbname=admin.database or "postgres")
    with psycopg.connect(**dsn, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield admin.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(**dsn, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(params=["sqlite", "postgresql"])
def history_url(request, tmp_path):
    """The history test suite runs on both backends: a new SQLite file, and a new database on a real PostgreSQL."""
    if request.param == "sqlite":
        return str(tmp_path / "history.sqlite")
    return request.getfixturevalue("postgres_db")


def markdown_tables(text: str) -> list[list[dict[str, str]]]:
    """Every Markdown table in ``text`` (what ``laf`` prints on a pipe or with ``--format md``) as rows of
    ``{column: cell}``: tests read the printed data, never the layout. Escaped pipes (``\\|``) stay in their cell."""
    import re

    tables, block = [], []
    for line in text.splitlines() + [""]:
        if line.startswith("|") and line.endswith("|"):
            block.append(line)
            continue
        if len(block) >= 2 and re.fullmatch(r"\|(\s*:?-{3,}:?\s*\|)+", block[1]):
            split = [[c.strip().replace("\\|", "|") for c in re.split(r"(?<!\\)\|", b[1:-1])] for b in block]
            tables.append([dict(zip(split[0], r)) for r in split[2:]])
        block = []
    return tables
