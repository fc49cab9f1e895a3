"""``RUN_DIR/state.json``: each stage's input fingerprint, so an unchanged stage is skipped on the next run."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from ..io import atomic_write_json, read_json


@dataclass
class StageLog:
    ran: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


class RunState:
    def __init__(self, run_dir: Path):
        self.path = run_dir / "state.json"
        self.data = read_json(self.path) if self.path.exists() else {"stages": {}}

    def done(self, stage: str, fingerprint: str) -> dict | None:
        """The stage's record if it finished with these inputs, else None."""
        s = self.data["stages"].get(stage)
        return s if s and s.get("fingerprint") == fingerprint and s.get("finished") else None

    def started(self, stage: str) -> dict:
        return self.data["stages"].get(stage) or {}

    def mark(self, stage: str, **record) -> None:
        self.data["stages"][stage] = record
        atomic_write_json(self.path, self.data)

    def finish(self, stage: str, fingerprint: str, **outputs) -> None:
        self.mark(stage, fingerprint=fingerprint, finished=True, time=time.time(), **outputs)
