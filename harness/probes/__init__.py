"""Hallucination and bias probes: suite types that register themselves with the evaluation engine."""

from . import bias, hallucination  # noqa: F401  (registration on import)

PROBE_CATEGORIES = {
    "truthfulqa_mc": "hallucination",
    "abstention_mc": "hallucination",
    "abstention_gen": "hallucination",
    "factqa": "hallucination",
    "crows_pairs": "bias",
    "bbq": "bias",
    "counterfactual": "bias",
    "counterfactual_gen": "bias",
}
PROBE_FORMATS = {"truthfulqa_mc": "truthfulqa_mc_json", "crows_pairs": "crows_csv"}
