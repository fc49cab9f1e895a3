"""Exact match after SQuAD's answer normalisation, as a Hugging Face ``evaluate`` metric script.

Shipped inside lost-and-found (``harness.metrics.path("exact_match")``) so it
loads offline: ``evaluate.load(harness.metrics.path("exact_match"))``.
Self-contained: it needs only ``evaluate`` and ``datasets``.
"""

import re
import string

import datasets
import evaluate

_DESCRIPTION = """\
Exact match of a generated answer against one or more reference answers, after
the normalisation of the official SQuAD evaluation script: lower case, ASCII
punctuation removed, the articles a/an/the removed, whitespace collapsed. An
item scores 1.0 when the normalised prediction equals any normalised reference,
else 0.0; the result is the mean over items.
"""

_KWARGS_DESCRIPTION = """
Args:
    predictions: list of generated answers (strings).
    references: list of reference answers, one entry per prediction: a string or a list of strings
        (any of them counts).
    use_aggregator: True (default) for the mean over items; False for one score per item (a list), as
        the hub's `rouge` metric does.
Returns:
    exact_match: the mean over items (with use_aggregator=False, a list of item scores), in [0, 1].
Examples:
    >>> em = evaluate.load(harness.metrics.path("exact_match"))
    >>> em.compute(predictions=["The Eiffel Tower."], references=[["eiffel tower", "Tour Eiffel"]])
    {'exact_match': 1.0}
"""

_CITATION = """\
@inproceedings{rajpurkar-etal-2016-squad,
    title = "{SQ}u{AD}: 100,000+ Questions for Machine Comprehension of Text",
    author = "Rajpurkar, Pranav and Zhang, Jian and Lopyrev, Konstantin and Liang, Percy",
    booktitle = "Proceedings of EMNLP",
    year = "2016",
}
"""

_PUNCT = set(string.punctuation)
_ARTICLES = re.compile(r"\b(a|an|the)\b", re.UNICODE)


def normalize_answer(s):
    """SQuAD's normalize_answer: lower case, no punctuation, no articles, single spaces."""
    s = "".join(ch for ch in s.lower() if ch not in _PUNCT)
    return " ".join(_ARTICLES.sub(" ", s).split())


def item_score(prediction, references):
    if isinstance(references, str):
        references = [references]
    if not references:
        raise ValueError("every prediction needs at least one reference answer")
    p = normalize_answer(prediction)
    return float(any(p == normalize_answer(r) for r in references))


@evaluate.utils.file_utils.add_start_docstrings(_DESCRIPTION, _KWARGS_DESCRIPTION)
class ExactMatch(evaluate.Metric):
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
            return {"exact_match": [float(x) for x in scores]}
        return {"exact_match": float(sum(scores) / len(scores))}
