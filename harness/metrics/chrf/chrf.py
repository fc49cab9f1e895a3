"""Sentence-level chrF (sacrebleu), averaged over answers, as a Hugging Face ``evaluate`` metric script.

Shipped inside lost-and-found (``harness.metrics.path("chrf")``) so it loads
offline: ``evaluate.load(harness.metrics.path("chrf"))``. Needs ``sacrebleu``
(installed with lm-eval).
"""

import datasets
import evaluate
from sacrebleu.metrics import CHRF

_DESCRIPTION = """\
chrF: the character n-gram F-score (beta = 2 by default) of sacrebleu, computed
per answer (sacrebleu's sentence_score: with several references, the best one)
and averaged over answers, on sacrebleu's 0-100 scale. This is the mean of
sentence scores, so every item has its own number to pair; the hub's `chrf`
metric reports the corpus-level score instead, which pools the n-gram counts
and differs from this mean.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated answers (strings).
    references: list of reference answers, one entry per prediction: a string or a list of strings.
    char_order: character n-gram order (default 6).
    word_order: word n-gram order (default 0; 2 gives chrF++).
    beta: recall weight (default 2).
    lowercase: compare case-insensitively (default False).
    use_aggregator: True (default) for the mean over items; False for one score per item (a list), as
        the hub's `rouge` metric does.
Returns:
    chrf: the mean sentence chrF over items (with use_aggregator=False, a list of item scores), in [0, 100].
Examples:
    >>> chrf = evaluate.load(harness.metrics.path("chrf"))
    >>> round(chrf.compute(predictions=["Boiler relay stuck open"], references=[["Boiler relay stuck open."]])["chrf"], 2)
    95.59
"""

_CITATION = """\
@inproceedings{popovic-2015-chrf,
    title = "chr{F}: character n-gram {F}-score for automatic {MT} evaluation",
    author = "Popovi{\\'c}, Maja",
    booktitle = "Proceedings of the Tenth Workshop on Statistical Machine Translation",
    year = "2015",
}
"""


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class Chrf(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
            reference_urls=["https://github.com/mjpost/sacrebleu"],
        )

    def _compute(self, predictions, references, char_order=6, word_order=0, beta=2, lowercase=False, use_aggregator=True):
        if not predictions:
            raise ValueError("no predictions to score")
        chrf = CHRF(char_order=int(char_order), word_order=int(word_order), beta=int(beta), lowercase=bool(lowercase))
        scores = []
        for p, refs in zip(predictions, references):
            if isinstance(refs, str):
                refs = [refs]
            if not refs:
                raise ValueError("every prediction needs at least one reference answer")
            scores.append(chrf.sentence_score(p, list(refs)).score)
        if not use_aggregator:
            return {"chrf": [float(x) for x in scores]}
        return {"chrf": float(sum(scores) / len(scores))}
