"""Every use of Ray by ``laf sweep``, in one place: checking that it is installed, joining or starting a cluster,
the cluster's slots, the training points as Ray tasks and the evaluation's cache prefill on Ray actors (the actors
themselves live in ``harness.evaluate.distributed``). The rest of the sweep never imports ``ray``; without
--workers/--ray-address nothing here that imports it runs."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable, Iterator

from ..errors import LafError


def require_ray() -> None:
    """Ray importable, or one error naming the extra that installs it."""
    try:
        import ray  # noqa: F401
    except ImportError:
        raise LafError("Ray is not installed, and --workers/--ray-address need it",
                       "pip install 'lost-and-found[scale]' (or pip install 'ray==2.60.*'), or run without --workers/--ray-address") from None


@contextlib.contextmanager
def cluster(workers: int | None, address: str | None) -> Iterator[None]:
    """A local Ray cluster with ``workers`` CPU slots, or the running one at ``address``, for the body; a cluster
    started here is shut down after it."""
    from ..evaluate.distributed import connect, shutdown

    started = connect(workers, address)
    try:
        yield
    finally:
        if started:
            shutdown()


def slots() -> tuple[float, int]:
    """(GPUs per task: 1 when the cluster has a GPU, else 0; how many tasks fit at once on those resources)."""
    import ray

    resources = ray.cluster_resources()
    gpus = 1.0 if resources.get("GPU", 0) >= 1 else 0.0
    return gpus, int(resources.get("GPU" if gpus else "CPU", 1))


def prefill(spec, suites, workers: int | None, log: Callable[[str], None], on_actors=None):
    """Fill the response cache of ``spec`` from Ray actors (one model load each); returns the prefill report."""
    from ..evaluate.distributed import prefill_cache

    gpus, n = slots()
    return prefill_cache(spec, suites, workers or n, log=log, num_gpus=gpus, on_actors=on_actors)


def train_task(tcfg, config_dir: str, resume: bool, options: dict):
    """What a Ray worker runs: one training point as the driver planned it (``TrainJob.tcfg``), registered; returns
    its ``TrainResult``. ``options``: :func:`harness.train.train`'s ``replay_filter`` (the run's contamination check,
    a picklable partial), ``snapshot_every`` and ``init_registry``, as the in-process path passes them."""
    from ..train import train

    return train(tcfg, config_dir=Path(config_dir), resume=resume, **options)


def train_on_ray(jobs: list, config_dir: Path, log: Callable[[str], None]) -> Iterator[tuple[object, object]]:
    """Run ``jobs`` (``(key, tcfg, resume, options)``) as Ray tasks at once; yields ``(key, TrainResult)`` as each
    finishes. A task's ``LafError`` is raised here as itself (the user's message, not a Ray traceback)."""
    import ray

    gpus, _ = slots()
    remote = ray.remote(num_cpus=0 if gpus else 1, num_gpus=gpus, max_retries=1)(train_task)
    log(f"train: {len(jobs)} point(s) as Ray tasks ({'one GPU' if gpus else 'one CPU slot'} each)")
    pending = {remote.remote(tcfg, str(config_dir), resume, options): key for key, tcfg, resume, options in jobs}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        key = pending.pop(ready[0])
        try:
            result = ray.get(ready[0])
        except ray.exceptions.RayTaskError as e:
            for other in pending:  # the sweep stops here: no task keeps training (and holding its run folder) behind it
                ray.cancel(other, force=True)
            if isinstance(getattr(e, "cause", None), LafError):
                raise e.cause from None
            raise
        yield key, result
        if pending:  # a new stage line: the progress heartbeat stops repeating what the caller last did with this point
            log(f"train: {len(jobs) - len(pending)} of {len(jobs)} point(s) done, {len(pending)} to come")
