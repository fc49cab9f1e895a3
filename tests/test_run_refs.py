"""RUN#MODEL: one parser for every reader of a run (gate, compare, diversity), one error for a bad reference."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.errors import LafError
from harness.results import RunRef, parse_run_ref


@pytest.mark.parametrize(("ref", "folder", "model"), [
    ("reports/q", "reports/q", None),
    ("reports/q#base", "reports/q", "base"),
    ("reports/q#support@3", "reports/q", "support@3"),
    ("reports/q#", "reports/q", None),
    ("reports/a#b#support@3", "reports/a#b", "support@3"),  # the model follows the last '#': a folder may hold one
    ("reports/q/", "reports/q/", None),  # the folder as written: labels and messages show it unchanged
])
def test_parse_run_ref(ref, folder, model):
    r = parse_run_ref(ref)
    assert r == RunRef(folder, model)
    assert r.path == Path(folder)


@pytest.mark.parametrize("ref", ["", "#base", "  #support@1", "#"])
def test_a_reference_without_a_run_folder_is_the_one_error(ref):
    with pytest.raises(LafError) as e:
        parse_run_ref(ref)
    assert e.value.cause == f"'{ref}' is not a run reference: it names no run folder"
    assert "RUN#MODEL" in e.value.fix


def test_gate_compare_and_diversity_give_the_same_error_for_a_bad_reference():
    from harness.diversity.prediction_space import load_prediction_inputs
    from harness.gate.compare import compare_runs
    from harness.gate.runs import load_side

    causes = []
    for call in (lambda: load_side("#base", "candidate", default_base=False),
                 lambda: compare_runs(["#base", "#x"], None, None),
                 lambda: load_prediction_inputs(["#base", "#x"])):
        with pytest.raises(LafError) as e:
            call()
        causes.append(e.value.cause)
    assert causes == ["'#base' is not a run reference: it names no run folder"] * 3
