"""Paired statistics: McNemar, paired bootstrap, minimum detectable effect, Holm."""

from .aggregations import AGGREGATIONS, Aggregation
from .aggregations import get as get_aggregation
from .paired import PairedDelta, holm, mcnemar_exact, minimum_detectable_effect, paired_delta

__all__ = ["AGGREGATIONS", "Aggregation", "PairedDelta", "get_aggregation", "holm", "mcnemar_exact", "minimum_detectable_effect", "paired_delta"]
