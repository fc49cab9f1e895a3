"""The evaluation on Ray (real Ray, a 2-CPU local cluster, the tiny fixture): records bit for bit equal to the
single-process engine, a worker killed mid-run, a resume with another worker count, and a sweep on Ray."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from harness.evaluate import EvalSpec, run_eval  # noqa: E402
from harness.evaluate.distributed import prefill_cache  # noqa: E402
from harness.results import load_run  # noqa: E402
from harness.suites import load_suite  # noqa: E402
from tests.test_merge import make_adapter  # noqa: E402

SUITES = {"domain/tempo-t4": 24, "general/world-facts": 24}


@pytest.fixture(scope="module")
def cluster():
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("ray")
    reg = root / "registry"
    refs = [make_adapter(reg, "a", tiny_model_dir, 1), make_adapter(reg, "b", tiny_model_dir, 2, r=2, alpha=4)]
    return {"root": root, "registry": reg, "model": tiny_model_dir, "refs": refs}


def spec_for(world, out: Path, cache: Path | None) -> EvalSpec:
    return EvalSpec(suites=list(SUITES), model=str(world["model"]), adapters=world["refs"], out=str(out), precision="fp32", batch_size=4,
                    registry=str(world["registry"]), cache=None if cache is None else str(cache), no_cache=cache is None)


def suites():
    out = []
    for name, limit in SUITES.items():
        s = load_suite(name)
        s.spec.options.limit = limit
        out.append(s)
    return out


def records(folder: Path) -> list[dict]:
    return sorted((r.to_dict() for r in load_run(folder)[1]), key=lambda r: (r["model"], r["suite"], str(r["doc_id"])))


@pytest.fixture(scope="module")
def reference(world):
    """The single-process engine, no cache: every request computed in one process."""
    out = world["root"] / "reference"
    run_eval(spec_for(world, out, None), suites_override=suites())
    return records(out)


def test_two_workers_give_the_single_process_records_bit_for_bit(cluster, world, reference):
    cache = world["root"] / "two.sqlite"
    spec = spec_for(world, world["root"] / "two", cache)
    rep = prefill_cache(spec, suites(), workers=2)
    assert rep.units == 6 and rep.computed == 6 and rep.cached == 0
    doc = run_eval(spec, suites_override=suites()).to_dict()
    assert sum(m["requests"]["computed"] for m in doc["models"].values()) == 0, "the driver's evaluation read everything from the cache"
    got = records(world["root"] / "two")
    assert len(got) == len(reference) == 3 * sum(SUITES.values())
    assert got == reference  # floats compared exactly: the same log-likelihoods bit for bit

    # a resume with ONE worker after the 2-worker run computes nothing
    rep1 = prefill_cache(spec, suites(), workers=1)
    assert rep1.cached == 6 and rep1.computed == 0


def test_one_worker_gives_the_two_worker_records_and_the_applied_figures_travel_with_them(cluster, world, reference):
    """Issue 29, part 3: 1 or 2 Ray workers, the same numbers; the "adapter is applied" figure each worker measured
    reaches results.json through the cache although the driver loads no model."""
    cache = world["root"] / "one.sqlite"
    spec = spec_for(world, world["root"] / "one", cache)
    rep = prefill_cache(spec, suites(), workers=1)
    assert rep.computed == 6 and rep.workers == 1
    doc = run_eval(spec, suites_override=suites()).to_dict()
    assert sum(m["requests"]["computed"] for m in doc["models"].values()) == 0
    assert records(world["root"] / "one") == reference
    single = load_run(world["root"] / "reference")[0]
    for ref in world["refs"]:
        fig = doc["models"][ref]["adapter"]["applied"]
        assert fig is not None and fig == single.models[ref].adapter.applied


def test_a_worker_killed_mid_run_is_replaced_and_the_records_are_unchanged(cluster, world, reference):
    cache = world["root"] / "killed.sqlite"
    spec = spec_for(world, world["root"] / "killed", cache)
    killed: list[int] = []

    def kill_one(actors):
        # the actor is up (its base loaded) and no unit has been handed out yet: killed here, every unit it would
        # have scored must reach a restarted worker. Done before the run goes on, so the kill cannot miss a run
        # that finished first (a timed kill from a thread did, under two test workers).
        pid = ray.get(actors[0].getpid.remote())
        os.kill(pid, signal.SIGKILL)
        killed.append(pid)

    rep = prefill_cache(spec, suites(), workers=2, on_actors=kill_one)
    assert killed, "the worker was killed"
    assert rep.computed == 6
    run_eval(spec, suites_override=suites())
    assert records(world["root"] / "killed") == reference


def test_sweep_on_ray_trains_points_as_tasks_and_resumes_with_one_worker(cluster, tiny_model_dir, tmp_path):
    from harness.sweep import run_sweep
    from tests.test_sweep import example_config

    config = example_config(tmp_path, tiny_model_dir, sweep={"lora.r": [2, 4]})
    s = run_sweep(config, workers=2)
    assert [p["name"] for p in s["points"]] == ["sweep-rank-r2", "sweep-rank-r4"]
    assert s["distributed"]["computed"] == s["distributed"]["units"] == 3 * 3 and s["distributed"]["workers"] == 2
    assert all(p["cost"]["eval_time_s"] > 0 for p in s["points"]) and s["recommendation"]["sentence"]
    assert ray.is_initialized(), "a cluster the caller started is left running"
    # the same sweep with one worker: every point registered, the evaluation unchanged
    again = run_sweep(config, workers=1)
    assert again["stages_skipped"] == ["curate", "train:sweep-rank-r2", "train:sweep-rank-r4", "eval"]
    assert [p["cost"]["eval_time_s"] for p in again["points"]] == [p["cost"]["eval_time_s"] for p in s["points"]]


def _preserve_sweep(tmp_path: Path, tiny_model_dir: Path, where: str) -> Path:
    """examples/quickstart-preserve.yaml on the tiny fixture, two points (replay 0 and 0.5, KL 0.3), select: every 2."""
    import yaml

    from tests.conftest import REPO

    cfg = yaml.safe_load((REPO / "examples" / "quickstart-preserve.yaml").read_text())
    rows = (REPO / "examples" / "quickstart" / "train.jsonl").read_text().splitlines()[:80]
    root = tmp_path / where
    root.mkdir()
    (root / "train.jsonl").write_text("\n".join(rows) + "\n")
    cfg.update(model=str(tiny_model_dir), registry=str(root / "registry"), out_root=str(root / "reports"))
    cfg["data"]["path"] = "train.jsonl"
    cfg["train"].update(max_steps=4, eval_every=2, save_every=2, max_length=96, batch_size=4)
    cfg["train"]["preserve"]["replay"].update(count=8, max_new_tokens=12)
    cfg["sweep"] = {"preserve.replay.ratio": [0.0, 0.5], "preserve.kl.weight": [0.3]}
    cfg["select"]["every"] = 2
    cfg["eval"].update(cache=str(root / "cache.sqlite"), batch_size=4,
                       suites=[{"suite": "domain/tempo-t4", "limit": 50}, {"suite": "general/world-facts", "limit": 50}, {"suite": "general/text", "limit": 30}])
    cfg["gate"]["policy"]["min_items"] = 10
    cfg["gate"]["policy"]["rules"] = cfg["gate"]["policy"]["rules"][:3]
    (root / "p.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    return root / "p.yaml"


def test_sweep_with_select_trains_its_points_as_ray_tasks_and_chooses_as_in_process(cluster, tiny_model_dir, tmp_path, isolated_cache):
    """With select:, the points train as Ray tasks at once (each point's snapshots scored in the driver as it
    finishes), with the run's replay contamination check: the same snapshots chosen, the same curves and the same
    replay accounting as the in-process sweep."""
    from harness.registry import Registry
    from harness.sweep import run_sweep

    docs, manifests, logs = {}, {}, {}
    for where, workers in (("ray", 2), ("here", None)):
        config = _preserve_sweep(tmp_path, tiny_model_dir, where)
        logs[where] = []
        run_sweep(config, workers=workers, log=logs[where].append)
        s = json.loads((config.parent / "reports" / "quickstart-preserve" / "sweep.json").read_text())
        docs[where] = s
        reg = Registry(config.parent / "registry")
        manifests[where] = [reg.resolve(p["model"]).manifest for p in s["points"]]
    ray_doc, here = docs["ray"], docs["here"]
    assert [p["name"] for p in ray_doc["points"]] == [p["name"] for p in here["points"]] == ["quickstart-preserve-rp0-kl0.3", "quickstart-preserve-rp0.5-kl0.3"]
    assert {k: v["chosen_step"] for k, v in ray_doc["selection"].items()} == {k: v["chosen_step"] for k, v in here["selection"].items()}
    for name, sel in here["selection"].items():
        for a, b in zip(ray_doc["selection"][name]["curve"], sel["curve"], strict=True):
            assert a["step"] == b["step"]
            for ra, rb in zip(a["rules"], b["rules"], strict=True):
                assert ra["target"] == rb["target"] and ra["delta"] == pytest.approx(rb["delta"], abs=1e-3)
    for m_ray, m_here in zip(manifests["ray"], manifests["here"], strict=True):
        assert m_ray["selection"]["chosen_step"] == m_here["selection"]["chosen_step"]
        drop = ("seconds", "cached")  # the second sweep reads the replay the first one wrote
        got, want = ({k: v for k, v in m["preserve"]["replay_data"].items() if k not in drop} if m["preserve"]["replay_data"] else None for m in (m_ray, m_here))
        assert got == want  # the run's own contamination check, on Ray too
    assert manifests["here"][1]["preserve"]["replay_data"]["contamination"]
    assert ray_doc["distributed"]["workers"] == 2
    # after the first point's selection a stage line says the rest still trains (the progress heartbeat then repeats
    # that, not the selection's last suite); none after the last point, none in process
    stages = [m for m in logs["ray"] if m.startswith("train: ") or m.startswith("select: ")]
    assert stages[0] == "train: 2 point(s) as Ray tasks (one CPU slot each)"
    assert stages[1].startswith("select: ") and stages[2] == "train: 1 of 2 point(s) done, 1 to come" and stages[3].startswith("select: ")
    assert not [m for m in logs["ray"] if "to come" in m][1:] and not [m for m in logs["here"] if "to come" in m]
