"""Suite type ``preference``: held-out preference pairs, scored by log-likelihood.

Each item is ``{prompt, chosen, rejected}`` (an optional ``kind`` breaks the
metrics down). The prompt is asked in the training template
(:func:`harness.prompt.plain_prompt`, as the domain suites do), and both
answers are scored as continuations of it in one multiple-choice request, so
the scorer shares the prompt's forward pass between them.

Metrics per item (the gate pairs items across models like any suite):

* ``pref_acc``: the chosen answer is more likely than the rejected one (summed log-probs);
* ``pref_acc_norm``: the same with log-probs divided by the answer's length in
  UTF-8 bytes (lm-eval's ``acc_norm`` normalisation, tokenizer-independent);
* ``margin``: log p(chosen) - log p(rejected) in nats, unbounded.

Preference training raises ``margin`` by construction; ``pref_acc`` on pairs
it never saw is the held-out check that it learnt the distinction rather than
the training pairs.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import LafError
from ..prompt import plain_prompt
from .answers import metric, metrics
from .hallucination import require
from .task import TaskBuild, base_task_config

if TYPE_CHECKING:
    from .spec import Suite


def _check(suite: Suite, docs: list[dict]) -> None:
    require(suite, docs, {"prompt": str, "chosen": str, "rejected": str}, "preference (prompt, chosen, rejected, kind?)")
    for i, d in enumerate(docs):
        if d["chosen"].strip() == d["rejected"].strip():
            raise LafError(f"suite {suite.name}, item {i + 1}: chosen and rejected are the same text", "a preference item needs two different answers")


def preference(suite: Suite, docs: list[dict]) -> TaskBuild:
    _check(suite, docs)

    def process(doc, results):
        (ll_c, _), (ll_r, _) = results[0], results[1]
        n_c, n_r = max(1, len(doc["chosen"].encode("utf-8"))), max(1, len(doc["rejected"].encode("utf-8")))
        return {"pref_acc": float(ll_c > ll_r), "pref_acc_norm": float(ll_c / n_c > ll_r / n_r), "margin": float(ll_c - ll_r)}

    mlist, meta = metrics(metric("pref_acc", scale=(0, 1)), metric("pref_acc_norm", scale=(0, 1)), metric("margin"))
    cfg = {
        "output_type": "multiple_choice",
        "doc_to_text": lambda d: plain_prompt(d["prompt"]),
        "doc_to_choice": lambda d: [d["chosen"], d["rejected"]],
        "doc_to_target": lambda d: 0,
        "target_delimiter": "",
        "process_results": process,
        "metric_list": mlist,
        **base_task_config(suite, docs),
    }
    breakdown = "kind" if all(isinstance(d.get("kind"), str) for d in docs) else None
    return TaskBuild(cfg, meta, suite.spec.primary_metric or "pref_acc", breakdown=breakdown)
