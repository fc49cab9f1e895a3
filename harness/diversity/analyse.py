"""``laf diversity``: one function that reads the inputs, runs every measure asked for, and returns diversity.json."""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from .. import defaults
from ..errors import LafError
from ..io import atomic_write_json, atomic_write_text
from ..results.artifacts import DiversityDoc
from .cluster import cluster_matrix
from .merge_outcomes import observed_merges, prediction_check
from .mergeability import predict_mergeability
from .prediction_space import DEFAULT_MIN_ITEMS, MEASURES, load_prediction_inputs, prediction_space

SCHEMA = "laf.diversity/1"
FILE = "diversity.json"

DEFINITIONS = {
    "agreement": "share of paired items on which the two models give the same prediction",
    "kappa": "Cohen's kappa of the predictions: (agreement - chance agreement) / (1 - chance agreement); null when both give one identical answer to every item",
    "double_fault": "share of paired items both models get wrong (primary metric, 0/1)",
    "disagreement": "share of paired items exactly one of the two models gets wrong (Kuncheva's oracle disagreement)",
    "error_correlation": "phi coefficient (Pearson correlation) of the two models' 0/1 error indicators; null when one is always or never wrong",
    "weight_cosine": "cosine between task vectors dW = scale * B @ A, from the factors (no dW materialised); per module, layer, module type and overall",
    "subspace_overlap": "mean squared cosine of the principal angles between the column spaces of the two adapters' B factors (1 = same subspace)",
    "effective_rank": "exp(entropy of the normalised singular values of dW) (Roy & Vetterli 2007)",
    "norm_ratio": "larger / smaller Frobenius norm of the two whole task vectors",
    "cka": "linear CKA (Kornblith et al. 2019) of hidden states at the last prompt token over the probe set, per layer and averaged",
    "kl": "KL divergence between next-token distributions on the probe continuations",
    "merge_ensemble_gap": "parameter-averaged pair vs the ensemble of the two parents: KL(ensemble || average) and the gold-token log-likelihood difference",
    "prediction_check": "merged candidates in the runs (adapter lineage): observed retained gain = gain(merge) / mean(gain(parents)) against the base "
                        "on the domain suites, against the predicted mergeability of the parents' pair; Spearman's rho with a bootstrap CI per merge method",
}


def analyse(runs: list[str], adapters: list[str] | None = None, registry: str | Path = defaults.REGISTRY, probe=None,
            min_items: int = DEFAULT_MIN_ITEMS, per_module: bool = True, allow_modified: bool = False, weight_space: bool = True) -> dict:
    """Every measure the inputs allow: prediction space from RUNs, weight space from adapters, function space from a probe."""
    adapters = list(adapters or [])
    if not runs and not adapters:
        raise LafError("nothing to compare: give evaluation runs (prediction space) and/or --adapters (weight space)",
                       "e.g. laf diversity reports/quickstart --adapters support@1 support@2")
    if probe is not None and not runs:
        raise LafError("--probe-suite reads its prompts from a run's per-item records, and no RUN was given", "pass a run that evaluated that suite")
    if probe is not None and len(adapters) < 2:
        raise LafError("function-space measures (--probe-suite) need at least two --adapters", "name the adapters to load onto the base")
    doc: dict = {"schema": SCHEMA, "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                 "inputs": {"runs": list(runs), "adapters": adapters, "registry": str(registry), "min_items": min_items,
                            "probe": None if probe is None else {"suite": probe.suite, "n": probe.n, "model": probe.model}},
                 "warnings": [], "definitions": DEFINITIONS}
    inp = None
    if runs:
        inp = load_prediction_inputs(runs, min_items, allow_modified)
        doc["warnings"] += inp.warnings
        doc["candidates"] = [c["label"] for c in inp.candidates]
        doc["candidate_runs"] = inp.candidates
        doc["base"] = inp.base
        pred = prediction_space(inp)
        for m in (*MEASURES, "error_rate", "items", "vs_base"):
            doc[m] = pred[m]
        for m in MEASURES:
            doc[m].setdefault("all", {"skipped": "no suite has this measure (see items)"})
    else:
        for m in (*MEASURES, "vs_base"):
            doc[m] = {"skipped": "no evaluation runs given"}
    loaded = []
    if adapters and weight_space:
        from .weight_space import load_registered
        from .weight_space import weight_space as weight_measures

        loaded = load_registered(adapters, registry)
        w = weight_measures(loaded, per_module=per_module)
        for k in ("weight_cosine", "weight_norm", "norm_ratio", "effective_rank", "subspace_overlap"):
            doc[k] = w[k]
        doc["weight"] = {"adapters": w["adapters"], "base_fingerprint": w["base_fingerprint"], "modules": w["modules"]}
    else:
        for k in ("weight_cosine", "weight_norm", "norm_ratio", "effective_rank", "subspace_overlap"):
            doc[k] = {"skipped": "no --adapters given" if not adapters else "weight space switched off"}
    if probe is not None:
        from ..registry import Registry
        from .function_space import function_space, probe_items
        from .weight_space import load_registered

        loaded = loaded or load_registered(adapters, registry)

        source = "base" if inp.base else inp.candidates[0]["label"]
        if probe.suite not in inp.suite_meta:
            raise LafError(f"the probe suite {probe.suite} is not in the runs (they hold {', '.join(sorted(inp.suite_meta))})",
                           "pick --probe-suite from the runs' suites")
        if probe.n < 4:
            raise LafError(f"--probe-n must be at least 4 (got {probe.n})", "CKA needs a few probes; 32 is a good start")
        probes = probe_items(inp.records[source].get(probe.suite, []), probe.suite, probe.n)
        reg = Registry(registry)
        paths = {a.ref: reg.resolve(a.ref).path for a in loaded}
        f = function_space(probe, loaded, paths, probes)
        doc["cka"], doc["kl"], doc["merge_ensemble_gap"] = f["cka"], f["kl"], f["merge_ensemble_gap"]
        doc["function"] = {"models": f["models"], "probe": f["probe"]}
    else:
        reason = "no --probe-suite given (function space needs the model)"
        doc["cka"], doc["kl"], doc["merge_ensemble_gap"] = ({"skipped": reason} for _ in range(3))
    doc["clusters"] = _clusters(doc)
    doc["predictions"] = _predictions(doc, inp, adapters)
    if inp is not None:
        label_of = {(c["run"], c["model"]): c["label"] for c in inp.candidates}
        doc["prediction_check"] = prediction_check(doc["predictions"], observed_merges(inp.results, label_of))
    else:
        doc["prediction_check"] = {"skipped": "no evaluation runs given (observed merge results come from a run's scores)"}
    check_finite(doc)
    return doc


def _without(matrix: dict, drop: str) -> dict:
    if "labels" not in matrix or drop not in matrix["labels"]:
        return matrix
    keep = [i for i, lab in enumerate(matrix["labels"]) if lab != drop]
    return {"labels": [matrix["labels"][i] for i in keep], "values": [[matrix["values"][i][j] for j in keep] for i in keep]}


def _clusters(doc: dict) -> dict:
    out = {}
    kappa = doc["kappa"].get("all") if isinstance(doc["kappa"], dict) else None
    out["prediction"] = cluster_matrix(kappa if kappa and "values" in kappa else doc["kappa"], "1 - kappa (all paired items)")
    wc = doc["weight_cosine"].get("overall") if "overall" in doc["weight_cosine"] else doc["weight_cosine"]
    out["weight"] = cluster_matrix(wc, "1 - task-vector cosine")
    cka = doc["cka"].get("mean") if "mean" in doc["cka"] else doc["cka"]
    out["function"] = cluster_matrix(_without(cka, "base") if "values" in cka else cka, "1 - linear CKA (mean over layers)")
    return out


def _predictions(doc: dict, inp, adapters: list[str]) -> dict:
    labels = adapters if len(adapters) >= 2 else [c["label"] for c in inp.candidates] if inp else []
    pairs = [(a, b) for i, a in enumerate(labels) for b in labels[i + 1:]]
    kappa, scope = None, "all"
    if inp is not None:
        cats = doc["kappa"].get("by_category", {})
        if "values" in cats.get("domain", {}):
            kappa, scope = cats["domain"], "domain"
        elif "values" in doc["kappa"].get("all", {}):
            kappa = doc["kappa"]["all"]
    wc = doc["weight_cosine"].get("overall")
    gap = doc["merge_ensemble_gap"].get("kl")
    return predict_mergeability(pairs, weight_cosine=wc, kappa=kappa, merge_gap_kl=gap, kappa_scope=scope)


def check_finite(obj, path: str = "diversity") -> None:
    """Non-finite numbers are errors, never written: undefined values are null with a reason."""
    import json

    try:
        json.dumps(obj, allow_nan=False, check_circular=False, default=str)  # C speed; the walk below only runs to name the culprit
        return
    except ValueError:
        pass
    _walk(obj, path)


def _walk(obj, path: str) -> None:
    if isinstance(obj, float) and not math.isfinite(obj):
        raise LafError(f"{path} is {obj}: a measure came out non-finite", "this is a bug: report it with the inputs")
    if isinstance(obj, dict):
        for k, v in obj.items():
            _walk(v, f"{path}.{k}")
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            _walk(v, f"{path}[{i}]")


SVG_DIR = "diversity"


def write_diversity(doc: dict, out: str | Path) -> Path:
    """``OUT/diversity.json`` and every chart as ``OUT/diversity/NAME.svg`` (charts of an earlier analysis that this one
    has no data for are removed, so the folder always matches the JSON); returns the JSON's path."""
    from .render import diversity_charts

    check_finite(doc)
    out = Path(out)
    charts = diversity_charts(doc)
    svg_dir = out / SVG_DIR
    if charts:
        for name, svg in charts:
            atomic_write_text(svg_dir / f"{name}.svg", svg)
    keep = {f"{name}.svg" for name, _ in charts}
    if svg_dir.is_dir():
        for old in svg_dir.glob("*.svg"):
            if old.name not in keep:
                old.unlink(missing_ok=True)
    return atomic_write_json(out / FILE, doc)


@dataclass(frozen=True)
class DiversityOptions:
    """What :func:`analyse_run` measures (``laf run``'s ``diversity:`` block, and ``laf sweep``'s)."""

    weight_space: bool = True  # task-vector measures of the adapters (reads their safetensors; no model)
    function_space: bool = False  # CKA, KL, merge-vs-ensemble gap on a probe set (loads the base model)
    probe_suite: str | None = None  # default: the first domain suite of the run (else its first suite)
    probe_n: int = 32
    min_items: int = DEFAULT_MIN_ITEMS
    per_module: bool = False  # per-module weight matrices in diversity.json (large for many modules)
    model: str = "default"
    device: str = "auto"
    allow_modified: bool = False


def analyse_run(run_dir: str | Path, adapters: list[str] | None = None, options: DiversityOptions | None = None,
                registry: str | Path = defaults.REGISTRY, out: str | Path | None = None) -> tuple[Path, DiversityDoc]:
    """Analyse one finished evaluation run (every adapter in it a candidate) and write ``diversity.json`` and its
    charts into ``out`` (default: the run folder); returns the JSON's path and its document.

    Prediction space always (records only); weight space on ``adapters`` (registered refs, normally the run's
    candidates) when ``options.weight_space``; function space when ``options.function_space``. Merged candidates in
    the run (adapter lineage) are checked against the prediction (``prediction_check``)."""
    options = options or DiversityOptions()
    run_dir = Path(run_dir)
    adapters = list(adapters or [])
    probe = None
    if options.function_space:
        from ..results import load_results
        from .function_space import ProbeSpec

        suite = options.probe_suite
        if suite is None:
            suites = load_results(run_dir).suites
            suite = next((s for s, m in suites.items() if m.category == "domain"), next(iter(suites)))
        probe = ProbeSpec(suite, options.probe_n, options.model, options.device)
    doc = analyse([str(run_dir)], adapters, registry, probe, options.min_items, per_module=options.per_module,
                  allow_modified=options.allow_modified, weight_space=options.weight_space)
    return write_diversity(doc, out or run_dir), DiversityDoc.from_dict(doc)
