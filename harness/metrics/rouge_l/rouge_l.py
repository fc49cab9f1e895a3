"""ROUGE-L F-measure per answer (Google's ``rouge_score``), as a Hugging Face ``evaluate`` metric script.

Shipped inside lost-and-found (``harness.metrics.path("rouge_l")``) so it
loads offline: ``evaluate.load(harness.metrics.path("rouge_l"))``. Needs
``rouge_score`` (installed with lm-eval).
"""

import datasets
import evaluate
from rouge_score import rouge_scorer

_DESCRIPTION = """\
ROUGE-L: the F-measure of the longest common subsequence of tokens between a
generated answer and a reference, computed by Google's rouge_score package
(its default tokenizer: lower case, runs of [a-z0-9]; optional Porter stemming).
With several references an item takes the one with the highest F-measure
(rouge_score's score_multi); the result is the mean over items, the same number
as the hub's `rouge` metric's rougeL with use_aggregator=False, averaged.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated answers (strings).
    references: list of reference answers, one entry per prediction: a string or a list of strings.
    use_stemmer: Porter-stem tokens before matching (default False).
    use_aggregator: True (default) for the mean over items; False for one score per item (a list), as
        the hub's `rouge` metric does.
Returns:
    rouge_l: the mean F-measure over items (with use_aggregator=False, a list of item scores), in [0, 1].
Examples:
    >>> rl = evaluate.load(harness.metrics.path("rouge_l"))
    >>> round(rl.compute(predictions=["the relay is stuck open"], references=[["Boiler relay stuck open."]])["rouge_l"], 4)
    0.6667
"""

_CITATION = """\
@inproceedings{lin-2004-rouge,
    title = "{ROUGE}: A Package for Automatic Evaluation of Summaries",
    author = "Lin, Chin-Yew",
    booktitle = "Text Summarization Branches Out",
    year = "2004",
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class RougeL(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
            reference_urls=["https://github.com/google-research/google-research/tree/master/rouge"],
        )

    def _compute(self, predictions, references, use_stemmer=False, use_aggregator=True):
        if not predictions:
            raise ValueError("no predictions to score")
        scorer = rouge_scorer.RougeScorer(["rougeL"], use_stemmer=bool(use_stemmer))
        scores = []
        for p, refs in zip(predictions, references):
            if isinstance(refs, str):
                refs = [refs]
            if not refs:
                raise ValueError("every prediction needs at least one reference answer")
            scores.append(scorer.score_multi(list(refs), p)["rougeL"].fmeasure)
        if not use_aggregator:
            return {"rouge_l": [float(x) for x in scores]}
        return {"rouge_l": float(sum(scores) / len(scores))}
