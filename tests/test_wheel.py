"""A built wheel works on its own: installed into a fresh venv (no network, no source tree), ``laf``
lists the built-in suites and validates one, and ``harness`` is imported from the installed wheel."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _run(cmd: list[str], cwd: Path, env: dict | None = None, timeout: int = 300) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """Build the wheel from a copy of the sources (so the build leaves nothing in the tree), offline."""
    src = tmp_path_factory.mktemp("src")
    shutil.copy(REPO / "pyproject.toml", src)
    shutil.copy(REPO / "README.md", src)
    shutil.copytree(REPO / "harness", src / "harness", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    out = tmp_path_factory.mktemp("dist")
    r = _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index", "-q", "-w", str(out), str(src)], cwd=src)
    assert r.returncode == 0, r.stdout + r.stderr
    [whl] = out.glob("lost_and_found-*.whl")
    return whl


def test_wheel_holds_the_built_in_suites_and_report_assets(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {p.relative_to(REPO).as_posix() for p in (REPO / "harness" / "suites_builtin").rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    assert shipped and shipped <= names, sorted(shipped - names)
    assert {"harness/report/assets/report.css", "harness/report/assets/report.js"} <= names
    assert {f"harness/metrics/{m}/{m}.py" for m in ("exact_match", "token_f1", "rouge_l", "chrf")} <= names  # evaluate.load(path) scripts
    assert not any(n.startswith(("suites/", "tests/")) for n in names)


def test_installed_wheel_runs_laf_from_an_unrelated_folder(wheel, tmp_path):
    venv = tmp_path / "venv"
    r = _run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    py = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "LAF_SUITES", "VIRTUAL_ENV")}
    r = _run([sys.executable, "-m", "pip", "--python", str(py), "install", "--no-deps", "--no-index", "-q", str(wheel)], cwd=tmp_path, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    site = Path(_run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=tmp_path, env=env).stdout.strip())
    assert (site / "harness" / "suites_builtin" / "general" / "world-facts.yaml").is_file()
    # then the dependencies: the test venv's site-packages, after the venv's own on sys.path (a plain path
    # line; .pth files inside that folder, such as an editable install of this project, are not processed)
    (site / "_laf_test_deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")

    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env["COLUMNS"] = "200"
    laf = str(venv / "bin" / "laf")

    r = _run([str(py), "-c", "import harness; print(harness.__file__)"], cwd=elsewhere, env=env)
    origin = Path(r.stdout.strip()).resolve()
    assert r.returncode == 0 and origin.is_relative_to(site.resolve()), (origin, r.stderr)
    assert not origin.is_relative_to(REPO)

    r = _run([laf, "suites", "list"], cwd=elsewhere, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    for name in ("general/world-facts", "general/text", "domain/tempo-t4", "bias/crows-pairs", "hallucination/truthfulqa-mc"):
        assert name in r.stdout, name

    r = _run([laf, "suites", "list", "--json"], cwd=elsewhere, env=env)
    assert r.returncode == 0, r.stderr
    listed = {s["name"]: Path(s["file"]).resolve() for s in json.loads(r.stdout)}
    assert listed["general/world-facts"].is_relative_to(site.resolve()), listed["general/world-facts"]

    r = _run([laf, "suites", "validate", "general/world-facts"], cwd=elsewhere, env=env)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "ok general/world-facts: 300 items" in r.stdout
