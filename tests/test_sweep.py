"""laf sweep on the tiny fixture: examples/sweep-rank.yaml end to end (no Ray imported), resume, a new point, the
grid and its names, and bad input (unknown/empty axes, too many points, a second sweep, Ray unreachable/missing)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from harness.errors import LafError
from harness.sweep import count_points, expand
from harness.sweep.config import SweepConfig, point_name
from tests.conftest import REPO, assert_clean_error, run_cli

RANKS = [2, 4, 8, 16, 32]


def example_config(tmp_path: Path, model: Path, **over) -> Path:
    """examples/sweep-rank.yaml as written, except the model (the tiny fixture), 3 steps, 16-30 items a suite, 160
    training rows, and this test's registry, output folder and cache."""
    cfg = yaml.safe_load((REPO / "examples" / "sweep-rank.yaml").read_text())
    rows = (REPO / "examples" / "quickstart" / "train.jsonl").read_text().splitlines()[:160]
    (tmp_path / "train.jsonl").write_text("\n".join(rows) + "\n")
    cfg["model"] = str(model)
    cfg["data"]["path"] = "train.jsonl"
    cfg["train"].update(max_steps=3, eval_every=3, save_every=3, max_length=96, batch_size=4)
    cfg["eval"].update(cache=str(tmp_path / "cache.sqlite"), batch_size=4,
                       suites=[{"suite": "domain/tempo-t4", "limit": 30}, {"suite": "general/world-facts", "limit": 30}, {"suite": "general/text", "limit": 16}])
    cfg["gate"]["policy"]["min_items"] = 10
    cfg.update(registry=str(tmp_path / "registry"), out_root=str(tmp_path / "reports"), **over)
    path = tmp_path / "sweep.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def swept(tiny_model_dir, tmp_path_factory):
    """The example sweep through the CLI in a fresh interpreter, which then checks that Ray was never imported."""
    tmp = tmp_path_factory.mktemp("sweep")
    config = example_config(tmp, tiny_model_dir)
    code = ("import sys; from harness.cli import main; rc = main(['sweep', sys.argv[1], '--json']); "
            "assert 'ray' not in sys.modules, 'ray imported without --workers'; sys.exit(rc)")
    p = subprocess.run([sys.executable, "-c", code, str(config)], cwd=REPO, capture_output=True, text=True, timeout=900)
    assert p.returncode in (0, 1, 2), p.stderr[-3000:]
    return {"tmp": tmp, "config": config, "summary": json.loads(p.stdout), "run_dir": tmp / "reports" / "sweep-rank"}


def test_example_sweep_trains_scores_gates_costs_and_recommends(swept):
    run_dir, s = swept["run_dir"], swept["summary"]
    doc = json.loads((run_dir / "sweep.json").read_text())
    names = [p["name"] for p in doc["points"]]
    assert names == [f"sweep-rank-r{r}" for r in RANKS]
    for p, r in zip(doc["points"], RANKS):
        assert p["model"] == f"sweep-rank-r{r}@1" and p["params"] == {"lora.r": r}
        c = p["cost"]
        assert c["trainable_parameters"] > 0 and 0 < c["trainable_percent"] < 100 and c["adapter_bytes"] > 0
        assert c["train_time_s"] > 0 and c["tokens"] > 0 and c["peak_memory_mb"] > 0 and c["eval_time_s"] > 0
        ft = c["full_finetune"]
        assert ft["trainable_parameters"] == c["total_parameters"] and ft["state_memory_mb"] == round(c["total_parameters"] * 16 / 2**20, 1)
        assert ft["train_time_s"] == round(c["train_time_s"] * 1.5, 2)
        assert p["verdict"] in ("pass", "fail", "inconclusive") and p["domain"]["ci_low"] <= p["domain"]["improvement"] <= p["domain"]["ci_high"]
        # the lineage: the registered manifest holds the point's config
        man = json.loads((swept["tmp"] / "registry" / p["name"] / "1" / "manifest.json").read_text())
        assert man["config"]["lora"]["r"] == r and man["config"]["name"] == p["name"]
    params = [p["cost"]["trainable_parameters"] for p in doc["points"]]
    assert params == sorted(params) and params[1] == 2 * params[0], "LoRA parameters grow linearly with r"
    # every point and the base on the same items, in one evaluation
    res = json.loads((run_dir / "eval" / "results.json").read_text())
    assert set(res["models"]) == {"base"} | {f"sweep-rank-r{r}@1" for r in RANKS}
    assert (run_dir / "eval" / "records.jsonl").exists() and (run_dir / "compare.json").exists()
    assert all((run_dir / f"verdict-sweep-rank-r{r}-1.json").exists() for r in RANKS[1:]) and (run_dir / "verdict.json").exists()
    rec = doc["recommendation"]
    assert rec["sentence"] == s["recommendation"]["sentence"]
    # the rule, checked against the table: the cheapest eligible point
    eligible = [p for p in doc["points"] if p["eligible"]]
    if eligible:
        assert rec["point"] == min(eligible, key=lambda p: (p["cost"]["trainable_parameters"], p["cost"]["train_time_s"]))["name"]
        assert rec["point"] in rec["sentence"] and "points" in rec["sentence"] and "trainable parameters" in rec["sentence"]
        assert all(p["verdict"] == "pass" and p["vs_best"]["ci_low"] > -0.02 for p in eligible)
    else:
        assert rec["point"] is None and rec["sentence"].startswith("No point is recommended")
    html = (run_dir / "report.html").read_text()
    assert "id='sweep'" in html or 'id="sweep"' in html
    assert "sweep: domain gain and general change per point" in html and "full fine-tuning" in html.lower()
    assert (run_dir / "recommendation.txt").read_text().strip() == rec["sentence"]
    # the stages after training are laf run's: the sweep is recorded in the release history like a run, and the
    # compare.json it ranks the points from is the one the compare stage wrote (its model, tests/test_artifacts.py)
    assert s["history"]["new"] and Path(s["history"]["store"]).is_file() and "history" in s["stages_ran"]  # LAF_HISTORY_URL: conftest's
    from harness.results.artifacts import CompareDoc, read

    compare = read(run_dir / "compare.json", CompareDoc)
    assert {p["model"]: p["rank"] for p in doc["points"]} == {r.model: r.rank for r in compare.ranking}


def test_rerun_is_all_skipped_and_a_new_point_trains_only_itself(swept):
    from harness.sweep import run_sweep

    again = run_sweep(swept["config"])
    assert again["stages_skipped"] == ["curate", *(f"train:sweep-rank-r{r}" for r in RANKS), "eval"]
    cfg = yaml.safe_load(swept["config"].read_text())
    cfg["sweep"]["lora.r"] = RANKS + [1]
    swept["config"].write_text(yaml.safe_dump(cfg, sort_keys=False))
    more = run_sweep(swept["config"])
    assert [s for s in more["stages_ran"] if s.startswith("train:")] == ["train:sweep-rank-r1"]
    res = json.loads((swept["run_dir"] / "eval" / "results.json").read_text())
    computed = {m: v["requests"]["computed"] for m, v in res["models"].items()}
    assert computed.pop("sweep-rank-r1@1") > 0 and not any(computed.values()), "only the new point was scored"
    assert sorted(p.name for p in (swept["tmp"] / "registry" / "sweep-rank-r2").iterdir()) == ["1"]
    assert more["recommendation"]["sentence"]


def _cfg(**sweep_and_more) -> SweepConfig:
    base = {"name": "g", "model": "m", "data": {"path": "d.jsonl"}, "train": {"lora": {"r": 8}}, "eval": {"suites": ["general/world-facts"]}}
    return SweepConfig.model_validate({**base, **sweep_and_more})


def test_grid_names_and_merge_points():
    cfg = _cfg(sweep={"lora.r": [2, 4], "optim.lr": [1.0e-3, 3.0e-4], "train.lora.target_modules": [["q_proj", "v_proj"]]})
    pts = expand(cfg)
    assert [p.name for p in pts] == ["g-r2-lr1e-3-tmq_proj_v_proj", "g-r2-lr3e-4-tmq_proj_v_proj", "g-r4-lr1e-3-tmq_proj_v_proj", "g-r4-lr3e-4-tmq_proj_v_proj"]
    assert pts[1].train == {"lora": {"r": 2, "target_modules": ["q_proj", "v_proj"]}, "optim": {"lr": 3.0e-4}}
    assert cfg.train.model_dump(exclude_unset=True) == {"lora": {"r": 8}}, "the base config is not modified"
    assert [p.name for p in expand(cfg)] == [p.name for p in pts], "names are stable"
    assert point_name("x", {"objective": "dpo", "data.limit": 0.25}, {"objective": "", "data.limit": "n"}) == "x-dpo-n0.25"
    long = point_name("x" * 60, {"lora.r": 2}, {"lora.r": "r"})
    assert len(long) <= 64 and long == point_name("x" * 60, {"lora.r": 2}, {"lora.r": "r"})
    m = _cfg(data=None, adapters=["a@1", "b@1"], sweep={"merge.t": [0.25, 0.5, 0.75]},
             merge=[{"name": "ab", "method": "slerp", "adapters": ["a@1", "b@1"], "t": 0.5}])
    mp = expand(m)
    assert [(p.kind, p.name, p.merge["t"]) for p in mp] == [("merge", "ab-t0.25", 0.25), ("merge", "ab-t0.5", 0.5), ("merge", "ab-t0.75", 0.75)]
    assert count_points(_cfg(sweep={"lora.r": list(range(1, 41)), "optim.lr": [1e-3 * i for i in range(1, 31)]})) == 1200
    with pytest.raises(LafError, match=r"(?s)1,200 points.*--max-points 1200"):
        expand(_cfg(sweep={"lora.r": list(range(1, 41)), "optim.lr": [1e-3 * i for i in range(1, 31)]}))
    assert len(expand(_cfg(sweep={"lora.r": list(range(1, 41)), "optim.lr": [1e-3 * i for i in range(1, 31)]}), max_points=1200)) == 1200


# -- bad input


def _write(tmp_path: Path, model: Path, **over) -> Path:
    return example_config(tmp_path, model, **over)


def test_unknown_and_empty_axes_are_refused_naming_the_known_keys(tiny_model_dir, tmp_path):
    assert_clean_error(run_cli("sweep", str(_write(tmp_path, tiny_model_dir, sweep={"lora.rank": [2, 4]}))), "unknown axis 'lora.rank'", "lora.r", "optim.lr")
    assert_clean_error(run_cli("sweep", str(_write(tmp_path, tiny_model_dir, sweep={"lora.r": []}))), "axis 'lora.r' is empty")
    # one evaluation scores every point on one loaded base: the NF4 compute dtype is the sweep's, not an axis
    assert_clean_error(run_cli("sweep", str(_write(tmp_path, tiny_model_dir, sweep={"compute_dtype": ["fp32", "bf16"]}))), "unknown axis 'compute_dtype'")
    assert_clean_error(run_cli("sweep", str(_write(tmp_path, tiny_model_dir, sweep={}))), "sweep")
    assert_clean_error(run_cli("sweep", str(_write(tmp_path, tiny_model_dir, sweep={"lora.r": [0, 4]}))), "point sweep-rank-r0", "lora.r")
    assert_clean_error(run_cli("sweep", str(_write(tmp_path, tiny_model_dir, sweep={"data.limit": [1.5]}))), "data.limit", "fraction")
    # YAML reads 1e999 as a string that pydantic would parse to infinity: refused before any point trains
    assert_clean_error(run_cli("sweep", str(_write(tmp_path, tiny_model_dir, sweep={"optim.lr": ["1e999", 1e-3]}))), "point sweep-rank-lr1e999", "finite")
    assert_clean_error(run_cli("sweep", str(_write(tmp_path, tiny_model_dir, sweep={"merge.t": [0.5]}))), "no 'merge:' entries")
    assert_clean_error(run_cli("run", str(_write(tmp_path, tiny_model_dir))), "laf sweep")
    with pytest.raises(SystemExit) as e:  # argparse: a bad argument exits 2 with its message
        run_cli("sweep", str(_write(tmp_path, tiny_model_dir)), "--workers", "0")
    assert e.value.code == 2


def test_more_than_1000_points_needs_max_points(tiny_model_dir, tmp_path):
    cfg = _write(tmp_path, tiny_model_dir, sweep={"lora.r": list(range(1, 1002))})
    assert_clean_error(run_cli("sweep", str(cfg)), "1,001 points", "--max-points 1001")
    assert_clean_error(run_cli("sweep", str(cfg), "--max-points", "1000"), "1,001 points, more than 1,000")


def test_a_second_sweep_into_the_same_folder_fails_at_once(tiny_model_dir, tmp_path):
    from harness.io import exclusive_lock

    cfg = _write(tmp_path, tiny_model_dir)
    with exclusive_lock(tmp_path / "reports" / "sweep-rank", "laf sweep"):
        t0 = time.time()
        assert_clean_error(run_cli("sweep", str(cfg)), "laf sweep")
        assert time.time() - t0 < 30


def test_unreachable_ray_address_fails_within_seconds(tiny_model_dir, tmp_path):
    pytest.importorskip("ray")
    cfg = _write(tmp_path, tiny_model_dir)
    t0 = time.time()
    assert_clean_error(run_cli("sweep", str(cfg), "--ray-address", "127.0.0.1:9"), "no Ray cluster answers at 127.0.0.1:9")
    assert time.time() - t0 < 15
    assert_clean_error(run_cli("sweep", str(cfg), "--ray-address", "nonsense"), "not HOST:PORT")
    assert not (tmp_path / "registry").exists(), "nothing was trained"


def test_ray_missing_names_the_extra(tiny_model_dir, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` raises ImportError, as when it is not installed
    assert_clean_error(run_cli("sweep", str(_write(tmp_path, tiny_model_dir)), "--workers", "2"), "Ray is not installed", "lost-and-found[scale]")
