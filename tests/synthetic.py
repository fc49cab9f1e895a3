"""Synthetic evaluation runs (results.json + records.jsonl) for gate, compare and report tests.

Written in the exact format `laf eval` writes, so the gate and the report read
them through the same code as real runs.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from harness.results import seal_run

PROVENANCE = {
    "base_model": {"spec": "default", "kind": "default", "source": "synthetic", "fingerprint": "f" * 64},
    "load": {"precision": "nf4", "compute_dtype": "fp32", "device": "cpu"},
    "batch_size": 8,
    "max_length": 2048,
    "scoring_version": "laf-scoring-1",
    "time": "2026-11-28T00:00:00+00:00",
    "command": "laf eval (synthetic)",
    "packages": {"python": "3.11"},
    "machine": {"hostname": "test"},
}


def suite_meta(category: str, metric: str = "acc", higher_is_better: bool = True, ideal=None, aggregation: str = "mean") -> dict:
    return {"name": "", "category": category, "type": "lm_eval", "description": "synthetic", "n_docs": 0, "data_sha256": "",
            "source": "synthetic", "output_type": "multiple_choice", "num_fewshot": 0,
            "metrics": {metric: {"higher_is_better": higher_is_better, "ideal": ideal, "aggregation": aggregation}},
            "primary_metric": metric, "limit": None, "seed": 0}


def write_run(folder: Path, suites: dict[str, dict], values: dict[str, dict[str, list]], provenance: dict | None = None, item_salt: str = "",
              manifests: dict[str, dict] | None = None) -> Path:
    """``values[model][suite]`` = per-item metric values of the suite's primary metric; ``manifests[model]``: the adapter's
    registry manifest as results.json records it (e.g. a merge's lineage)."""
    folder.mkdir(parents=True, exist_ok=True)
    lines, results = [], {}
    for model, per_suite in values.items():
        results[model] = {}
        for suite, vals in per_suite.items():
            meta = suites[suite]
            metric = meta["primary_metric"]
            for i, v in enumerate(vals):
                h = hashlib.sha256(f"{suite}/{i}{item_salt}".encode()).hexdigest()
                lines.append(json.dumps({
                    "model": model, "suite": suite, "category": meta["category"], "doc_id": i, "doc_hash": h, "prompt_hash": h,
                    "prompt": f"Question {i} of {suite}?", "choices": [" yes", " no"], "target": 0, "loglikelihoods": [-1.0, -2.0],
                    "is_greedy": [True, False], "generation": None, "prediction": 0 if v else 1, "metrics": {metric: v}, "doc": {"i": i},
                }))
            mean = sum(vals) / len(vals) if meta["metrics"][metric]["aggregation"] == "mean" else None
            results[model][suite] = {metric: {"value": mean, "stderr": None, "n": len(vals)}}
    doc = {
        "schema": "laf.results/1",
        "provenance": provenance or PROVENANCE,
        "models": {m: {"kind": "base" if m == "base" else "adapter", "identity": m,
                       "adapter": None if m == "base" else {"ref": m, "manifest": (manifests or {}).get(m)}, "requests": {}} for m in values},
        "suites": {s: {**meta, "name": s} for s, meta in suites.items()},
        "results": results,
    }
    (folder / "results.json").write_text(json.dumps(doc))
    (folder / "records.jsonl").write_text("\n".join(lines) + "\n")
    seal_run(folder)  # a run written by laf eval carries integrity.json; these stand in for one
    return folder
