"""What a Ray worker runs for ``laf sweep``: one training point (the evaluation's actors live in
``harness.evaluate.distributed``). Imported only on the Ray path."""

from __future__ import annotations

from pathlib import Path


def train_task(tcfg, config_dir: str, resume: bool) -> str:
    """Train one point as the driver planned it (``TrainJob.tcfg``) and register it; returns its ``name@version``."""
    from ..train import train

    return str(train(tcfg, config_dir=Path(config_dir), resume=resume).entry.ref)
