"""One side of a comparison: a model's per-item records in a finished evaluation run.

A reference is ``RUN_DIR`` or ``RUN_DIR#MODEL`` (MODEL is ``base`` or an adapter
ref such as ``support@3``). Items are matched across sides by (suite,
doc_hash); item sets that differ are an error, never silently aligned.
"""

from __future__ import annotations

import hashlib
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..errors import LafError
from ..io import canonical_json, sha256_file, sha256_json
from ..registry.merge_info import merge_summary
from ..results import BASE, INTEGRITY, ItemRecord, ResultsDoc, SuiteMeta, load_run, parse_run_ref
from ..stats import get_aggregation
from ..stats.single import estimate

COMPARABLE_KEYS = ("base_fingerprint", "precision", "compute_dtype", "batch_size", "max_length", "scoring_version")


@dataclass
class RunSide:
    ref: str
    folder: Path
    model: str
    results: ResultsDoc
    records: dict[str, list[ItemRecord]]  # suite -> records sorted by doc_id

    @property
    def suites(self) -> dict[str, SuiteMeta]:
        return self.results.suites

    def comparable(self) -> dict:
        return self.results.provenance.comparable()

    def identity(self) -> dict:
        """What the release history keeps of this side: the run folder, the model, its adapter digest, the digest of
        its per-item records, and per suite the suite fingerprint, the item-set digest, n and the primary metric's
        estimate with its 95% interval (``suites``)."""
        model = self.results.models[self.model]
        suites = {}
        for s, meta in self.suites.items():
            recs = self.records.get(s, [])
            entry = {"fingerprint": meta.fingerprint(), "category": meta.category, "item_digest": item_digest(recs), "n": len(recs),
                     "metric": meta.primary_metric, "higher_is_better": meta.primary.higher_is_better, "ideal": meta.primary.ideal}
            try:
                est = estimate(_metric_values(recs, meta.primary_metric), get_aggregation(meta.primary.aggregation))
                entry.update(value=est.value, ci_low=est.ci_low, ci_high=est.ci_high)
            except (ValueError, TypeError, IndexError, KeyError):
                entry.update(value=None, ci_low=None, ci_high=None)  # no finite score: the history keeps no number
            suites[s] = entry
        return {"run": str(self.folder.resolve()), "model": self.model, "adapter_digest": None if model.adapter is None else model.adapter.weights_sha256,
                "records_digest": records_digest(self.records), "suites": suites}

    def describe(self) -> dict:
        """Who this side is, for verdict.json: the model, its adapter (without the manifest) and how it was scored."""
        p = self.results.provenance
        model = self.results.models[self.model]
        env = p.environment
        adapter = None
        if model.adapter is not None:
            adapter = model.adapter.to_dict(with_manifest=False)
            adapter["merge"] = merge_summary(model.adapter.manifest, model.adapter.ref)
        return {
            "ref": self.ref,
            "run": str(self.folder),
            "integrity": self.results.integrity,
            "run_seal": run_seal(self.folder),
            "model": self.model,
            "kind": model.kind,
            "adapter": adapter,
            "base_model": p.base_model.to_dict(),
            "load": p.load,
            "batch_size": p.batch_size,
            "max_length": p.max_length,
            "packages": env.get("packages"),
            "machine": env.get("machine"),
            "time": env.get("time"),
            "command": env.get("command"),
            "identity": self.identity(),
        }


def item_digest(records: list[ItemRecord]) -> str:
    """sha256 of a suite's item set: the sorted (content hash, doc id) pairs."""
    return sha256_json(sorted([r.doc_hash, r.doc_id] for r in records))


def records_digest(by_suite: dict[str, list[ItemRecord]]) -> str:
    """sha256 of one model's per-item records (canonical JSON, by suite and doc id): equal digests, equal records."""
    h = hashlib.sha256()
    for s in sorted(by_suite):
        for r in sorted(by_suite[s], key=lambda r: r.doc_id):
            h.update(canonical_json(r.to_dict()).encode("utf-8", "surrogatepass") + b"\n")  # a lone surrogate from a hostile file hashes, never raises
    return h.hexdigest()


def _metric_values(records: list[ItemRecord], metric: str) -> list:
    out = []
    for r in records:
        v = r.metrics[metric]
        if v is None:
            raise ValueError("missing value")
        out.append(v)
    return out


def run_seal(folder: Path) -> str | None:
    """sha256 of the run's ``integrity.json``: which evaluation a verdict decided on (a later one into the same
    folder makes an old verdict stale, and every reader can tell)."""
    path = Path(folder) / INTEGRITY
    return sha256_file(path) if path.is_file() and not path.is_symlink() else None


def resolve_model_name(model: str, models: list[str]) -> str:
    """``NAME`` or ``NAME@latest`` -> the highest ``NAME@VERSION`` the run evaluated (``model`` unchanged otherwise)."""
    name = model[: -len("@latest")] if model.endswith("@latest") else model
    if "@" in name:
        return model
    versions = [(int(m.rsplit("@", 1)[1]), m) for m in models if m.rsplit("@", 1)[0] == name and m.rsplit("@", 1)[-1].isascii() and m.rsplit("@", 1)[-1].isdigit() and "@" in m]
    return max(versions)[1] if versions else model


def load_side(ref: str, role: str, default_base: bool, allow_modified: bool = False) -> RunSide:
    """The records of one model of a run (``RUN`` or ``RUN#MODEL``); ``role`` names it in errors. The run folder
    must pass its integrity check unless ``allow_modified`` (then the side's ``integrity`` says what failed)."""
    run_ref = parse_run_ref(ref)
    folder, model = run_ref.path, run_ref.model
    if folder.is_dir() and not any(folder.iterdir()):
        raise LafError(f"the {role} run folder {folder} is empty", "pass the --out folder of a finished `laf eval`")
    results, records = load_run(folder, allow_modified=allow_modified)
    models = list(results.models)
    if model is None:
        if default_base and BASE in models:
            model = BASE
        else:
            adapters = results.adapters
            if len(adapters) == 1:
                model = adapters[0]
            elif len(models) == 1:
                model = models[0]
            else:
                raise LafError(
                    f"{folder} holds several models ({', '.join(models)}); which one is the {role}?",
                    f"write {folder}#MODEL, e.g. {folder}#{(adapters or models)[-1]}",
                )
    if model not in models:
        model = resolve_model_name(model, models)
    if model not in models:
        raise LafError(f"{folder} has no model '{model}' (it has {', '.join(models)})", f"use one of them: {folder}#{models[0]}")
    return side_of(ref, folder, model, results, records)


def side_of(ref: str, folder: Path, model: str, results: ResultsDoc, records: list[ItemRecord]) -> RunSide:
    """``model`` of a run already read, as a comparison side: its records by suite, in item order."""
    by_suite: dict[str, list[ItemRecord]] = defaultdict(list)
    for r in records:
        if r.model == model:
            by_suite[r.suite].append(r)
    for recs in by_suite.values():
        recs.sort(key=lambda r: r.doc_id)
    return RunSide(ref, folder, model, results, dict(by_suite))


def check_comparable(a: RunSide, b: RunSide) -> None:
    ca, cb = a.comparable(), b.comparable()
    diff = [k for k in COMPARABLE_KEYS if ca.get(k) != cb.get(k)]
    if diff:
        detail = "; ".join(f"{k}: {ca.get(k)} vs {cb.get(k)}" for k in diff)
        raise LafError(
            f"the two runs were not scored the same way ({detail}), so their items cannot be paired",
            "evaluate baseline and candidate with the same base model, precision, batch size and max length (one `laf eval` with --adapter does that)",
        )


def paired_items(a: RunSide, b: RunSide, suite: str) -> tuple[list[ItemRecord], list[ItemRecord]]:
    ra, rb = a.records.get(suite), b.records.get(suite)
    if not ra or not rb:
        missing = a.ref if not ra else b.ref
        raise LafError(f"suite {suite} has no items in {missing}", "evaluate both sides on the same suites")
    ka = sorted((r.doc_hash, r.doc_id) for r in ra)
    kb = sorted((r.doc_hash, r.doc_id) for r in rb)
    ha, hb = [h for h, _ in ka], [h for h, _ in kb]
    if ha != hb:
        only_a = len(set(ha) - set(hb))
        only_b = len(set(hb) - set(ha))
        raise LafError(
            f"suite {suite}: the two sides were scored on different items ({len(ha)} vs {len(hb)} items; "
            f"{only_a} only in the baseline, {only_b} only in the candidate)",
            "evaluate both with the same suite data and --limit; items are paired by content hash, never by position",
        )
    index_a = {(r.doc_hash, r.doc_id): r for r in ra}
    index_b = {(r.doc_hash, r.doc_id): r for r in rb}
    # pair identical documents in doc-id order within each hash
    return [index_a[k] for k in ka], [index_b[k] for k in kb]
