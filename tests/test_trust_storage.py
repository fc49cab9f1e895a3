"""Issue 18, family "storage faults": a full disk or a file-size limit while training, cleaning data, writing a
report or registering is one clear error (exit 3) with every earlier file intact; an unwritable output folder
is refused; reading a registry needs no write access.

Faults are real: ``RLIMIT_FSIZE`` in a child process (SIGXFSZ ignored, so writes fail with EFBIG), and a
small or read-only tmpfs where this machine lets us mount one.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml

from harness.io import sha256_file
from harness.registry import Registry
from tests.synthetic import suite_meta, write_run

ROOT = Path(__file__).resolve().parents[1]
ROWS = [{"instruction": f"What is the code for item {i}? " + "detail " * 20, "output": f"The code for item {i} is Z{i * 7}."} for i in range(60)]


def _limited(limit: int | None):
    def pre():
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails with EFBIG instead of killing us
        if limit is not None:
            resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
    return pre


def _laf(*argv: str, cwd: Path, limit: int | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "harness", *argv], cwd=cwd, capture_output=True, text=True, timeout=600, preexec_fn=_limited(limit),
                          env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "TMPDIR": str(cwd)})


def _clean_error(p: subprocess.CompletedProcess, *needles: str) -> None:
    assert p.returncode == 3, (p.returncode, p.stderr[-3000:])
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    for n in needles:
        assert n in p.stderr, p.stderr[-3000:]


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): sha256_file(p) for p in sorted(folder.rglob("*")) if p.is_file() and p.name != ".laf.lock"}


def _train_cfg(tmp_path: Path, model_dir: Path, out: str, **over) -> Path:
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    cfg = {"name": "disk", "model": str(model_dir), "precision": "fp32", "data": {"path": str(data)}, "max_length": 160, "batch_size": 4,
           "max_steps": 2, "eval_every": 0, "save_every": 0, "registry": str(tmp_path / "reg"), "output_dir": str(tmp_path / out), **over}
    path = tmp_path / f"{out}.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


# ---------------------------------------------------------------- RLIMIT_FSIZE: the file-size fault


def test_training_registration_on_a_full_disk_fails_cleanly_and_keeps_earlier_versions(tiny_model_dir, tmp_path):
    assert _laf("train", str(_train_cfg(tmp_path, tiny_model_dir, "run1")), "--quiet", cwd=tmp_path).returncode == 0
    before = _snapshot(tmp_path / "reg")
    weights = (tmp_path / "reg" / "disk" / "1" / "adapter_model.safetensors").stat().st_size
    p = _laf("train", str(_train_cfg(tmp_path, tiny_model_dir, "run2")), "--quiet", cwd=tmp_path, limit=weights // 2)
    _clean_error(p, "nothing was registered")
    assert _snapshot(tmp_path / "reg") == before  # version 1 untouched, no version 2, no partial folder
    assert Registry(tmp_path / "reg").versions("disk") == [1] and Registry(tmp_path / "reg").verify("disk@1").ok
    assert not [q for q in (tmp_path / "reg" / "disk").iterdir() if q.name.startswith(".")]


def test_a_checkpoint_that_cannot_be_written_is_one_clear_error(tiny_model_dir, tmp_path):
    # 16 KiB: the metrics lines fit, the checkpoint's LoRA weights (69 KB for the tiny model) do not
    p = _laf("train", str(_train_cfg(tmp_path, tiny_model_dir, "run", max_steps=4, save_every=1)), "--quiet", cwd=tmp_path, limit=16 << 10)
    _clean_error(p, "writing the training output", "failed")
    assert Registry(tmp_path / "reg").versions("disk") == []
    assert not list((tmp_path / "run").glob("checkpoints/.*"))  # no half-written checkpoint folder
    assert (tmp_path / "run" / "metrics.jsonl").read_text().count("\n") == 1  # the one step done before the failed save


def test_data_clean_on_a_full_disk_keeps_the_earlier_output(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS))
    args = ["data", "clean", str(data), "--model", "none", "--out", str(tmp_path / "out")]
    assert _laf(*args, cwd=tmp_path).returncode == 0
    before = _snapshot(tmp_path / "out")
    data.write_text("".join(json.dumps({**r, "output": r["output"] + " changed"}) + "\n" for r in ROWS))
    _clean_error(_laf(*args, cwd=tmp_path, limit=2048), "failed", "unchanged")
    assert _snapshot(tmp_path / "out") == before
    assert not [q for q in (tmp_path / "out").iterdir() if q.name.startswith(".")]  # no temp file left


def test_report_on_a_full_disk_keeps_the_earlier_report(tmp_path):
    suites = {"domain/x": suite_meta("domain"), "general/y": suite_meta("general")}
    run = write_run(tmp_path / "run", suites, {"base": {s: [1, 0] * 20 for s in suites}, "cand@1": {s: [1, 1] * 20 for s in suites}})
    out = tmp_path / "rep" / "report.html"
    assert _laf("report", str(run), "-o", str(out), cwd=tmp_path).returncode == 0
    before = out.read_bytes()
    _clean_error(_laf("report", str(run), "-o", str(out), cwd=tmp_path, limit=4096), "failed")
    assert out.read_bytes() == before


REGISTER = """
import sys
from pathlib import Path
from harness.errors import LafError
from harness.registry import Registry
try:
    Registry(sys.argv[1]).register("big", Path(sys.argv[2]), {"kind": "lora"})
except LafError as e:
    print("LafError:", e.cause, file=sys.stderr)
    sys.exit(3)
"""


def test_registering_on_a_full_disk_is_all_or_nothing(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "adapter_model.safetensors").write_bytes(os.urandom(256 << 10))
    (src / "adapter_config.json").write_text("{}")
    Registry(tmp_path / "reg").register("big", src, {"kind": "lora"})
    before = _snapshot(tmp_path / "reg")
    p = subprocess.run([sys.executable, "-c", REGISTER, str(tmp_path / "reg"), str(src)], capture_output=True, text=True, timeout=120,
                       preexec_fn=_limited(64 << 10), env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 3 and "nothing was registered" in p.stderr and "Traceback" not in p.stderr, p.stderr
    assert _snapshot(tmp_path / "reg") == before


# ---------------------------------------------------------------- folders that cannot be written


def test_an_output_folder_that_cannot_be_created_is_refused(tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:5]))
    (tmp_path / "afile").write_text("x")
    _clean_error(_laf("data", "clean", str(data), "--model", "none", "--out", str(tmp_path / "afile" / "out"), cwd=tmp_path), "cannot create folder")
    assert (tmp_path / "afile").read_text() == "x"


@pytest.fixture
def tmpfs(tmp_path):
    """A 1 MiB tmpfs, or a skip where this machine does not let us mount one (CI containers without CAP_SYS_ADMIN)."""
    mnt = tmp_path / f"mnt-{uuid.uuid4().hex[:6]}"
    mnt.mkdir()
    if shutil.which("mount") is None or subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)], capture_output=True)


def test_a_really_full_disk_while_cleaning_and_registering(tmpfs, tmp_path):
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps({"instruction": f"Item {i}: {os.urandom(300).hex()}", "output": f"ok {i}"}) + "\n" for i in range(2000)))  # > 1 MiB cleaned
    _clean_error(_laf("data", "clean", str(data), "--model", "none", "--out", str(tmpfs / "out"), cwd=tmp_path), "No space left")
    assert not [q for q in (tmpfs / "out").iterdir()] or not any(q.name.startswith(".") for q in (tmpfs / "out").iterdir())
    src = tmp_path / "src"
    src.mkdir()
    (src / "adapter_model.safetensors").write_bytes(os.urandom(2 << 20))
    p = subprocess.run([sys.executable, "-c", REGISTER, str(tmpfs / "reg"), str(src)], capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 3 and "No space left" in p.stderr, p.stderr
    assert Registry(tmpfs / "reg").versions("big") == [] and not list((tmpfs / "reg" / "big").iterdir())


def test_a_read_only_registry_can_be_listed_shown_and_verified(tmpfs, tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "adapter_model.safetensors").write_bytes(os.urandom(4096))
    (src / "adapter_config.json").write_text("{}")
    Registry(tmpfs / "reg").register("ro", src, {"kind": "lora", "base_model": {"spec": "tiny"}, "data": {}, "trainable_parameters": 1, "tokens_seen": 2})
    assert subprocess.run(["mount", "-o", "remount,ro", str(tmpfs)], capture_output=True).returncode == 0
    for action in (["list"], ["show", "ro"], ["verify", "ro"], ["list", "--json"]):
        p = _laf("registry", *action, "--registry", str(tmpfs / "reg"), cwd=tmp_path)
        assert p.returncode == 0, (action, p.stderr)
    data = tmp_path / "d.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in ROWS[:5]))
    _clean_error(_laf("data", "check", str(data), "--model", "none", "--out", str(tmpfs / "out"), cwd=tmp_path), "Read-only")
