"""The prepared accelerator run (benchmarks/accelerator.sh) on the CPU with a 2-layer model, so that it cannot rot
while no GPU is lent: every section runs, every side gives figures, and the JSON has the shape the GPU run writes."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import pytest

from tests.conftest import REPO

SCRIPT = REPO / "benchmarks" / "accelerator.sh"


def _run(tmp_path, *args, timeout=600):
    env = {**os.environ, "PYTHON": sys.executable, "LAF_WHEELS": str(tmp_path / "no-wheels")}
    return subprocess.run(["bash", str(SCRIPT), *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=timeout)


def test_accelerator_run_small_on_cpu_writes_every_figure(tmp_path):
    out = tmp_path / "accel.json"
    proc = _run(tmp_path, "--cpu", "--small", "--out", str(out))
    assert proc.returncode == 0, proc.stderr[-3000:]
    doc = json.loads(out.read_text())
    assert doc["schema"] == "laf.accelerator/1" and doc["device"] == "cpu" and doc["small"] is True
    assert doc["machine"]["packages"]["torch"] and doc["wall_s"] > 0
    sections = doc["configs"]["base"]["sections"]
    assert set(sections) == {"eval", "sft", "dpo", "preserve"}
    sides = {"eval": ("ours", "ours_warm", "lm_eval"), "sft": ("ours", "trl"), "dpo": ("ours", "trl"), "preserve": ("plain_sft", "kl_anchor", "textbook")}
    for section, names in sides.items():
        figures = sections[section]
        for name in names:
            assert "error" not in figures[name], (section, name, figures[name])
        for name in names:
            if name != "ours_warm":
                assert figures[name]["peak_mb"] > 0
        rate = "items_per_s" if section == "eval" else "tokens_per_s"
        assert all(figures[n][rate] > 0 for n in names if n != "ours_warm")
        ratio = figures["ratio"]
        assert {"speed", "memory"} <= set(ratio) and all(math.isfinite(v) and v > 0 for v in ratio.values()), (section, ratio)
    warm = sections["eval"]["ours_warm"]
    assert warm["code"] == 0 and warm["modules"] == [], "the warm re-run imported the model stack"  # --cpu hides every GPU
    assert sections["sft"]["ours"]["tokens"] == sections["sft"]["trl"]["tokens"] > 0  # the same supervised data on both sides
    assert sections["eval"]["ours"]["items"] == sections["eval"]["lm_eval"]["items"] == doc["configs"]["base"]["sizes"]["eval_limit"]


def test_accelerator_run_refuses_bad_arguments(tmp_path):
    proc = _run(tmp_path, "--cpu", "--small", "--sections", "eval,bogus", timeout=120)
    assert proc.returncode == 2 and "bogus" in proc.stderr
    proc = _run(tmp_path, "--wheels", timeout=60)
    assert proc.returncode == 2 and "--wheels needs a folder" in proc.stderr


def test_accelerator_run_without_torch_says_what_to_install(tmp_path):
    """torch is never installed by the script (a GPU machine keeps its CUDA build): without it, one clear error."""
    bare = "/usr/bin/python3"
    if not os.path.exists(bare) or subprocess.run([bare, "-c", "import torch"], capture_output=True).returncode == 0:
        pytest.skip(f"no Python without torch at {bare}")
    env = {**os.environ, "PYTHON": bare, "LAF_WHEELS": str(tmp_path / "no-wheels")}
    proc = subprocess.run(["bash", str(SCRIPT), "--cpu", "--small"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3 and "torch is not importable" in proc.stderr and "Traceback" not in proc.stderr
