"""Per-item records: what each model did on each item of each suite.

Every later stage (paired statistics, the gate, the report's drill-down)
reads these, matched across models by (suite, doc_hash).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class ItemRecord:
    model: str
    suite: str
    category: str
    doc_id: int
    doc_hash: str
    prompt_hash: str
    prompt: str | list[str]
    choices: list[str] | None
    target: Any
    loglikelihoods: list[float] | None
    is_greedy: list[bool] | None
    generation: str | None
    prediction: Any
    metrics: dict[str, Any]
    doc: dict = field(default_factory=dict)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ItemRecord":
        fields: dict[str, Any] = {k: d.get(k) for k in cls.__dataclass_fields__}
        return cls(**fields)
