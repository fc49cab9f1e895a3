"""Everything the report shows, gathered from a run folder into one plain dict.

Sources: ``results.json`` and the per-item records (``laf eval``),
``verdict.json`` (``laf gate``), ``compare.json`` (``laf compare``),
``curation.json`` (``laf data``), and the adapters' manifests and training
metrics from the registry. The same dict is the ``--format json`` output.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

from ..env import now_iso
from ..errors import LafError
from ..io import BadLine, scan_jsonl
from ..registry.merge_info import merge_summary
from ..results import BASE, ItemRecord, MetricMeta, ResultsDoc, SuiteMeta, load_run
from ..results.artifacts import CompareDoc, DiversityDoc, SweepDoc, parse, read_curation, read_raw
from ..results.artifacts import read as read_artifact

MAX_TEXT = 800  # characters of a prompt / choice / generation kept per item
MAX_CURVE_BYTES = 64 << 20  # a training's metrics.jsonl larger than this is left out of the report
MAX_CURVE_LINE = 64 << 10  # bytes of one metrics.jsonl line
MAX_CURVE_POINTS = 100_000  # training-curve points kept
MAX_MANIFEST_DEPTH = 16  # nesting of a manifest's mappings shown in the report
ITEM_BUDGET = 3_200_000  # bytes of per-item JSON in the report (keeps 10k-item runs under 5 MB)


def _clip(s, n=MAX_TEXT):
    if s is None:
        return None
    if isinstance(s, list):
        return [_clip(x, n) for x in s]
    s = str(s)
    return s if len(s) <= n else s[:n] + f"… [{len(s) - n} more characters]"


def _score(rec, metric, aggregation: str = "mean"):
    """One item's value of the metric, as a number where that means something."""
    v = rec.metrics.get(metric)
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return v
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, (int, float)) for x in v if x is not None):
        return None
    if aggregation == "conditional_mean" and len(v) == 2:
        return (v[1] / v[0]) if v[0] else None  # defined only where the weight is non-zero
    if aggregation in ("bits_per_byte", "weighted_perplexity") and len(v) == 2 and v[1]:
        return float(v[0]) / float(v[1])  # (log-likelihood, bytes or words): per-unit log-likelihood
    return None


def _pick_models(results: ResultsDoc, verdict: dict | None, candidate: str | None) -> tuple[str, str | None]:
    models = list(results.models)
    if candidate:
        if candidate not in models:
            raise LafError(f"this run has no model '{candidate}' (it has {', '.join(models)})", "pass one of them to --candidate")
        base = BASE if BASE in models and candidate != BASE else models[0]
        return base, candidate
    if verdict:
        b, c = verdict["baseline"]["model"], verdict["candidate"]["model"]
        if b in models and c in models:
            return b, c
    adapters = results.adapters
    base = BASE if BASE in models else models[0]
    return base, (adapters[0] if adapters else None)


def _items(records: list[ItemRecord], base: str, cand: str | None, suites: dict[str, SuiteMeta]) -> tuple[list, dict]:
    by_key: dict = {}
    for r in records:
        if r.model in (base, cand):
            by_key.setdefault((r.suite, r.doc_hash, r.doc_id), {})[r.model] = r
    suite_names = list(suites)
    rows, stats = [], {"items": 0, "lost": 0, "found": 0, "included": 0, "truncated": False}
    flips, rest = [], []
    for (suite, _h, doc_id), pair in sorted(by_key.items(), key=lambda kv: (suite_names.index(kv[0][0]) if kv[0][0] in suite_names else 99, kv[0][2])):
        b = pair.get(base)
        c = pair.get(cand) if cand else None
        if b is None:
            continue
        sm = suites.get(suite)
        metric = sm.primary_metric if sm else None
        meta = sm.metrics.get(metric, MetricMeta()) if sm else MetricMeta()
        sb, sc = _score(b, metric, meta.aggregation), (_score(c, metric, meta.aggregation) if c else None)
        flip = 0
        if c is not None and sb is not None and sc is not None and sb != sc:
            better = meta.better(sc, sb)
            binary = sb in (0, 1) and sc in (0, 1)
            flip = (2 if better else 1) if binary else (4 if better else 3)
        stats["items"] += 1
        stats["lost"] += flip == 1
        stats["found"] += flip == 2
        row = [
            suite_names.index(suite) if suite in suite_names else -1,
            doc_id,
            flip,
            _clip(b.prompt),
            _clip(b.choices, 300),
            _clip(b.target, 300),
            b.loglikelihoods,
            c.loglikelihoods if c else None,
            _clip(b.prediction, 300),
            _clip(c.prediction, 300) if c else None,
            sb,
            sc,
            _clip(b.generation),
            _clip(c.generation) if c else None,
        ]
        (flips if flip else rest).append(row)
    size = 0
    for row in flips + rest:  # every flip first, then unchanged items while the budget lasts
        size += len(json.dumps(row, ensure_ascii=False))
        if size > ITEM_BUDGET:
            stats["truncated"] = True
            break
        rows.append(row)
    stats["included"] = len(rows)
    return rows, stats


TRAINING_NUMBERS = ("trainable_parameters", "total_parameters", "trainable_percent", "steps", "tokens_seen", "supervised_tokens_seen",
                    "wall_time_s", "train_time_s", "peak_memory_mb", "final_train_loss", "final_eval_loss", "seed")
TRAINING_MAPPINGS = ("data", "config", "load", "packages", "hardware")
TRAINING_OTHER = ("created", "kind", "base_model", "files", "command")
CURVE_KEYS = ("step", "loss", "eval_loss", "lr", "tokens_per_s")


def _plain(v, depth: int = 0):
    """A value of an untrusted manifest as plain JSON the report can show: finite numbers (others become None),
    text clipped, at most 1,000 entries per mapping or list and :data:`MAX_MANIFEST_DEPTH` levels."""
    if v is None or isinstance(v, (bool, str)):
        return _clip(v, 2000) if isinstance(v, str) else v
    if isinstance(v, (int, float)):
        return _num(v)
    if depth >= MAX_MANIFEST_DEPTH:
        return None
    if isinstance(v, dict):
        return {str(k)[:200]: _plain(x, depth + 1) for k, x in list(v.items())[:1000]}
    if isinstance(v, (list, tuple)):
        return [_plain(x, depth + 1) for x in list(v)[:1000]]
    return _clip(v, 200)


def _curve(adapter_path: str | None) -> list[dict]:
    """The training curve in ``ADAPTER/metrics.jsonl``: a nicety, never a failure. The file is read only when it is a
    plain file of a bounded size, lines are bounded, and a point without a finite step (or a line that is not an
    object) is left out; other non-finite or non-numeric values become None."""
    if not adapter_path:
        return []
    path = Path(adapter_path) / "metrics.jsonl"
    curve: list[dict] = []
    try:
        if not path.is_file() or path.stat().st_size > MAX_CURVE_BYTES:
            return []
        for item in scan_jsonl(path, max_line=MAX_CURVE_LINE):
            if len(curve) >= MAX_CURVE_POINTS:
                break
            if isinstance(item, BadLine) or not isinstance(item[1], dict):
                continue
            point = {k: _num(item[1].get(k)) for k in CURVE_KEYS}
            if point["step"] is not None:
                curve.append(point)
    except (OSError, ValueError):
        return []
    return curve


def _training(results: ResultsDoc, model: str | None) -> dict | None:
    """The candidate's training as the report shows it, from its manifest in results.json (untrusted: numbers kept
    only where finite, the mappings only where they are mappings) and its training curve."""
    info = results.models[model].adapter if model in results.models else None
    if info is None or not info.manifest or not isinstance(info.manifest, dict):
        return None
    manifest = info.manifest
    return {"ref": info.ref, "curve": _curve(info.path),
            **{k: _num(manifest.get(k)) for k in TRAINING_NUMBERS},
            **{k: (_plain(manifest.get(k)) if isinstance(manifest.get(k), dict) else None) for k in TRAINING_MAPPINGS},
            **{k: _plain(manifest.get(k)) for k in TRAINING_OTHER}}


def _parity(run_dir: Path) -> dict | None:
    """``parity.json`` of ``laf parity`` (in the run folder or its ``parity/``), checked; None when there is none."""
    from ..gate.parity import find_parity, load_parity

    for p in (run_dir / "parity.json", run_dir / "parity" / "parity.json"):
        if p.is_symlink():  # like the run's own files: never read from elsewhere through a link
            raise LafError(f"{p} is a symlink, not a plain file of this run folder", "copy the file into the run folder, or re-run `laf parity`")
    path = find_parity(run_dir)
    return load_parity(path).to_dict() if path is not None else None


def _diversity(run_dir: Path) -> dict | None:
    """``diversity.json`` (``laf diversity`` or the run's diversity stage) when the run folder holds one, checked to be
    one this laf can show; None when there is none."""
    from ..diversity import FILE, SCHEMA, render_diversity_section
    from ..diversity.analyse import check_finite

    path = run_dir / FILE
    if not path.exists() and not path.is_symlink():
        return None
    fix = "re-run `laf diversity` on this run (or the run's diversity stage), or remove the file"
    doc = read_raw(path, fix, symlinks=False)
    if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
        raise LafError(f"{path} is not a {SCHEMA} document", fix)
    check_finite(doc, str(path))
    parse(doc, DiversityDoc, str(path))  # the typed shape (laf schema diversity)
    try:
        render_diversity_section(doc)  # the shapes the report reads, checked here: a bad file is one clear error
    except (KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise LafError(f"{path} does not have the shape of a diversity.json ({type(e).__name__}: {e})", fix) from None
    return doc


def check_verdict_is_of(verdict: dict, run_dir: Path, where: Path) -> None:
    """A verdict found in ``run_dir`` decided on this evaluation: its candidate's run seal is this folder's."""
    from ..gate.runs import run_seal

    cand = verdict.get("candidate") or {}
    try:
        same = Path(str(cand.get("run"))).resolve() == run_dir.resolve()
    except (OSError, RuntimeError, ValueError):
        same = False
    if same and "run_seal" in cand and cand["run_seal"] != run_seal(run_dir):
        raise LafError(f"{where} was decided on an earlier evaluation in {run_dir} (its run seal does not match integrity.json)",
                       "run `laf gate` again on this evaluation, or remove the stale verdict.json")


def gather(run_dir: str | Path, candidate: str | None = None, curation: str | Path | None = None, allow_modified: bool = False) -> dict:
    """Everything the report shows about ``run_dir`` as one plain dict (also the ``--format json`` output):
    results, the verdict and comparison if present, the candidate's training, the curation, and the items."""
    run_dir = Path(run_dir)
    if run_dir.exists() and not run_dir.is_dir():
        raise LafError(f"{run_dir} is a file, not a run folder", "pass the folder a finished `laf eval --out` wrote (it holds results.json and records.jsonl)")
    results, records = load_run(run_dir, allow_modified=allow_modified)
    verdict = None
    if (run_dir / "verdict.json").exists() or (run_dir / "verdict.json").is_symlink():
        from ..gate.verdict import read_verdict

        # sealed and checked against this run: an edited fail -> pass, or a verdict naming a metric or model the run
        # does not have, is one clear error, never "PASS, ship it" beside the rules that failed
        verdict = read_verdict(run_dir / "verdict.json", {s: list(m.metrics) for s, m in results.suites.items()}, list(results.models))
        check_verdict_is_of(verdict, run_dir, run_dir / "verdict.json")
    compare = read_artifact(run_dir / "compare.json", CompareDoc).to_dict() if (run_dir / "compare.json").exists() else None
    cur = _curation(run_dir, curation)
    base, cand = _pick_models(results, verdict, candidate)
    if verdict and verdict["candidate"]["model"] != cand:
        verdict = None  # a verdict about another model does not describe this one
    summaries = verdict["summaries"] if verdict else None
    if summaries is None and cand:
        from ..gate.deltas import summaries as compute_summaries
        from ..gate.policy import Policy
        # both sides from the run already read, each model passed as itself (a model name may hold '#', which a
        # RUN#MODEL reference would split at)
        a, b = _side(run_dir, results, records, base), _side(run_dir, results, records, cand)
        summaries = compute_summaries(a, b, Policy(rules=[{"category": "general", "max_drop": 0.0}]))
    items, item_stats = _items(records, base, cand, results.suites)
    return {
        "schema": "laf.report/1",
        "generated": now_iso(),
        "run_dir": str(run_dir),
        "integrity": results.integrity,
        "baseline": base,
        "candidate": cand,
        "models": {m: info.to_dict(with_manifest=False) for m, info in results.models.items()},
        "merges": {m: merge_summary(info.adapter.manifest, info.adapter.ref) for m, info in results.models.items() if info.adapter is not None},
        "suites": {s: meta.to_dict() for s, meta in results.suites.items()},
        "results": results.results,
        "provenance": results.provenance.to_dict(),
        "spec": results.spec,
        "verdict": verdict,
        "summaries": summaries,
        "compare": compare,
        "sweep": _optional(run_dir / "sweep.json", SweepDoc),  # laf sweep
        "selection": _plain(_safe_json(run_dir / "selection.json")),  # laf run with select: (a non-finite number in it is None)
        "training": _training(results, cand),
        "curation": cur,
        "parity": _parity(run_dir),
        "diversity": _diversity(run_dir),
        "trend": _trend(run_dir, cand),
        "items": items,
        "item_stats": item_stats,
    }


def _curation(run_dir: Path, curation: str | Path | None) -> dict | None:
    """The curation manifest: ``curation`` when named (a link to a manifest elsewhere is fine), else the run folder's
    own ``curation.json`` (a plain file of the folder, never a link); read and checked like every artifact."""
    if curation:
        return read_curation(curation)
    path = run_dir / "curation.json"
    if not path.exists() and not path.is_symlink():
        return None
    return read_curation(path, symlinks=False)


def _optional(path: Path, kind):
    """An optional artifact of the run folder (absent: None), read as a plain file of the folder, never through a link."""
    if not path.exists() and not path.is_symlink():
        return None
    return read_artifact(path, kind, symlinks=False).to_dict()


def _side(run_dir: Path, results: ResultsDoc, records: list[ItemRecord], model: str):
    """One model of the run as a comparison side (what ``load_side`` builds), from the run already read."""
    from ..gate.runs import side_of

    return side_of(f"{run_dir}#{model}", run_dir, model, results, records)


def _num(v):
    """A finite number as it is (an int stays an int), else None (a huge integer that does not fit a float is None too)."""
    if not isinstance(v, (int, float)) or isinstance(v, bool):
        return None
    try:
        return v if math.isfinite(v) else None
    except OverflowError:
        return None


def _trend(run_dir: Path, cand: str | None) -> dict | None:
    """``trend.json`` (written where the history recorded this run's verdict): the candidate's adapter across its
    versions, per gated suite. Only the fields the report draws are kept, numbers only where finite; an unreadable
    file is left out (the history itself is the record)."""
    doc = _safe_json(run_dir / "trend.json")
    if not isinstance(doc, dict) or doc.get("schema") != "laf.trend/1" or not isinstance(doc.get("adapters"), list):
        return None
    adapters = [a for a in doc["adapters"] if isinstance(a, dict) and isinstance(a.get("versions"), list)]
    mine = [a for a in adapters if a.get("candidate") == cand] or adapters
    out = []
    for a in mine[:20]:
        suites = [str(s) for s in (a.get("suites") or []) if isinstance(s, str)][:50]
        versions = []
        for v in a["versions"][:500]:
            if not isinstance(v, dict):
                continue
            vs = v.get("suites") if isinstance(v.get("suites"), dict) else {}
            rel = v.get("released") if isinstance(v.get("released"), dict) else None
            versions.append({
                "candidate": str(v.get("candidate")), "verdict": v.get("verdict") if isinstance(v.get("verdict"), str) else None,
                "baseline": str(v.get("baseline")), "recorded_at": str(v.get("recorded_at")), "current": v.get("current") is True,
                "released": None if rel is None else {"released_at": str(rel.get("released_at")), "released_by": str(rel.get("released_by")), "note": str(rel.get("note") or "")},
                "suites": {s: {"metric": str(x.get("metric")), "value": _num(x.get("value")), "ci_low": _num(x.get("ci_low")), "ci_high": _num(x.get("ci_high")),
                               "higher_is_better": x.get("higher_is_better") is not False}
                           for s, x in vs.items() if s in suites and isinstance(x, dict)},
            })
        out.append({"name": str(a.get("name")), "candidate": str(a.get("candidate")), "suites": suites, "versions": versions})
    return {"store": str(doc.get("store")), "adapters": out}


def _safe_json(path: Path):
    """An optional JSON file of the run folder: ``None`` when absent or unreadable (a report never fails on it). Read
    like an artifact (bounded, a plain file, strict JSON) and never through a symlink (bytes from outside the run)."""
    if not path.exists() and not path.is_symlink():
        return None
    try:
        return read_raw(path, "", symlinks=False)
    except Exception:  # untrusted file: a broken one is left out, never a traceback
        return None
