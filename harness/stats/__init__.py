"""Paired statistics: McNemar, paired bootstrap, minimum detectable effect, Holm.

The paired tests (``paired.py``) need scipy (about a second to import): they load on first use, so reading a
metric's aggregation (every results document does) costs only numpy.
"""

from typing import TYPE_CHECKING

from .aggregations import AGGREGATIONS, Aggregation
from .aggregations import get as get_aggregation

if TYPE_CHECKING:
    from .paired import PairedDelta, holm, mcnemar_exact, minimum_detectable_effect, paired_delta

_PAIRED = ("PairedDelta", "holm", "mcnemar_exact", "minimum_detectable_effect", "paired_delta")

__all__ = ["AGGREGATIONS", "Aggregation", "PairedDelta", "get_aggregation", "holm", "mcnemar_exact", "minimum_detectable_effect", "paired_delta"]


def __getattr__(name: str):
    if name in _PAIRED:
        from . import paired

        return getattr(paired, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
