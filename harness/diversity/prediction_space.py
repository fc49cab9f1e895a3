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

The records become columns in a few C-speed passes (no Python loop per
record), items are paired by one sort and a scatter per suite, and every
measure is a handful of matrix products over an integer-coded (models x
items) table: 50 candidates x 10,000 items take about 0.65 s of CPU, most of
it turning 510,000 record dicts into columns (benchmarks/diversity_speed.py).
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from dataclasses import dataclass, field
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import LafError
from ..results import parse_run_ref
from .runs import read_run

DEFAULT_MIN_ITEMS = 20
EPS = 1e-12


# ---------------------------------------------------------------- measures on coded tables

def agreement_counts(codes: np.ndarray) -> np.ndarray:
    """codes: (models, items) integer labels -> (models, models) number of items with equal predictions."""
    m, n = codes.shape
    k = int(codes.max()) + 1 if codes.size else 0
    if k <= 64:  # few labels (multiple choice): one matrix product per label
        out = np.zeros((m, m))
        for label in range(k):
            ind = (codes == label).astype(np.float64)
            out += ind @ ind.T
        return out
    out = np.empty((m, m))  # many labels (free text): compare rows, in chunks of bounded memory
    step = max(1, 4_000_000 // max(1, m * n))
    for s in range(0, m, step):
        out[s:s + step] = (codes[s:s + step, None, :] == codes[None, :, :]).sum(axis=2)
    return out


def agreement_matrix(codes: np.ndarray) -> np.ndarray:
    """codes: (models, items) integer labels -> (models, models) share of equal predictions."""
    return agreement_counts(codes) / codes.shape[1]


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
    records: Any = None  # label -> suite -> records (for probe prompts), built on demand
    results: dict[str, dict] = field(default_factory=dict)  # run folder -> results.json (as a dict)


def _unique_labels(entries: list[tuple[str, str]]) -> list[str]:
    names = [m for _, m in entries]
    return [m if names.count(m) == 1 else f"{run}#{m}" for run, m in entries]


def load_prediction_inputs(runs: list[str], min_items: int = DEFAULT_MIN_ITEMS, allow_modified: bool = False) -> PredictionInputs:
    """Read the runs (through the results layer's integrity check), pick the candidates (every adapter;
    ``RUN#MODEL`` picks one) and the base, pair items."""
    if min_items < 1:
        raise LafError(f"--min-items must be at least 1 (got {min_items})", "pass a positive number")
    loaded: dict[str, tuple[dict, list[dict]]] = {}
    chosen: list[tuple[str, str]] = []
    base_from: str | None = None
    for ref in runs:
        folder, model = parse_run_ref(ref)
        if folder not in loaded:
            loaded[folder] = read_run(folder, allow_modified)
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
    warnings = [f"run folder {f} failed its integrity check and is read only because of --allow-modified ({r['integrity'][len('modified: '):]})"
                for f, (r, _) in loaded.items() if str(r.get("integrity") or "").startswith("modified")]
    fps = {f: ((r.get("provenance") or {}).get("base_model") or {}).get("fingerprint") for f, (r, _) in loaded.items()}
    if len(set(fps.values())) > 1:
        warnings.append("the runs were scored on different base models (" + "; ".join(f"{f}: {str(v)[:16]}" for f, v in fps.items())
                        + "): their agreement mixes base and adapter differences")
    hash_codes: dict[str, int] = {}  # one item-key space over every run, so items pair across runs
    grouped = {folder: _Grouped(recs, hash_codes) for folder, (_, recs) in loaded.items()}
    suite_meta: dict[str, dict] = {}
    for _folder, (results, _) in loaded.items():
        for s, meta in results["suites"].items():
            suite_meta.setdefault(s, meta)
    blocks = {s: _block(s, suite_meta[s], [lab for lab, _ in entries], {lab: grouped[f].rows(m, s) for lab, (f, m) in entries}, min_items)
              for s in sorted(suite_meta)}
    if not any(b.skipped is None and (b.codes is not None or b.errors is not None) for b in blocks.values()):
        detail = "; ".join(f"{s}: {b.skipped or b.no_predictions}" for s, b in blocks.items())
        raise LafError(f"no suite has enough items answered by every candidate to compare them ({detail})",
                       f"evaluate the candidates on the same suite data (at least {min_items} common items; --min-items lowers the floor)")
    return PredictionInputs([lab for lab, _ in entries], "base" if base_from else None,
                            [{"label": lab, "run": f, "model": m} for lab, (f, m) in entries if lab != "base"],
                            blocks, warnings, suite_meta, _LabelRecords(grouped, dict(entries)), {f: r for f, (r, _) in loaded.items()})


def _factorize(values: list, codes: dict) -> np.ndarray:
    """Integer codes of hashable values, equal values equal codes (``codes`` grows; dict and map run at C speed)."""
    for v in dict.fromkeys(values):
        if v not in codes:
            codes[v] = len(codes)
    return np.fromiter(map(codes.__getitem__, values), dtype=np.int64, count=len(values))


class _Grouped:
    """One run's records as columns (model/suite groups as index arrays, item keys as integer codes, predictions and
    metrics as object arrays): a few C-speed passes over the records, then numpy."""

    def __init__(self, recs: list[dict], hash_codes: dict[str, int]):
        self.recs = recs
        n = len(recs)
        mo = np.fromiter(map(itemgetter("model"), recs), dtype=object, count=n)
        so = np.fromiter(map(itemgetter("suite"), recs), dtype=object, count=n)
        # records come grouped by (model, suite) from the results store: find the segments by comparing neighbours
        starts = np.flatnonzero(np.r_[True, (mo[1:] != mo[:-1]) | (so[1:] != so[:-1])]) if n else np.empty(0, dtype=np.int64)
        self.groups: dict[tuple[str, str], np.ndarray] = {}
        if len(starts) <= 4 * 1024:
            segments: dict[tuple[str, str], list[np.ndarray]] = defaultdict(list)
            for a, b in zip(starts.tolist(), np.r_[starts[1:], n].tolist()):
                segments[mo[a], so[a]].append(np.arange(a, b))
            self.groups = {k: v[0] if len(v) == 1 else np.concatenate(v) for k, v in segments.items()}
        else:  # interleaved records: group by codes
            models: dict = {}
            suites: dict = {}
            m, s = _factorize(mo.tolist(), models), _factorize(so.tolist(), suites)
            gid = m * len(suites) + s
            order = np.argsort(gid, kind="stable")
            sg = gid[order]
            cut = np.flatnonzero(np.r_[True, sg[1:] != sg[:-1]])
            model_of, suite_of = list(models), list(suites)
            self.groups = {(model_of[sg[a] // len(suites)], suite_of[sg[a] % len(suites)]): order[a:b]
                           for a, b in zip(cut.tolist(), np.r_[cut[1:], n].tolist())}
        self.item = _factorize(list(map(itemgetter("doc_hash"), recs)), hash_codes)
        self.pred = np.fromiter(map(itemgetter("prediction"), recs), dtype=object, count=n)
        self.metrics = np.fromiter(map(itemgetter("metrics"), recs), dtype=object, count=n)

    def rows(self, model: str, suite: str) -> tuple["_Grouped", np.ndarray]:
        return self, self.groups.get((model, suite), np.empty(0, dtype=np.int64))


class _LabelRecords:
    """label -> suite -> that model's records, built only when asked for (the probe prompts of function space)."""

    def __init__(self, grouped: dict[str, _Grouped], entries: dict[str, tuple[str, str]]):
        self.grouped, self.entries = grouped, entries

    def __getitem__(self, label: str) -> dict[str, list[dict]]:
        folder, model = self.entries[label]
        g = self.grouped[folder]
        return {s: [g.recs[i] for i in idx] for (m, s), idx in g.groups.items() if m == model}


def _occurrence_keys(g: _Grouped, idx: np.ndarray, offset: int) -> np.ndarray:
    """Item keys when a suite holds identical documents: (doc hash, occurrence in doc-id order) as one integer, as in
    the gate; ``offset`` puts them past every plain doc-hash code, so the two kinds never meet."""
    codes = g.item[idx]
    doc_ids = np.fromiter((g.recs[i]["doc_id"] for i in idx), dtype=np.int64, count=len(idx))
    order = np.lexsort((doc_ids, codes))  # by hash, then doc id
    sc = codes[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sc)) + 1]
    occ = np.empty(len(idx), dtype=np.int64)
    occ[order] = np.arange(len(sc)) - np.repeat(starts, np.diff(np.r_[starts, len(sc)]))
    return offset + codes * (len(idx) + 1) + occ


def _canon(v):
    """A hashable label for a prediction: scalars by type and value (so 1, 1.0 and True stay distinct), anything else as canonical JSON."""
    if v is None or isinstance(v, (str, int, float)):
        return (type(v).__name__, v)
    return ("json", json.dumps(v, sort_keys=True, ensure_ascii=False, default=str))


def _block(suite: str, meta: dict, labels: list[str], rows_by: dict[str, tuple[_Grouped, np.ndarray]], min_items: int) -> SuiteBlock:
    """``rows_by``: each model's (run columns, indices of its records of this suite)."""
    category = str(meta.get("category", "unknown"))
    missing = [lab for lab in labels if not len(rows_by[lab][1])]
    if missing:
        return SuiteBlock(suite, category, 0, {}, skipped=f"not evaluated for {', '.join(missing)}")
    keys = [rows_by[lab][0].item[rows_by[lab][1]] for lab in labels]
    for _ in range(2):
        # one sort per suite: every model's item keys as columns 0..K-1, then presence and record position by scatter
        uniq, inv = np.unique(np.concatenate(keys), return_inverse=True)
        bounds = np.cumsum([0] + [len(k) for k in keys])
        present = np.zeros((len(labels), len(uniq)), dtype=bool)
        where = np.empty((len(labels), len(uniq)), dtype=np.int64)
        for row, lab in enumerate(labels):
            col = inv[bounds[row]:bounds[row + 1]]
            present[row, col] = True
            where[row, col[::-1]] = rows_by[lab][1][::-1]  # a repeated key keeps its first record
        repeated = [row for row in range(len(labels)) if present[row].sum() < len(keys[row])]
        if not repeated:
            break
        offset = max(len(g.item) for g, _ in rows_by.values()) + int(max(int(k.max()) for k in keys if len(k))) + 1
        for row in repeated:  # identical documents: key by (doc hash, occurrence) instead
            keys[row] = _occurrence_keys(*rows_by[labels[row]], offset)
    common = np.flatnonzero(present.all(axis=0))
    dropped = {lab: int(present[row].sum()) - len(common) for row, lab in enumerate(labels)}
    if len(common) < min_items:
        return SuiteBlock(suite, category, len(common), dropped,
                          skipped=f"only {len(common)} items answered by every model (minimum {min_items})")
    block = SuiteBlock(suite, category, len(common), dropped)
    sel = [(rows_by[lab][0], where[row, common]) for row, lab in enumerate(labels)]  # per model: its record of each common item
    block.codes = _codes_of(np.stack([g.pred[i] for g, i in sel]))
    if block.codes is None:
        block.no_predictions = "no per-item predictions (a log-likelihood or perplexity suite)"
    metric = meta.get("primary_metric")
    mmeta = (meta.get("metrics") or {}).get(metric) or {}
    if not metric:
        block.no_errors = "the suite names no primary metric"
        return block
    if mmeta.get("ideal") is not None:
        block.no_errors = f"{metric} has an ideal value, not a right or wrong answer"
        return block
    try:  # the common case at C speed: plain numbers; anything else is diagnosed item by item below
        get = itemgetter(metric)
        values = np.stack([np.fromiter(map(get, g.metrics[i]), dtype=np.float64, count=len(i)) for g, i in sel])
        fast = bool(np.all(np.isfinite(values)))
    except (TypeError, ValueError, KeyError):
        fast = False
    if not fast:
        values = _checked_values(suite, metric, labels, [[g.recs[j] for j in i] for g, i in sel], block)
        if values is None:
            return block
    if not np.all((values == 0) | (values == 1)):
        block.no_errors = f"{metric} is not a 0/1 score per item"
        return block
    higher = bool(mmeta.get("higher_is_better", True))
    block.errors = (1.0 - values) if higher else values
    return block


def _codes_of(preds: np.ndarray) -> np.ndarray | None:
    """``preds``: (models, items) object array of predictions -> integer labels (see :func:`_codes`), at C speed when every
    prediction has one plain type."""
    kinds = set(map(type, preds.ravel()))
    if len(kinds) == 1 and kinds <= {int, str}:
        arr = preds.astype(np.int64 if kinds == {int} else str)
        return np.unique(arr, return_inverse=True)[1].reshape(arr.shape).astype(np.int64)
    return _codes(preds.tolist())


def _codes(preds: list[list]) -> np.ndarray | None:
    """Integer labels for the predictions, equal values equal labels; None when no item has a prediction."""
    kinds = {type(p) for row in preds for p in row}
    try:  # numpy only when every prediction has one plain type (so 1, 1.0 and True never share a label)
        arr = np.array(preds) if len(kinds) == 1 and kinds <= {int, str, float} else None
    except (TypeError, ValueError):
        arr = None
    if arr is not None and arr.ndim == 2 and (arr.dtype.kind in "iU" or (arr.dtype.kind == "f" and np.all(np.isfinite(arr)))):
        return np.unique(arr, return_inverse=True)[1].reshape(arr.shape).astype(np.int64)
    if all(p is None for row in preds for p in row):
        return None
    vocab: dict = {}
    return np.array([[vocab.setdefault(_canon(p), len(vocab)) for p in row] for row in preds], dtype=np.int64)


def _checked_values(suite, metric, labels, rows, block) -> np.ndarray | None:
    values = np.empty((len(labels), len(rows[0])))
    for i, row in enumerate(rows):
        for j, r in enumerate(row):
            v = r["metrics"].get(metric)
            if isinstance(v, bool):
                v = float(v)
            if not isinstance(v, (int, float)):
                block.no_errors = f"{metric} has no single number per item"
                return None
            if not math.isfinite(v):
                raise LafError(f"suite {suite}, item {r['doc_id']} of {labels[i]}: {metric} is {v}, not a finite number",
                               "re-run the evaluation; non-finite per-item metrics cannot be compared")
            values[i, j] = v
    return values


# ---------------------------------------------------------------- the measures, per suite / category / all

def _matrix(labels: list[str], values: np.ndarray, undefined: np.ndarray | None = None, reasons: dict | None = None) -> dict:
    bad = ~np.isfinite(values) if undefined is None else (undefined | ~np.isfinite(values))
    rows = np.round(np.where(bad, 0.0, values), 6).tolist()
    for i, j in zip(*np.nonzero(bad)):
        rows[i][j] = None
    out = {"labels": list(labels), "values": rows}
    if undefined is not None and undefined.any():
        out["undefined"] = [
            {"pair": [labels[i], labels[j]], "reason": (reasons or {}).get((i, j), "undefined")}
            for i in range(len(labels)) for j in range(i + 1, len(labels)) if undefined[i, j]
        ]
    return out


def _kappa_reasons(labels: list[str], undefined: np.ndarray) -> dict:
    return {(i, j): f"{labels[i]} and {labels[j]} give the same single answer to every item, so chance agreement is 1"
            for i, j in zip(*np.nonzero(undefined))}


def _phi_reasons(rate: np.ndarray, labels: list[str], undefined: np.ndarray) -> dict:

    def why(i):
        return f"{labels[i]} is {'never' if rate[i] == 0 else 'always'} wrong"

    out = {}
    for i, j in zip(*np.nonzero(undefined)):
        const = [k for k in (i, j) if rate[k] in (0.0, 1.0)]
        out[(i, j)] = " and ".join(why(k) for k in dict.fromkeys(const)) + " on these items, so the correlation is undefined"
    return out


@dataclass
class Sums:
    """Additive statistics of a set of items: per-suite sums add up to any category or to everything."""

    n_codes: int = 0
    agree: np.ndarray | None = None  # items with equal predictions
    chance: np.ndarray | None = None  # chance agreement (within the suite) x items
    n_errors: int = 0
    both: np.ndarray | None = None  # items both get wrong
    wrong: np.ndarray | None = None  # items each gets wrong
    fixed_broken: np.ndarray | None = None  # [i, j]: items i gets right and j gets wrong

    def __add__(self, o: "Sums") -> "Sums":
        add = lambda a, b: b if a is None else a if b is None else a + b  # noqa: E731
        return Sums(self.n_codes + o.n_codes, add(self.agree, o.agree), add(self.chance, o.chance), self.n_errors + o.n_errors,
                    add(self.both, o.both), add(self.wrong, o.wrong), add(self.fixed_broken, o.fixed_broken))


def block_sums(b: SuiteBlock) -> Sums:
    out = Sums()
    if b.codes is not None:
        n = b.codes.shape[1]
        marg = label_marginals(b.codes)
        out.n_codes, out.agree, out.chance = n, agreement_counts(b.codes), np.asarray((marg @ marg.T).todense()) * n
    if b.errors is not None:
        E = b.errors
        out.n_errors, out.both, out.wrong = E.shape[1], E @ E.T, E.sum(axis=1)
        out.fixed_broken = (1 - E) @ E.T
    return out


def measures(labels: list[str], s: Sums) -> dict:
    """All prediction-space measures of one scope (a suite, a category or everything) from its sums."""
    out: dict = {}
    k = len(labels)
    if s.agree is not None:
        po, pe = s.agree[:k, :k] / s.n_codes, s.chance[:k, :k] / s.n_codes
        out["agreement"] = _matrix(labels, po)
        und = (1.0 - pe) <= EPS
        with np.errstate(divide="ignore", invalid="ignore"):
            kappa = np.where(und, np.nan, (po - pe) / np.where(und, 1.0, 1.0 - pe))
        out["kappa"] = _matrix(labels, kappa, und, _kappa_reasons(labels, und))
    if s.both is not None:
        n = s.n_errors
        df, rate = s.both[:k, :k] / n, s.wrong[:k] / n
        out["double_fault"] = _matrix(labels, df)
        out["disagreement"] = _matrix(labels, rate[:, None] + rate[None, :] - 2 * df)
        sd = np.sqrt(np.clip(rate * (1 - rate), 0, None))
        den = np.outer(sd, sd)
        und = den <= EPS
        with np.errstate(divide="ignore", invalid="ignore"):
            phi = np.clip(np.where(und, np.nan, (df - np.outer(rate, rate)) / np.where(und, 1.0, den)), -1, 1)
        out["error_correlation"] = _matrix(labels, phi, und, _phi_reasons(rate, labels, und))
        out["error_rate"] = {lab: round(float(r), 6) for lab, r in zip(labels, rate)}
    return out


def _vs_base(labels: list[str], s: Sums) -> dict:
    """How far each candidate moved from the base (the last row): changed answers, kappa, items fixed and broken."""
    b = len(labels)
    out = {}
    for i, lab in enumerate(labels):
        row: dict = {}
        if s.agree is not None:
            po, pe = s.agree[i, b] / s.n_codes, s.chance[i, b] / s.n_codes
            row["agreement"] = round(float(po), 6)
            row["changed"] = round(1 - float(po), 6)
            if 1 - pe <= EPS:
                row["kappa"] = None
                row["kappa_undefined"] = "base and candidate give the same single answer to every item"
            else:
                row["kappa"] = round(float((po - pe) / (1 - pe)), 6)
        if s.both is not None:
            row["fixed"] = int(round(s.fixed_broken[i, b]))  # candidate right, base wrong
            row["broken"] = int(round(s.fixed_broken[b, i]))  # base right, candidate wrong
            row["items"] = int(s.n_errors)
        out[lab] = row
    return out


MEASURES = ("agreement", "kappa", "double_fault", "disagreement", "error_correlation")


def prediction_space(inp: PredictionInputs) -> dict:
    """Per suite, per category and pooled over all suites; candidates only in the matrices, the base in ``vs_base``."""
    ncand = len(inp.labels) - (1 if inp.base else 0)
    cand = inp.labels[:ncand]
    active = [b for b in inp.blocks.values() if b.skipped is None]
    sums = {b.suite: block_sums(b) for b in active}
    scopes: dict[str, dict[str, Sums]] = {"by_suite": dict(sums), "by_category": {}, "all": {}}
    for b in active:
        cat = scopes["by_category"]
        cat[b.category] = cat[b.category] + sums[b.suite] if b.category in cat else sums[b.suite]
    total = Sums()
    for v in sums.values():
        total = total + v
    scopes["all"]["all"] = total
    doc: dict = {m: {"by_suite": {}, "by_category": {}} for m in (*MEASURES, "error_rate")}
    vs_base: dict = {"by_suite": {}, "by_category": {}}
    for scope, groups in scopes.items():
        for name, sm in sorted(groups.items()):
            for m, v in measures(cand, sm).items():
                if scope == "all":
                    doc[m]["all"] = v
                else:
                    doc[m][scope][name] = v
            if inp.base and (sm.agree is not None or sm.both is not None):
                vb = _vs_base(cand, sm)
                if scope == "all":
                    vs_base["all"] = vb
                else:
                    vs_base[scope][name] = vb
    doc["items"] = {
        b.suite: {"category": b.category, "paired": b.n, "dropped": b.dropped,
                  **({"skipped": b.skipped} if b.skipped else {}),
                  **({"no_predictions": b.no_predictions} if b.no_predictions else {}),
                  **({"no_errors": b.no_errors} if b.no_errors else {})}
        for b in inp.blocks.values()
    }
    doc["vs_base"] = vs_base if inp.base else {"skipped": "no run holds the base model"}
    return doc


def candidate_runs(inp: PredictionInputs) -> dict[str, str]:
    return {c["label"]: str(Path(c["run"])) for c in inp.candidates}
