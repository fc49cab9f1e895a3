"""The history out of the store: one flat table (Parquet or CSV, for pandas or DuckDB), or every recorded run
logged into an MLflow tracking store (the optional ``mlflow`` extra: ``pip install 'lost-and-found[mlflow]'``)."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from pathlib import Path

from ..errors import LafError
from ..io import atomic_write_bytes, atomic_write_text

FORMATS = ("parquet", "csv")


def export_file(store, out: str | Path, fmt: str | None = None) -> dict:
    """Write every (run, model, suite) row of the history to ``out`` (written whole or not at all)."""
    out = Path(out)
    fmt = fmt or {".parquet": "parquet", ".pq": "parquet", ".csv": "csv"}.get(out.suffix.lower())
    if fmt not in FORMATS:
        raise LafError(f"cannot tell the export format of {out}", "pass --format parquet or --format csv (or name the file .parquet / .csv)")
    rows = list(store.export_rows())
    if fmt == "csv":
        buf = io.StringIO()
        cols = list(rows[0]) if rows else []
        w = csv.DictWriter(buf, fieldnames=cols, lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
        atomic_write_text(out, buf.getvalue())
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        sink = pa.BufferOutputStream()
        pq.write_table(pa.Table.from_pylist(rows) if rows else pa.table({}), sink)
        atomic_write_bytes(out, sink.getvalue().to_pybytes())
    return {"path": str(out), "format": fmt, "rows": len(rows)}


_METRIC_NAME = re.compile(r"[^A-Za-z0-9_\-. /]")


def _mlflow_name(text: str) -> str:
    return _METRIC_NAME.sub("_", str(text))[:200] or "_"


def _param(v) -> str:
    s = "" if v is None else str(v)
    return s if len(s) <= 500 else s[:497] + "..."


def _ms(iso: str | None) -> int | None:
    from datetime import datetime

    try:
        return int(datetime.fromisoformat(str(iso)).timestamp() * 1000)
    except (TypeError, ValueError):
        return None


def export_mlflow(store, tracking_uri: str, experiment: str = "lost-and-found") -> dict:
    """Log each recorded (run, candidate) as one MLflow run: params (config fingerprint, base, adapter, precision,
    baseline), metrics per suite with CI bounds and the change against the baseline, the verdict as a tag, and the
    run's verdict.json and HTML report as artifacts where they still exist. Idempotent: a run already logged (tag
    ``laf.key``) is skipped."""
    import logging

    try:
        from mlflow.entities import Metric, Param, RunTag
        from mlflow.tracking import MlflowClient
    except ImportError:
        raise LafError("exporting to MLflow needs the mlflow package", "pip install 'lost-and-found[mlflow]' (mlflow-skinny)") from None
    for name in ("mlflow", "alembic"):
        logging.getLogger(name).setLevel(logging.WARNING)
    from .url import redact

    shown = redact(tracking_uri)
    try:
        client = MlflowClient(tracking_uri=tracking_uri)
        exp = client.get_experiment_by_name(experiment)
        exp_id = exp.experiment_id if exp is not None else client.create_experiment(experiment)
    except Exception as e:  # noqa: BLE001 - MLflow raises many types; one clear error naming the store
        raise LafError(f"cannot open the MLflow tracking store {shown}: {str(e).splitlines()[0][:300] if str(e) else type(e).__name__}",
                       "check the --mlflow URI (e.g. sqlite:///mlflow.db or http://host:5000)") from None
    logged = skipped = 0
    for doc in store.documents():
        for c in doc.get("candidates") or []:
            key = hashlib.sha256(f"{doc['run_id']}\x00{c['candidate']}".encode("utf-8", "surrogatepass")).hexdigest()[:32]
            if client.search_runs([exp_id], filter_string=f"tags.`laf.key` = '{key}'", max_results=1):
                skipped += 1
                continue
            ident = (doc.get("models") or {}).get(c["candidate"]) or {}
            tags = {"laf.key": key, "laf.run_id": doc["run_id"], "laf.kind": doc.get("kind"), "laf.verdict": c.get("verdict") or "none",
                    "laf.baseline_kind": c.get("baseline_kind"), "laf.git_commit": doc.get("git_commit"), "laf.run_folder": ident.get("run") or doc.get("run_folder")}
            run = client.create_run(exp_id, start_time=_ms(doc.get("recorded_at")), tags={k: _param(v) for k, v in tags.items()},
                                    run_name=_param(c["candidate"])[:250])
            rid = run.info.run_id
            params = {"config_fingerprint": doc.get("config_fingerprint"), "base_model": doc.get("base_model"), "base_fingerprint": doc.get("base_fingerprint"),
                      "adapter": c["candidate"], "adapter_digest": ident.get("adapter_digest"), "precision": doc.get("precision"),
                      "baseline": c.get("baseline"), "records_digest": ident.get("records_digest"), "policy": c.get("policy")}
            ts = _ms(doc.get("recorded_at")) or 0
            metrics = []
            for s, x in (ident.get("suites") or {}).items():
                for field in ("value", "ci_low", "ci_high", "improvement", "improvement_ci_low", "improvement_ci_high"):
                    if x.get(field) is not None:
                        metrics.append(Metric(_mlflow_name(f"{s}/{x.get('metric')}/{field}"), float(x[field]), ts, 0))
            client.log_batch(rid, metrics=metrics[:1000], params=[Param(k, _param(v)) for k, v in params.items()], tags=[RunTag("laf.exit_code", _param(c.get("exit_code")))])
            for path in ((doc.get("artifacts") or {}).get(c["candidate"]) or {}).values():
                if path and Path(path).is_file():
                    client.log_artifact(rid, str(path))
            client.log_text(rid, json.dumps(doc, indent=1, ensure_ascii=False), "laf-history-entry.json")
            client.set_terminated(rid, "FINISHED" if c.get("verdict") in (None, "pass") else "FAILED")
            logged += 1
    return {"tracking_uri": shown, "experiment": experiment, "experiment_id": exp_id, "logged": logged, "skipped": skipped}
