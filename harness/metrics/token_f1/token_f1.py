"""SQuAD-style token F1, as a Hugging Face ``evaluate`` metric script.

Shipped inside lost-and-found (``harness.metrics.path("token_f1")``) so it
loads offline: ``evaluate.load(harness.metrics.path("token_f1"))``.
Self-contained: it needs only ``evaluate`` and ``datasets``.
"""

import re
import string
from collections import Counter

import datasets
import evaluate

_DESCRIPTION = """\
Token-overlap F1 of a generated answer against one or more reference answers,
as in the official SQuAD (v2.0) evaluation script: both are normalised (lower
case, ASCII punctuation removed, the articles a/an/the removed, whitespace
collapsed) and split on whitespace; F1 is the harmonic mean of the precision
and recall of the shared tokens (counted with multiplicity). When either side
has no tokens, F1 is 1.0 if both are empty, else 0.0. With several references
an item takes the best one; the result is the mean over items.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated answers (strings).
    references: list of reference answers, one entry per prediction: a string or a list of strings
        (the best-matching one counts).
    use_aggregator: True (default) for the mean over items; False for one score per item (a list), as
        the hub's `rouge` metric does.
Returns:
    token_f1: the mean over items (with use_aggregator=False, a list of item scores), in [0, 1].
Examples:
    >>> f1 = evaluate.load(harness.metrics.path("token_f1"))
    >>> f1.compute(predictions=["the boiler relay is stuck"], references=[["Boiler relay stuck open."]])
    {'token_f1': 0.75}
    >>> f1.compute(predictions=["relay stuck open", "no idea"], references=["Boiler relay stuck open.", "Four years."], use_aggregator=False)
    {'token_f1': [0.8571428571428571, 0.0]}
"""

_CITATION = """\
@inproceedings{rajpurkar-etal-2018-know,
    title = "Know What You Don{'}t Know: Unanswerable Questions for {SQ}u{AD}",
    author = "Rajpurkar, Pranav and Jia, Robin and Liang, Percy",
    booktitle = "Proceedings of ACL",
    year = "2018",
}
"""

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(s):
    """SQuAD's normalize_answer: lower case, no punctuation, no articles, single spaces."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def f1(prediction, reference):
    pred, gold = normalize_answer(prediction).split(), normalize_answer(reference).split()
    if not pred or not gold:
        return float(pred == gold)
    same = sum((Counter(pred) & Counter(gold)).values())
    if same == 0:
        return 0.0
    precision, recall = same / len(pred), same / len(gold)
    return 2 * precision * recall / (precision + recall)


def item_score(prediction, references):
    if isinstance(references, str):
        references = [references]
    if not references:
        raise ValueError("every prediction needs at least one reference answer")
    return max(f1(prediction, r) for r in references)


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class TokenF1(evaluate.Metric):
    def _info(self):
        return evaluate.MetricInfo(
            description=_DESCRIPTION,
            citation=_CITATION,
            inputs_description=_KWARGS_DESCRIPTION,
            features=[
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Sequence(datasets.Value("string"))}),
                datasets.Features({"predictions": datasets.Value("string"), "references": datasets.Value("string")}),
            ],
            reference_urls=["https://rajpurkar.github.io/SQuAD-explorer/"],
        )

    def _compute(self, predictions, references, use_aggregator=True):
        if not predictions:
            raise ValueError("no predictions to score")
        scores = [item_score(p, r) for p, r in zip(predictions, references)]
        if not use_aggregator:
            return {"token_f1": [float(x) for x in scores]}
        return {"token_f1": float(sum(scores) / len(scores))}
