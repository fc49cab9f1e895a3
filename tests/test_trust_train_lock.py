"""Issue 18, family "concurrency, train side": one training run per output folder, atomic registration.

Real processes throughout: a second `laf train` into a folder that a live run holds fails at once (exit 3)
naming the holder; a holder killed with SIGKILL leaves no stale lock; concurrent registrations of one
name each get their own complete version.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from harness.errors import LafError
from harness.io import exclusive_lock
from harness.registry import Registry

ROOT = Path(__file__).resolve().parents[1]
ROWS = [{"instruction": f"What is the code for item {i}?", "output": f"The code for item {i} is Z{i * 7}."} for i in range(40)]


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _config(tmp_path: Path, model_dir: Path, out: Path, **over) -> Path:
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    cfg = {"name": "locked", "model": str(model_dir), "precision": "fp32", "data": {"path": str(data)}, "max_length": 64,
           "batch_size": 4, "max_steps": 3, "eval_every": 0, "save_every": 0, "registry": str(tmp_path / "reg"), "output_dir": str(out), **over}
    path = tmp_path / f"cfg-{len(list(tmp_path.glob('cfg-*')))}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


SLOW_HOLDER = """
import sys, time
from pathlib import Path
from harness.cli.train import load_train_config
from harness.train import train
cfg = load_train_config(sys.argv[1], [])
started = Path(sys.argv[2])
release = Path(sys.argv[3]) if len(sys.argv) > 3 else None
def slow(ev):
    started.write_text(str(ev.step))
    if release is None:
        time.sleep(0.5)
        return
    deadline = time.time() + 300  # hold the folder until the test says so: a loaded machine cannot outrun it
    while not release.exists() and time.time() < deadline:
        time.sleep(0.1)
train(cfg, config_dir=Path(sys.argv[1]).parent, on_step=slow)
"""


def _start_holder(cfg: Path, started: Path, release: Path | None = None) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", SLOW_HOLDER, str(cfg), str(started), *([str(release)] if release else [])], env=_env(), cwd=cfg.parent,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 240
    while not started.exists():
        if proc.poll() is not None:
            raise AssertionError(proc.stderr.read().decode()[-2000:])
        if time.time() > deadline:
            proc.kill()
            raise AssertionError("the holder never started training")
        time.sleep(0.2)
    return proc


def _laf(*args, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *args], env=_env(), cwd=cwd, capture_output=True, text=True, timeout=300)


def test_second_train_into_one_folder_fails_at_once_naming_the_holder_and_metrics_stay_clean(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    release = tmp_path / "release"  # the holder keeps the folder (stalled in its first step) until this exists
    holder = _start_holder(_config(tmp_path, tiny_model_dir, out, max_steps=8), tmp_path / "started", release)
    try:
        t0 = time.time()
        second = _laf("train", str(_config(tmp_path, tiny_model_dir, out, name="intruder")), "--quiet", cwd=tmp_path)
        assert second.returncode == 3, second.stderr
        assert "Traceback" not in second.stderr
        assert "in use by another training run" in second.stderr and f"pid {holder.pid}" in second.stderr
        assert time.time() - t0 < 120  # failed at once, did not wait for the holder (the rest is interpreter start-up)
        release.touch()
        assert holder.wait(timeout=300) == 0, holder.stderr.read().decode()[-2000:]
    finally:
        release.touch()
        if holder.poll() is None:
            holder.kill()
    reg = Registry(tmp_path / "reg")
    assert reg.names() == ["locked"]  # the intruder registered nothing
    entry = reg.resolve("locked")
    steps = [json.loads(ln)["step"] for ln in (entry.path / "metrics.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 9))  # only the holder's own steps, once each
    assert reg.verify(entry.ref).ok


def test_a_holder_killed_with_sigkill_leaves_no_stale_lock(tiny_model_dir, tmp_path):
    out = tmp_path / "run"
    holder = _start_holder(_config(tmp_path, tiny_model_dir, out, max_steps=50), tmp_path / "started")
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait(timeout=60)
    again = _laf("train", str(_config(tmp_path, tiny_model_dir, out, max_steps=2)), "--quiet", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert Registry(tmp_path / "reg").versions("locked") == [1]


def _hold(folder: str, ready, release) -> None:
    with exclusive_lock(folder, "test run"):
        ready.set()
        release.wait(60)


def test_lock_file_names_pid_host_command_and_start(tmp_path):
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold, args=(str(tmp_path / "o"), ready, release))
    p.start()
    try:
        assert ready.wait(120)
        with pytest.raises(LafError) as e, exclusive_lock(tmp_path / "o", "test run"):
            pass
        assert f"pid {p.pid}" in e.value.cause and "started" in e.value.cause and os.uname().nodename in e.value.cause
        assert e.value.exit_code == 3
    finally:
        release.set()
        p.join(60)
    with exclusive_lock(tmp_path / "o", "test run"):  # released when the holder finished
        pass


def _register(root: str, source: str, barrier, results) -> None:
    barrier.wait(60)
    results.put(str(Registry(root).register("race", Path(source), {"kind": "lora"}).ref))


def test_concurrent_registrations_of_one_name_get_distinct_complete_versions(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "adapter_model.safetensors").write_bytes(os.urandom(1 << 20))
    (src / "adapter_config.json").write_text("{}")
    ctx = mp.get_context("spawn")
    n = 4
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=_register, args=(str(tmp_path / "reg"), str(src), barrier, results)) for _ in range(n)]
    for p in procs:
        p.start()
    refs = [results.get(timeout=120) for _ in range(n)]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    assert sorted(refs) == [f"race@{i}" for i in range(1, n + 1)]
    reg = Registry(tmp_path / "reg")
    for r in refs:
        res = reg.verify(r)
        assert res.ok and res.manifest == "ok"
    assert not [p for p in (tmp_path / "reg" / "race").iterdir() if p.name.startswith(".")]  # no partial version left


def test_a_second_laf_run_of_one_name_fails_at_once_naming_the_holder(tmp_path):
    """`laf run` locks reports/<name>/ before any stage: a holder in another process makes it exit 3 at once."""
    from tests.conftest import assert_clean_error, run_cli

    src = tmp_path / "src"
    src.mkdir()
    (src / "adapter_model.safetensors").write_bytes(b"\0" * 16)
    (src / "adapter_config.json").write_text("{}")
    Registry(tmp_path / "reg").register("held", src, {"kind": "lora"})
    cfg = tmp_path / "run.yaml"
    cfg.write_text(yaml.safe_dump({"name": "busy", "adapters": ["held@1"], "registry": str(tmp_path / "reg"),
                                   "eval": {"suites": ["general/world-facts"]}, "out_root": str(tmp_path / "reports")}))
    ctx = mp.get_context("spawn")
    ready, release = ctx.Event(), ctx.Event()
    p = ctx.Process(target=_hold, args=(str(tmp_path / "reports" / "busy"), ready, release))
    p.start()
    try:
        assert ready.wait(120)
        assert_clean_error(run_cli("run", str(cfg), "--quiet"), "in use by another laf run", f"pid {p.pid}")
        assert sorted(x.name for x in (tmp_path / "reports" / "busy").iterdir()) == [".laf.lock"]  # no stage started
    finally:
        release.set()
        p.join(60)
