"""The trainer's numbers, pinned: every objective trains the tiny fixture for a few steps and each step's metrics
(loss, gradient norm, the objective's own stats, the preserve terms, held-out evaluation) must equal the values
recorded before the loop was rebuilt around the objective interface (``harness/train/objective.py``).

A refactor of the recipe (the loop, the objectives, the optimizer and schedule construction) must not move a number:
the values below were recorded on the code before it, and the manifest's objective and preserve blocks and the key
sets of the metrics rows and the manifest must stay as they were (the registry, the pipeline and the report read them).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from harness.train import train
from tests import test_preference as pref
from tests import test_train as sft

TIMING = {"tokens_per_s", "elapsed_s", "memory_mb"}  # measured, not computed: never pinned
REPLAY = {"source": "self", "ratio": 0.3, "count": 8, "max_new_tokens": 12}

CASES = {
    "sft": lambda tmp, model: sft.make_config(tmp, model, precision="fp32", max_steps=4, eval_every=2, save_every=0),
    "sft_replay_kl": lambda tmp, model: sft.make_config(tmp, model, precision="fp32", max_steps=4, eval_every=2, save_every=0,
                                                        preserve={"replay": REPLAY, "kl": {"weight": 0.5, "on": "all"}}),
    "sft_kl_replay_only": lambda tmp, model: sft.make_config(tmp, model, precision="fp32", max_steps=3, eval_every=0, save_every=0, grad_accum=2,
                                                             preserve={"replay": REPLAY, "kl": {"weight": 2.0, "on": "replay"}}),
    "dpo": lambda tmp, model: pref.make_config(tmp, model, "dpo", max_steps=4, eval_every=2, save_every=0),
    "orpo": lambda tmp, model: pref.make_config(tmp, model, "orpo", max_steps=4, eval_every=2, save_every=0, grad_accum=2),
    "simpo": lambda tmp, model: pref.make_config(tmp, model, "simpo", max_steps=4, eval_every=2, save_every=0),
    "simpo_sft": lambda tmp, model: pref.make_config(tmp, model, "simpo", max_steps=3, eval_every=3, save_every=0, preference__sft_weight=0.5),
    "dpo_replay_kl": lambda tmp, model: pref.make_config(tmp, model, "dpo", max_steps=3, eval_every=3, save_every=0,
                                                         preserve={"replay": REPLAY, "kl": {"weight": 0.5, "on": "all"}}),
    "orpo_kl_train": lambda tmp, model: pref.make_config(tmp, model, "orpo", max_steps=3, eval_every=0, save_every=0,
                                                         preserve={"replay": REPLAY, "kl": {"weight": 1.0, "on": "train"}}),
}


def observe(case: str, tmp_path, model_dir) -> dict:
    """Train ``case`` and return what is pinned: the metrics rows without timings, the manifest's keys, its objective
    block (without the reference pass's seconds) and the preserve facts that do not depend on the temporary folder."""
    res = train(CASES[case](tmp_path, model_dir))
    rows = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    m = res.entry.manifest
    objective = m.get("objective")
    if objective and objective.get("reference"):
        objective = {**objective, "reference": {k: v for k, v in objective["reference"].items() if k != "seconds"}}
    preserve = m.get("preserve")
    if preserve is not None:
        data = preserve["replay_data"] or {}
        preserve = {"keys": sorted(preserve), "kl": preserve["kl"], "replay_digest": preserve["replay_digest"],
                    "replay": {k: data[k] for k in ("ratio", "texts", "kept", "dropped_contaminated", "tokens") if k in data}}
    return {
        "rows": [{k: v for k, v in r.items() if k not in TIMING} for r in rows],
        "row_keys": [list(r) for r in rows],
        "manifest_keys": sorted(m),
        "objective": objective,
        "preserve": preserve,
        "state": {"step": res.state.step, "epoch": res.state.epoch, "tokens_seen": res.state.tokens_seen, "supervised_seen": res.state.supervised_seen},
    }


# How far a pinned float may move: fp32 rounding, not the recipe. The values were recorded on an Intel CPU with
# AVX-512. On an AMD EPYC (AVX2 kernels, another summation order) the same code moved them by up to 4e-6 on a
# log-prob of -119.8 (3e-8 relative); the tiled LM head (an online log-sum-exp, another order again) by up to 1.5e-5
# on -107.5 (1.4e-7 relative). Metrics are written rounded to 6 decimals, so any drift can flip the last digit: 1e-6
# plus float error. A preference reward is beta x (log-prob difference), so its drift is beta x theirs: 2e-6 was
# seen on a reward of 0.0136. Below these bounds nothing is pinned; a change to the recipe (a term, a normalisation,
# a step of the schedule) moves a loss or a log-prob by far more than 5e-7 of it.
PIN_REL, PIN_ABS, PIN_ABS_REWARD = 5e-7, 1.5e-6, 3e-6


def _assert_same(got, want, where: str) -> None:
    """Equal structure; floats within fp32 rounding (:data:`PIN_REL`, :data:`PIN_ABS`, :data:`PIN_ABS_REWARD`;
    metrics are rounded to 6 decimals when written), everything else exact."""
    if isinstance(want, float) and not isinstance(got, bool):
        assert isinstance(got, (int, float)), f"{where}: {got!r} is not a number"
        tol = PIN_ABS_REWARD if "rewards" in where.rsplit(".", 1)[-1] else PIN_ABS
        assert got == pytest.approx(want, abs=tol, rel=PIN_REL), f"{where}: {got!r} != {want!r}"
    elif isinstance(want, dict):
        assert isinstance(got, dict) and list(got) == list(want), f"{where}: keys {list(got) if isinstance(got, dict) else got!r} != {list(want)}"
        for k in want:
            _assert_same(got[k], want[k], f"{where}.{k}")
    elif isinstance(want, list):
        assert isinstance(got, list) and len(got) == len(want), f"{where}: {got!r} != {want!r}"
        for i, (g, w) in enumerate(zip(got, want)):
            _assert_same(g, w, f"{where}[{i}]")
    else:
        assert got == want and type(got) is type(want), f"{where}: {got!r} != {want!r}"


# recorded on the trainer before the objective interface (commit "pin the trainer's numbers"), by ``observe`` per case
EXPECTED: dict[str, dict] = json.loads((Path(__file__).with_name("train_recipe_expected.json")).read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def replay_cache(tmp_path_factory):
    """One private LAF_CACHE for the module: the self-generated replay (the same settings in every case, so the same
    cache entry) is generated by the first case and read by the others, as a second real run would."""
    with pytest.MonkeyPatch.context() as mp:
        cache = tmp_path_factory.mktemp("laf-cache")
        mp.setenv("LAF_CACHE", str(cache))
        yield cache


@pytest.mark.parametrize("case", sorted(CASES))
def test_training_numbers_are_pinned(case, tiny_model_dir, tmp_path, replay_cache):
    assert sorted(EXPECTED) == sorted(CASES)
    got = observe(case, tmp_path, tiny_model_dir)
    assert got["rows"] and all(r["loss"] == r["loss"] for r in got["rows"])  # rows were written, none NaN
    _assert_same(got, EXPECTED[case], case)


def test_every_objective_value_has_a_class_and_the_loop_names_none():
    """``objective:`` accepts exactly the values the loop can train (``OBJECTIVES``), and the loop reaches them through
    the interface only: no branch on the objective's name or on an absent objective."""
    import ast
    import typing

    import harness.train.loop as loop
    from harness.train.config import TrainSettings
    from harness.train.objective import Objective

    values = typing.get_args(TrainSettings.model_fields["objective"].annotation)
    assert sorted(values) == sorted(loop.OBJECTIVES) and all(issubclass(c, Objective) for c in loop.OBJECTIVES.values())
    tree = ast.parse(Path(loop.__file__).read_text(encoding="utf-8"))
    uses = [n for n in ast.walk(tree) if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "cfg"]
    assert "preference" not in {n.attr for n in uses}  # cfg.preference: the preference objective's business
    lookups = [ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.Subscript) and ast.unparse(n.value) == "OBJECTIVES"]
    assert lookups == ["OBJECTIVES[cfg.objective]"] and sum(n.attr == "objective" for n in uses) == 1  # read once, to pick the class
    compares_none = [ast.unparse(n) for n in ast.walk(tree) if isinstance(n, ast.Compare) and "objective" in ast.unparse(n)]
    assert compares_none == []
