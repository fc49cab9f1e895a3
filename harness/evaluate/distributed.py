"""The evaluation spread over Ray workers, with the single-process engine's records bit for bit.

    plan (the engine's plan_runs: identities, base first) -> work units (model x suite), sorted by a content key
    -> units whose every request is already in the response cache are done (checked with no model loaded)
    -> the rest go to Ray actors, each holding the base once and hot-swapping adapters (the engine's ModelPool)
    -> each unit's responses come back to the driver and go into the response cache (a union: keys are content)
    -> the ordinary engine then runs on the driver and reads every response from the cache

Why the records are identical whatever the number of workers: a work unit is one model on one suite, scored
exactly as the single-process engine scores it (the same lm-eval requests in one call, so the same batches:
the batch composition is the scorer's, never Ray's), into an empty collector (as a fresh run computes every
request). Splitting a suite's items across workers would change which requests share a batch, and with it
the last bits of fp32 scores (and up to 0.25 nats in bf16), so a unit never splits a suite. The driver stores
the rows as they come, so a killed worker loses only its unit in flight (Ray restarts the actor and retries
the unit on it; past Ray's retries the driver sends the unit again), and a resume with another worker count finds every finished unit in the cache.

Nothing here imports Ray at module level: ``laf sweep`` without ``--workers``/``--ray-address`` never loads it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..errors import LafError
from ..io import sha256_json
from .spec import EvalSpec, default_cache_path


@dataclass(frozen=True)
class WorkUnit:
    """One model on one suite: the label and index the engine gives the model, its identity, its adapter folder."""

    key: str  # content key: sha256 of (identity, suite name, suite data, limit)
    model: str
    index: int
    identity: str
    adapter_path: str | None
    suite: str


class _Miss(Exception):
    pass


class CollectCache:
    """A response cache that knows nothing (every request is computed, as in a fresh run) and keeps what it is
    given: the rows a worker returns to the driver."""

    path = None
    bad_rows = 0

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, object]] = []

    def get_many(self, keys):
        return {}

    def put_many(self, items):
        self.rows.extend(items)

    def __len__(self):
        return len(self.rows)

    def close(self):
        pass


def _limit(spec: EvalSpec, suite) -> int | None:
    return spec.limit or suite.spec.options.limit


def _unit_lm(cache, backend, spec: EvalSpec):
    from .lm import CachedLM

    return CachedLM(cache, backend, spec.batch_size)


def plan_units(spec: EvalSpec, suites) -> tuple[list[WorkUnit], dict]:
    """The work units of ``spec`` in their fixed, content-keyed order, and the engine's plan (tasks by suite)."""
    from .engine import plan_runs

    resolved, adapters, load, tasks, metas, runs = plan_runs(spec, suites)
    by_name = {s.name: s for s in suites}
    units = []
    for i, run in enumerate(runs):
        for s in suites:
            key = sha256_json({"identity": run.identity, "suite": s.name, "data": s.data_sha256 if not s.spec.lm_eval else s.spec.lm_eval,
                               "limit": _limit(spec, s), "seed": s.spec.options.seed})
            units.append(WorkUnit(key, run.label, i, run.identity, None if run.adapter is None else str(run.adapter.path), s.name))
    units.sort(key=lambda u: u.key)
    return units, {"tasks": tasks, "suites": by_name, "resolved": resolved, "load": load}


def unit_cached(cache, unit: WorkUnit, plan: dict, spec: EvalSpec) -> bool:
    """Whether every request of ``unit`` is in ``cache``: lm-eval builds the requests, no model is loaded."""

    def miss():
        raise _Miss()

    lm = _unit_lm(cache, miss, spec)
    lm.identity = unit.identity
    s = plan["suites"][unit.suite]
    from .tasks import evaluate_suite

    try:
        evaluate_suite(lm, s, plan["tasks"][unit.suite], _limit(spec, s), s.spec.options.seed)
    except _Miss:
        return False
    return True


class EvalWorker:
    """A Ray actor's body: the base loaded once (on the first unit that needs it), adapters hot-swapped."""

    def __init__(self, spec: EvalSpec, suite_limits: dict[str, int | None]):
        import os

        from ..env import reduce_malloc_fragmentation
        from ..models import resolve_model
        from ..suites import load_suite
        from .engine import plan_runs
        from .pool import ModelPool

        reduce_malloc_fragmentation()
        self.spec = spec
        suites = [load_suite(ref, spec.data_dir) for ref in spec.suites]
        for s in suites:
            if suite_limits.get(s.name):
                s.spec.options.limit = suite_limits[s.name]
        resolved, adapters, load, tasks, metas, runs = plan_runs(spec, suites)
        self.suites = {s.name: s for s in suites}
        self.tasks = tasks
        self.runs = {r.label: r for r in runs}
        self.pool = ModelPool(resolve_model(spec.model, allow_pickle=spec.allow_pickle, trust_remote_code=spec.trust_remote_code), load, spec, lambda m: None)
        self.pid = os.getpid()

    def getpid(self) -> int:
        return self.pid

    def score(self, unit: WorkUnit) -> dict:
        """Score one unit from scratch; returns its cache rows and seconds."""
        from .engine import probe_key
        from .tasks import evaluate_suite

        t0 = time.perf_counter()
        run = self.runs[unit.model]
        if run.identity != unit.identity:
            raise LafError(f"worker plan differs from the driver's for {unit.model}", "run the driver and the workers on the same code and files")
        self.pool.select(run, unit.index)
        cache = CollectCache()
        lm = _unit_lm(cache, self.pool.backend, self.spec)
        lm.identity = unit.identity
        s = self.suites[unit.suite]
        evaluate_suite(lm, s, self.tasks[unit.suite], _limit(self.spec, s), s.spec.options.seed)
        if run.label in self.pool.applied:  # the "adapter is applied" figure travels with the rows it vouches for
            cache.put_many([(probe_key(run.identity), "adapter_probe", self.pool.applied[run.label])])
        return {"key": unit.key, "rows": cache.rows, "seconds": time.perf_counter() - t0, "computed": lm.stats.computed}


@dataclass
class PrefillReport:
    units: int
    cached: int  # units found complete in the cache (nothing computed)
    computed: int  # units scored by workers
    resubmitted: int  # units sent again after their worker died
    seconds_by_model: dict[str, float]
    workers: int


def prefill_cache(spec: EvalSpec, suites, workers: int, log: Callable[[str], None] = lambda m: None,
                  num_gpus: float = 0.0, on_actors: Callable[[list], None] | None = None) -> PrefillReport:
    """Fill the response cache of ``spec`` for every (model, suite) unit not already in it, on up to ``workers``
    Ray actors (Ray must be initialised). ``on_actors`` receives the actor handles once they exist (tests kill one)."""
    import ray

    from .cache import ResponseCache

    units, plan = plan_units(spec, suites)
    cache = ResponseCache(spec.cache or default_cache_path())
    seconds: dict[str, float] = {}
    try:
        todo = [u for u in units if not unit_cached(cache, u, plan, spec)]
        log(f"{len(units)} work units (model x suite), {len(units) - len(todo)} already in the cache, {len(todo)} to score on {min(workers, len(todo))} worker(s)")
        resubmitted = 0
        if todo:
            limits = {s.name: s.spec.options.limit for s in suites}
            actor_cls = ray.remote(num_cpus=0 if num_gpus else 1, num_gpus=num_gpus, max_restarts=3, max_task_retries=3)(EvalWorker)
            actors = [actor_cls.remote(spec, limits) for _ in range(max(1, min(workers, len(todo))))]
            if on_actors is not None:
                on_actors(actors)
            queue = list(todo)
            attempts: dict[str, int] = {}
            inflight: dict = {}

            def submit(actor):
                u = queue.pop(0)
                inflight[actor.score.remote(u)] = (u, actor)

            for a in actors:
                if queue:
                    submit(a)
            while inflight:
                ready, _ = ray.wait(list(inflight), num_returns=1)
                ref = ready[0]
                unit, actor = inflight.pop(ref)
                try:
                    out = ray.get(ref)
                except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError) as e:
                    attempts[unit.key] = attempts.get(unit.key, 0) + 1
                    if attempts[unit.key] > 3:
                        raise LafError(f"work unit {unit.model} x {unit.suite} failed on {attempts[unit.key]} workers (last: {type(e).__name__})",
                                       "look at the Ray worker logs (/tmp/ray/session_latest/logs); a unit that kills its worker every time needs fixing, not retrying") from None
                    log(f"worker died during {unit.model} x {unit.suite}: sent again")
                    resubmitted += 1
                    time.sleep(min(2.0 * attempts[unit.key], 10.0))  # the actor is restarting (max_restarts): give it time
                    queue.insert(0, unit)
                    submit(actor)
                    continue
                except ray.exceptions.RayTaskError as e:
                    cause = e.cause if isinstance(getattr(e, "cause", None), LafError) else None
                    if cause is not None:
                        raise cause from None
                    raise
                cache.put_many(out["rows"])  # the union: keys are content, so a row from any worker is the same row
                seconds[unit.model] = seconds.get(unit.model, 0.0) + out["seconds"]
                if queue:
                    submit(actor)
            for a in actors:
                ray.kill(a)
        return PrefillReport(len(units), len(units) - len(todo), len(todo), resubmitted, seconds, workers)
    finally:
        cache.close()


def connect(workers: int | None, address: str | None, connect_timeout: float = 5.0) -> bool:
    """Start a local Ray cluster of ``workers`` CPU slots (or join ``address``); returns whether this call started
    the connection (an already initialised Ray is used as it is, and left running).

    Ray not installed: an error naming the extra. An address that does not answer: an error within
    ``connect_timeout`` seconds (a TCP connect to it first; Ray itself would retry for minutes)."""
    try:
        import ray
    except ImportError:
        raise LafError("Ray is not installed, and --workers/--ray-address need it",
                       "pip install 'lost-and-found[scale]' (or pip install 'ray==2.60.*'), or run without --workers/--ray-address") from None
    if ray.is_initialized():  # the caller's own cluster (a notebook, a test): use it, and leave it running
        return False
    if address:
        _check_reachable(address, connect_timeout)
        try:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, configure_logging=False)
        except Exception as e:  # ray raises ConnectionError, RuntimeError, ... depending on the failure
            raise LafError(f"cannot join the Ray cluster at {address}: {str(e).splitlines()[0][:300] if str(e) else type(e).__name__}",
                           "check the address (`ray status` on the head node prints it) and that this machine runs the same Ray and Python versions") from None
    else:
        import os

        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        for attempt in (1, 2):  # Ray gives its raylet a fixed 30 s to register; a loaded machine can miss that once
            try:
                ray.init(num_cpus=int(workers or 1), include_dashboard=False, log_to_driver=False, configure_logging=False)
                return True
            except Exception as e:  # ray raises a bare Exception when its processes do not come up in time
                ray.shutdown()
                if attempt == 1:
                    continue
                raise LafError(f"could not start a local Ray cluster: {str(e).splitlines()[0][:300] if str(e) else type(e).__name__}",
                               "retry when the machine is less loaded (Ray's start-up has a timeout), look at /tmp/ray/session_latest/logs, "
                               "or run without --workers") from None
    return True


def _check_reachable(address: str, timeout: float) -> None:
    import socket

    target = address.split("://", 1)[-1]
    if target == "auto":
        return
    host, _, port = target.rpartition(":")
    if not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise LafError(f"--ray-address {address!r} is not HOST:PORT", "give the head node's address, e.g. --ray-address 10.0.0.5:6379 (or ray://10.0.0.5:10001)")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as e:
        raise LafError(f"no Ray cluster answers at {address} (within {timeout:g} s: {e.strerror or e})",
                       "start one (`ray start --head` on the head node) or fix the address; or use --workers N for a local cluster") from None


def shutdown() -> None:
    import sys

    if "ray" in sys.modules:
        import ray

        if ray.is_initialized():
            ray.shutdown()


def cache_path(spec: EvalSpec) -> Path:
    return Path(spec.cache or default_cache_path())
