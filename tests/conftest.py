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
# Every gate, compare and run records into a release history (default reports/history.sqlite in the working
# directory): tests record into a private one unless they name their own.
os.environ["LAF_HISTORY_URL"] = os.path.join(_HF_HOME, "history.sqlite")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Tests that run a gate must not annotate or append to the step summary of the CI job running the tests.
os.environ.pop("GITHUB_ACTIONS", None)
os.environ.pop("GITHUB_STEP_SUMMARY", None)

REPO = Path(__file__).resolve().parent.parent
SHARED_BENCH = REPO.parent / "shared" / "data" / "benchmarks"


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
