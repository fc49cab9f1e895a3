"""Prediction space: how alike are the candidates' answers on the same items (records only, no model).

For every pair of models, over the items both answered (paired by suite and
document hash, like the gate):

* ``agreement``: share of items with the same prediction;
* ``kappa``: Cohen's kappa of the predictions (agreement corrected for the
  agreement expected from each model's own answer frequencies); undefined
  when both models give one and the same answer to every item;
* ``error_correlation``: the phi coefficient (Pearson correlation) of the two
  0/1 error indicators; undefined when one model is always right or always wrong;
* ``double_fault``: share of items both get wrong (Giacinto & Roli 2001);
* ``disagreement``: share of items exactly one of the two gets wrong
  (Kuncheva & Whitaker 2003's oracle disagreement; 1 - agreement is the
  prediction-level counterpart).

Everything is computed with a handful of matrix products over an
integer-coded (models x items) table, so 50 candidates x 10,000 items take
milliseconds (benchmarks/diversity_speed.py).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..errors import LafError
from .runs import read_run

DEFAULT_MIN_ITEMS = 20
EPS = 1e-12


# ---------------------------------------------------------------- measures on coded tables

def agreement_matrix(codes: np.ndarray) -> np.ndarray:
    """codes: (models, items) integer labels -> (models, models) share of equal predictions."""
    m, n = codes.shape
    out = np.empty((m, m))
    step = max(1, 2_000_000 // max(1, m * n))  # rows per chunk: bounded memory for the broadcast
    for s in range(0, m, step):
        out[s:s + step] = (codes[s:s + step, None, :] == codes[None, :, :]).mean(axis=2)
    return out


def pooled_agreement(parts: list[np.ndarray]) -> np.ndarray:
    """Agreement over the items of several suites' tables (same rows)."""
    return sum(agreement_matrix(p) * p.shape[1] for p in parts) / sum(p.shape[1] for p in parts)


def label_marginals(codes: np.ndarray):
    """(models, labels) sparse matrix of each model's answer frequencies."""
    from scipy import sparse

    m, n = codes.shape
    rows = np.repeat(np.arange(m), n)
    k = int(codes.max()) + 1 if codes.size else 1
    return sparse.csr_matrix((np.full(m * n, 1.0 / n), (rows, codes.ravel())), shape=(m, k))


def kappa_matrix(codes: np.ndarray | list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Cohen's kappa for every pair; returns (kappa with NaN where undefined, undefined mask).

    A list of tables (one per suite, same rows) gives the pooled kappa with chance agreement
    computed within each suite and weighted by its items: answer frequencies of different
    suites never mix, so two unrelated models still score about 0."""
    parts = codes if isinstance(codes, list) else [codes]
    total = sum(p.shape[1] for p in parts)
    po = sum(agreement_matrix(p) * p.shape[1] for p in parts) / total
    pe = 0.0
    for p in parts:
        marg = label_marginals(p)
        pe = pe + np.asarray((marg @ marg.T).todense()) * p.shape[1] / total
    undefined = (1.0 - pe) <= EPS
    with np.errstate(divide="ignore", invalid="ignore"):
        kappa = np.where(undefined, np.nan, (po - pe) / np.where(undefined, 1.0, 1.0 - pe))
    return kappa, undefined


def double_fault_matrix(errors: np.ndarray) -> np.ndarray:
    """errors: (models, items) 0/1 -> share of items both models get wrong."""
    return errors @ errors.T / errors.shape[1]


def disagreement_matrix(errors: np.ndarray) -> np.ndarray:
    """Share of items exactly one of the two models gets wrong."""
    rate = errors.mean(axis=1)
    return rate[:, None] + rate[None, :] - 2 * double_fault_matrix(errors)


def error_correlation_matrix(errors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Phi coefficient of the error indicators; returns (phi with NaN where undefined, undefined mask)."""
    rate = errors.mean(axis=1)
    cov = double_fault_matrix(errors) - np.outer(rate, rate)
    sd = np.sqrt(np.clip(rate * (1 - rate), 0, None))
    denom = np.outer(sd, sd)
    undefined = denom <= EPS
    with np.errstate(divide="ignore", invalid="ignore"):
        phi = np.where(undefined, np.nan, cov / np.where(undefined, 1.0, denom))
    return np.clip(phi, -1.0, 1.0), undefined


# ---------------------------------------------------------------- records -> coded tables

@dataclass
class SuiteBlock:
    """One suite's items answered by every model, as coded tables (rows follow ``labels``)."""

    suite: str
    category: str
    n: int
    dropped: dict[str, int]
    codes: np.ndarray | None = None  # (models, items) prediction labels
    errors: np.ndarray | None = None  # (models, items) 1 = wrong
    skipped: str | None = None  # why no measure at all
    no_predictions: str | None = None
    no_errors: str | None = None


@dataclass
class PredictionInputs:
    labels: list[str]  # candidates, then the base (if any) last
    base: str | None
    candidates: list[dict]  # {label, run, model}
    blocks: dict[str, SuiteBlock]
    warnings: list[str] = field(default_factory=list)
    suite_meta: dict[str, dict] = field(default_factory=dict)
    records: dict[str, list[dict]] = field(default_factory=dict)  # label -> records (for probe prompts)


def _unique_labels(entries: list[tuple[str, str]]) -> list[str]:
    names = [m for _, m in entries]
    return [m if names.count(m) == 1 else f"{run}#{m}" for run, m in entries]


def load_prediction_inputs(runs: list[str], min_items: int = DEFAULT_MIN_ITEMS) -> PredictionInputs:
    """Read the runs, pick the candidates (every adapter; ``RUN#MODEL`` picks one) and the base, pair items."""
    if min_items < 1:
        raise LafError(f"--min-items must be at least 1 (got {min_items})", "pass a positive number")
    loaded: dict[str, tuple[dict, list[dict]]] = {}
    chosen: list[tuple[str, str]] = []
    base_from: str | None = None
    for ref in runs:
        folder, _, model = ref.partition("#")
        if folder not in loaded:
            loaded[folder] = read_run(folder)
        results = loaded[folder][0]
        models = list(results["models"])
        if model:
            if model not in models:
                raise LafError(f"{folder} has no model '{model}' (it has {', '.join(models)})", f"use one of them: {folder}#{models[0]}")
            picked = [model]
        else:
            picked = [m for m in models if m != "base"]
        chosen += [(folder, m) for m in picked if (folder, m) not in chosen]
        if base_from is None and "base" in models:
            base_from = folder
    chosen = [(f, m) for f, m in chosen if not (m == "base" and f == base_from)]
    if len(chosen) < 2:
        found = ", ".join(m for _, m in chosen) or "none"
        raise LafError(f"diversity needs at least two candidates to compare; the runs hold {len(chosen)} ({found})",
                       "pass more runs, or runs evaluated with several --adapter")
    labels = _unique_labels(chosen)
    entries = list(zip(labels, chosen))
    if base_from is not None:
        entries.append(("base", (base_from, "base")))
    warnings = []
    fps = {f: ((r.get("provenance") or {}).get("base_model") or {}).get("fingerprint") for f, (r, _) in loaded.items()}
    if len(set(fps.values())) > 1:
        warnings.append("the runs were scored on different base models (" + "; ".join(f"{f}: {str(v)[:16]}" for f, v in fps.items())
                        + "): their agreement mixes base and adapter differences")
    recs_by: dict[str, list[dict]] = {}
    for label, (folder, model) in entries:
        recs_by[label] = [r for r in loaded[folder][1] if r["model"] == model]
    suite_meta: dict[str, dict] = {}
    for folder, (results, _) in loaded.items():
        for s, meta in results["suites"].items():
            suite_meta.setdefault(s, meta)
    blocks = {s: _block(s, suite_meta[s], [lab for lab, _ in entries], recs_by, min_items) for s in sorted(suite_meta)}
    if not any(b.skipped is None and (b.codes is not None or b.errors is not None) for b in blocks.values()):
        detail = "; ".join(f"{s}: {b.skipped or b.no_predictions}" for s, b in blocks.items())
        raise LafError(f"no suite has enough items answered by every candidate to compare them ({detail})",
                       f"evaluate the candidates on the same suite data (at least {min_items} common items; --min-items lowers the floor)")
    return PredictionInputs([lab for lab, _ in entries], "base" if base_from else None,
                            [{"label": lab, "run": f, "model": m} for lab, (f, m) in entries if lab != "base"],
                            blocks, warnings, suite_meta, recs_by)


def _keyed(records: list[dict]) -> dict[tuple[str, int], dict]:
    """Key each item by (doc hash, occurrence): identical documents pair in doc-id order, as in the gate."""
    out, seen = {}, defaultdict(int)
    for r in sorted(records, key=lambda r: r["doc_id"]):
        k = (r["doc_hash"], seen[r["doc_hash"]])
        seen[r["doc_hash"]] += 1
        out[k] = r
    return out


def _canon(v) -> str:
    return json.dumps(v, sort_keys=True, ensure_ascii=False, default=str)


def _block(suite: str, meta: dict, labels: list[str], recs_by: dict[str, list[dict]], min_items: int) -> SuiteBlock:
    category = str(meta.get("category", "unknown"))
    keyed = {lab: _keyed([r for r in recs_by[lab] if r["suite"] == suite]) for lab in labels}
    missing = [lab for lab in labels if not keyed[lab]]
    if missing:
        return SuiteBlock(suite, category, 0, {}, skipped=f"not evaluated for {', '.join(missing)}")
    common = set.intersection(*(set(k) for k in keyed.values()))
    dropped = {lab: len(keyed[lab]) - len(common) for lab in labels}
    if len(common) < min_items:
        return SuiteBlock(suite, category, len(common), dropped,
                          skipped=f"only {len(common)} items answered by every model (minimum {min_items})")
    keys = sorted(common)
    block = SuiteBlock(suite, category, len(keys), dropped)
    rows = [[keyed[lab][k] for k in keys] for lab in labels]
    preds = [[r.get("prediction") for r in row] for row in rows]
    if all(p is None for row in preds for p in row):
        block.no_predictions = "no per-item predictions (a log-likelihood or perplexity suite)"
    else:
        vocab: dict[str, int] = {}
        block.codes = np.array([[vocab.setdefault(_canon(p), len(vocab)) for p in row] for row in preds], dtype=np.int64)
    metric = meta.get("primary_metric")
    mmeta = (meta.get("metrics") or {}).get(metric) or {}
    if not metric:
        block.no_errors = "the suite names no primary metric"
        return block
    if mmeta.get("ideal") is not None:
        block.no_errors = f"{metric} has an ideal value, not a right or wrong answer"
        return block
    values = np.empty((len(labels), len(keys)))
    for i, row in enumerate(rows):
        for j, r in enumerate(row):
            v = r["metrics"].get(metric)
            if isinstance(v, bool):
                v = float(v)
            if not isinstance(v, (int, float)):
                block.no_errors = f"{metric} has no single number per item"
                return block
            if not math.isfinite(v):
                raise LafError(f"suite {suite}, item {r['doc_id']} of {labels[i]}: {metric} is {v}, not a finite number",
                               "re-run the evaluation; non-finite per-item metrics cannot be compared")
            values[i, j] = v
    if not np.all((values == 0) | (values == 1)):
        block.no_errors = f"{metric} is not a 0/1 score per item"
        return block
    higher = bool(mmeta.get("higher_is_better", True))
    block.errors = (1.0 - values) if higher else values
    return block


# ---------------------------------------------------------------- the measures, per suite / category / all

def _matrix(labels: list[str], values: np.ndarray, undefined: np.ndarray | None = None, reasons: dict | None = None) -> dict:
    rows = []
    for i in range(len(labels)):
        row = []
        for j in range(len(labels)):
            bad = (undefined is not None and undefined[i, j]) or not math.isfinite(values[i, j])
            row.append(None if bad else round(float(values[i, j]), 6))
        rows.append(row)
    out = {"labels": list(labels), "values": rows}
    if undefined is not None and undefined.any():
        out["undefined"] = [
            {"pair": [labels[i], labels[j]], "reason": (reasons or {}).get((i, j), "undefined")}
            for i in range(len(labels)) for j in range(i + 1, len(labels)) if undefined[i, j]
        ]
    return out


def _pool(blocks: list[SuiteBlock], attr: str) -> np.ndarray | None:
    parts = [getattr(b, attr) for b in blocks if getattr(b, attr) is not None]
    if not parts:
        return None
    if attr == "codes":  # one table per suite: kappa's chance agreement is computed within each suite
        return parts
    return np.concatenate(parts, axis=1)


def _kappa_reasons(labels: list[str], undefined: np.ndarray) -> dict:
    return {(i, j): f"{labels[i]} and {labels[j]} give the same single answer to every item, so chance agreement is 1"
            for i, j in zip(*np.nonzero(undefined))}


def _phi_reasons(errors: np.ndarray, labels: list[str], undefined: np.ndarray) -> dict:
    rate = errors.mean(axis=1)

    def why(i):
        return f"{labels[i]} is {'never' if rate[i] == 0 else 'always'} wrong"

    out = {}
    for i, j in zip(*np.nonzero(undefined)):
        const = [k for k in (i, j) if rate[k] in (0.0, 1.0)]
        out[(i, j)] = " and ".join(why(k) for k in dict.fromkeys(const)) + " on these items, so the correlation is undefined"
    return out


def measures(labels: list[str], codes: list[np.ndarray] | None, errors: np.ndarray | None) -> dict:
    """All prediction-space measures of one scope (a suite, a category or everything); ``codes``: one table per suite."""
    out: dict = {}
    if codes is not None:
        out["agreement"] = _matrix(labels, pooled_agreement(codes))
        k, und = kappa_matrix(codes)
        out["kappa"] = _matrix(labels, k, und, _kappa_reasons(labels, und))
    if errors is not None:
        out["double_fault"] = _matrix(labels, double_fault_matrix(errors))
        out["disagreement"] = _matrix(labels, disagreement_matrix(errors))
        phi, und = error_correlation_matrix(errors)
        out["error_correlation"] = _matrix(labels, phi, und, _phi_reasons(errors, labels, und))
        out["error_rate"] = {lab: round(float(r), 6) for lab, r in zip(labels, errors.mean(axis=1))}
    return out


def _vs_base(inp: PredictionInputs, codes, errors) -> dict:
    """How far each candidate moved from the base: changed answers, kappa, items fixed and broken."""
    b = len(inp.labels) - 1
    out = {}
    kappa = kappa_matrix(codes)[0] if codes is not None else None
    agree = pooled_agreement(codes) if codes is not None else None
    for i, lab in enumerate(inp.labels[:-1]):
        row: dict = {}
        if codes is not None:
            row["agreement"] = round(float(agree[i, b]), 6)
            row["changed"] = round(1 - float(agree[i, b]), 6)
            row["kappa"] = None if not math.isfinite(kappa[i, b]) else round(float(kappa[i, b]), 6)
            if row["kappa"] is None:
                row["kappa_undefined"] = "base and candidate give the same single answer to every item"
        if errors is not None:
            row["fixed"] = int(((errors[b] == 1) & (errors[i] == 0)).sum())
            row["broken"] = int(((errors[b] == 0) & (errors[i] == 1)).sum())
            row["items"] = int(errors.shape[1])
        out[lab] = row
    return out


MEASURES = ("agreement", "kappa", "double_fault", "disagreement", "error_correlation")


def prediction_space(inp: PredictionInputs) -> dict:
    """Per suite, per category and pooled over all suites; candidates only in the matrices, the base in ``vs_base``."""
    ncand = len(inp.labels) - (1 if inp.base else 0)
    cand = inp.labels[:ncand]
    active = [b for b in inp.blocks.values() if b.skipped is None]
    scopes: dict[str, dict[str, list[SuiteBlock]]] = {
        "by_suite": {b.suite: [b] for b in active},
        "by_category": defaultdict(list),
        "all": {"all": active},
    }
    for b in active:
        scopes["by_category"][b.category].append(b)
    doc: dict = {m: {"by_suite": {}, "by_category": {}} for m in MEASURES}
    doc["error_rate"] = {"by_suite": {}, "by_category": {}}
    vs_base: dict = {"by_suite": {}, "by_category": {}}
    for scope, groups in scopes.items():
        for name, blocks in sorted(groups.items()):
            codes, errors = _pool(blocks, "codes"), _pool(blocks, "errors")
            got = measures(cand, None if codes is None else [c[:ncand] for c in codes], None if errors is None else errors[:ncand])
            for m, v in got.items():
                if scope == "all":
                    doc[m]["all"] = v
                else:
                    doc[m][scope][name] = v
            if inp.base and (codes is not None or errors is not None):
                vb = _vs_base(inp, codes, errors)
                if scope == "all":
                    vs_base["all"] = vb
                else:
                    vs_base[scope][name] = vb
    items = {
        b.suite: {"category": b.category, "paired": b.n, "dropped": b.dropped,
                  **({"skipped": b.skipped} if b.skipped else {}),
                  **({"no_predictions": b.no_predictions} if b.no_predictions else {}),
                  **({"no_errors": b.no_errors} if b.no_errors else {})}
        for b in inp.blocks.values()
    }
    doc["items"] = items
    doc["vs_base"] = vs_base if inp.base else {"skipped": "no run holds the base model"}
    return doc


def candidate_runs(inp: PredictionInputs) -> dict[str, str]:
    return {c["label"]: str(Path(c["run"])) for c in inp.candidates}
