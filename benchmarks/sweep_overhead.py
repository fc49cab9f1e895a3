"""What Ray costs a sweep: the same small `laf sweep` with no Ray, on 1 Ray worker and on 2 workers, in one run.

Each variant runs `laf sweep CONFIG --json` in a fresh process (so Ray's start-up, its worker processes' imports
and the model loads they repeat are counted) with its own empty registry, output folder and response cache, and
the script prints wall seconds, the evaluation's seconds per model as the sweep recorded them, and the ratios to
the run without Ray. It also checks that the three runs' per-item records are identical.

Usage:  python benchmarks/sweep_overhead.py [--model tiny|default|PATH] [--ranks 2,4] [--steps 3] [--limit 30]
The tiny fixture (tests/tiny.py) is the default: on it the fixed costs dominate, which is what this measures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def write_config(root: Path, model: str, ranks: list[int], steps: int, limit: int) -> Path:
    import yaml

    rows = (REPO / "examples" / "quickstart" / "train.jsonl").read_text().splitlines()[:160]
    (root / "train.jsonl").write_text("\n".join(rows) + "\n")
    cfg = {
        "name": "bench", "model": model, "precision": "fp32", "data": {"path": "train.jsonl"},
        "train": {"max_length": 96, "batch_size": 4, "max_steps": steps, "eval_every": 0, "save_every": 0, "optim": {"lr": 2.0e-3}},
        "sweep": {"lora.r": ranks},
        "eval": {"batch_size": 4, "suites": [{"suite": "domain/tempo-t4", "limit": limit}, {"suite": "general/world-facts", "limit": limit}]},
        "gate": {"policy": {"confidence": 0.95, "min_items": 10, "rules": [{"category": "domain", "min_gain": 0.0}, {"category": "general", "max_drop": 0.5}]}},
    }
    path = root / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def run(config: Path, root: Path, name: str, extra: list[str]) -> dict:
    work = root / name
    work.mkdir()
    over = ["--set", f"registry={work / 'registry'}", "--set", f"out_root={work / 'reports'}", "--cache", str(work / "cache.sqlite")]
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "harness", "sweep", str(config), "--json", *over, *extra], cwd=REPO, capture_output=True, text=True,
                       env={**os.environ, "PYTHONPATH": str(REPO)})
    wall = time.perf_counter() - t0
    if p.returncode not in (0, 1, 2):
        print(f"{name} failed after {wall:.1f} s: {p.stderr.strip().splitlines()[-2:]}", flush=True)
        return {"wall_s": wall, "eval_s": float("nan"), "records": None}
    out = p.stdout
    start = out.find("\n{") + 1 if not out.startswith("{") else 0  # anything a library printed before the JSON
    if not out.strip():
        raise SystemExit(f"{name} printed nothing (exit {p.returncode}):\n{p.stderr[-3000:]}")
    s = json.loads(out[start:])
    records = (work / "reports" / "bench" / "eval" / "records.jsonl").read_text().splitlines()
    return {"wall_s": wall, "eval_s": sum(pt["cost"]["eval_time_s"] or 0 for pt in s["points"]), "records": sorted(records)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="tiny")
    ap.add_argument("--ranks", default="2,4")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--limit", type=int, default=30)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="laf-sweep-bench-") as tmp:
        root = Path(tmp)
        model = a.model
        if model == "tiny":
            from tests.tiny import build_tiny_model

            model = str(build_tiny_model(root / "tiny"))
        config = write_config(root, model, [int(r) for r in a.ranks.split(",")], a.steps, a.limit)
        res = {}
        for name, extra in (("no Ray", []), ("Ray, 1 worker", ["--workers", "1"]), ("Ray, 2 workers", ["--workers", "2"])):
            res[name] = run(config, root, name, extra)
            print(f"{name}: {res[name]['wall_s']:.1f} s wall", flush=True)
    ref = res["no Ray"]
    print(f"sweep of r in {{{a.ranks}}}, {a.steps} steps, {a.limit} items x 2 suites, model {a.model}, {os.cpu_count()} CPUs")
    print(f"{'variant':<16} {'wall s':>8} {'x no Ray':>9} {'eval s (points)':>16} {'records identical':>18}")
    for name, r in res.items():
        print(f"{name:<16} {r['wall_s']:8.1f} {r['wall_s'] / ref['wall_s']:9.2f} {r['eval_s']:16.1f} {'-' if r['records'] is None else str(r['records'] == ref['records']):>18}")


if __name__ == "__main__":
    main()
