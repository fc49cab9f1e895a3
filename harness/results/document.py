"""Typed models of ``results.json``: suites, metric meanings, provenance, model identities.

``laf eval`` builds a :class:`ResultsDoc` and writes ``to_dict()``; the gate,
the report, the pipeline and the CLI read it back with :meth:`ResultsDoc.from_dict`
and use attributes (``meta.aggregation``, ``suite.primary``) instead of
string-keyed lookups with defaults scattered over every reader. The file is
untrusted input: a document that does not have the expected shape is one
:class:`~harness.errors.LafError` naming the key, never a ``KeyError`` later.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

from .checks import ResultsFormatError, as_mapping, finite_number, get_field
from .metrics import SuiteMeta

SCHEMA = "laf.results/1"
BASE = "base"


@dataclass(frozen=True)
class BaseModelInfo:
    spec: str
    fingerprint: str
    kind: str = ""
    source: str = ""

    @classmethod
    def from_dict(cls, d: Any, where: str = "provenance.base_model") -> "BaseModelInfo":
        d = as_mapping(d, where)
        return cls(get_field(d, "spec", where, str, ""), get_field(d, "fingerprint", where, str),
                   get_field(d, "kind", where, str, "", optional=True), get_field(d, "source", where, str, "", optional=True))

    def to_dict(self) -> dict:
        return {"spec": self.spec, "kind": self.kind, "source": self.source, "fingerprint": self.fingerprint}


@dataclass(frozen=True)
class Provenance:
    """How the run was scored (what two runs must share to be paired) and where it ran."""

    base_model: BaseModelInfo
    load: dict  # precision, compute_dtype, device
    batch_size: int
    max_length: int
    scoring_version: str | None = None
    share_context: bool | None = None
    cache: str | None = None
    wall_time_s: float | None = None
    environment: dict = field(default_factory=dict)  # time, command, packages, machine (harness.env.provenance)

    _OWN = ("base_model", "load", "batch_size", "max_length", "share_context", "scoring_version", "cache", "wall_time_s")

    @classmethod
    def from_dict(cls, d: Any, where: str = "provenance") -> "Provenance":
        d = as_mapping(d, where)
        load = dict(as_mapping(get_field(d, "load", where, Mapping), f"{where}.load"))
        get_field(load, "precision", f"{where}.load", str)
        return cls(
            base_model=BaseModelInfo.from_dict(get_field(d, "base_model", where, Mapping)),
            load=load,
            batch_size=get_field(d, "batch_size", where, int),
            max_length=get_field(d, "max_length", where, int),
            scoring_version=get_field(d, "scoring_version", where, str, None, optional=True),
            share_context=get_field(d, "share_context", where, bool, None, optional=True),
            cache=get_field(d, "cache", where, str, None, optional=True),
            wall_time_s=finite_number(d, "wall_time_s", where),
            environment={k: v for k, v in d.items() if k not in cls._OWN},
        )

    def to_dict(self) -> dict:
        return {**self.environment, "base_model": self.base_model.to_dict(), "load": self.load, "batch_size": self.batch_size,
                "max_length": self.max_length, "share_context": self.share_context, "scoring_version": self.scoring_version,
                "cache": self.cache, "wall_time_s": self.wall_time_s}

    def comparable(self) -> dict:
        """What two runs must share for their items to be paired."""
        return {
            "base_fingerprint": self.base_model.fingerprint,
            "precision": self.load.get("precision"),
            "compute_dtype": self.load.get("compute_dtype"),
            "batch_size": self.batch_size,
            "max_length": self.max_length,
            "scoring_version": self.scoring_version,
        }


@dataclass(frozen=True)
class AdapterInfo:
    ref: str
    path: str | None = None
    weights_sha256: str | None = None
    trained_on: str | None = None  # the base fingerprint in its manifest
    forced_base_mismatch: bool = False
    manifest: dict | None = None
    # the "adapter is applied" check before scoring (evaluate/applied.py): max |delta logit| on the probe batch,
    # tolerance, modules matched; None in results written before the check existed
    applied: dict | None = None

    @classmethod
    def from_dict(cls, d: Any, where: str = "adapter") -> "AdapterInfo":
        d = as_mapping(d, where)
        applied = get_field(d, "applied", where, Mapping, None, optional=True)
        return cls(get_field(d, "ref", where, str), get_field(d, "path", where, str, None, optional=True),
                   get_field(d, "weights_sha256", where, str, None, optional=True), get_field(d, "trained_on", where, str, None, optional=True),
                   get_field(d, "forced_base_mismatch", where, bool, False, optional=True), get_field(d, "manifest", where, Mapping, None, optional=True),
                   None if applied is None else dict(applied))

    def to_dict(self, with_manifest: bool = True) -> dict:
        out: dict[str, Any] = {"ref": self.ref, "path": self.path, "weights_sha256": self.weights_sha256, "trained_on": self.trained_on,
               "forced_base_mismatch": self.forced_base_mismatch}
        if self.applied is not None:
            out["applied"] = self.applied
        if with_manifest:
            out["manifest"] = self.manifest
        return out


@dataclass(frozen=True)
class ModelInfo:
    """One scored model: the base, or an adapter on it, with the identity its cached responses are keyed on."""

    kind: str  # base | adapter
    identity: str
    adapter: AdapterInfo | None = None
    requests: dict = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: Any, where: str = "model") -> "ModelInfo":
        d = as_mapping(d, where)
        a = get_field(d, "adapter", where, Mapping, None, optional=True)
        return cls(get_field(d, "kind", where, str), get_field(d, "identity", where, str, ""), None if a is None else AdapterInfo.from_dict(a, f"{where}.adapter"),
                   dict(get_field(d, "requests", where, Mapping, {}, optional=True)))

    def to_dict(self, with_manifest: bool = True) -> dict:
        return {"kind": self.kind, "identity": self.identity, "adapter": None if self.adapter is None else self.adapter.to_dict(with_manifest),
                "requests": self.requests}


def _metric_results(d: Any, where: str) -> dict:
    """metric -> {value, stderr, n, ...} of one model on one suite: each an object whose numbers are numbers
    (a null or text entry reached the report's tables as a traceback; found by tests/test_trust_properties.py)."""
    out = {}
    for metric, r in as_mapping(d, where).items():
        r = as_mapping(r, f"{where}.{metric}")
        finite_number(r, "value", f"{where}.{metric}")
        finite_number(r, "stderr", f"{where}.{metric}")
        get_field(r, "n", f"{where}.{metric}", int, None, optional=True)
        out[str(metric)] = dict(r)
    return out


@dataclass(frozen=True)
class ResultsDoc:
    """``results.json``: every model's aggregates per suite and metric, with the suites' meaning and the provenance."""

    provenance: Provenance
    models: dict[str, ModelInfo]
    suites: dict[str, SuiteMeta]
    results: dict[str, dict[str, dict[str, dict]]]  # model -> suite -> metric -> {value, stderr, n, filter}
    breakdowns: dict = field(default_factory=dict)  # model -> suite -> {field, groups}
    spec: dict | None = None  # the evaluation's settings (EvalSpec)
    out: str | None = None
    schema: str = SCHEMA
    integrity: str | None = None  # set by load_run: "verified" or "modified: ..." (never written into results.json)

    @classmethod
    def from_dict(cls, d: Any, where: str = "results.json") -> "ResultsDoc":
        d = as_mapping(d, where)
        schema = get_field(d, "schema", where, str, SCHEMA)
        if schema != SCHEMA:
            raise ResultsFormatError(where, f"schema '{schema}' is not {SCHEMA}")
        models = as_mapping(get_field(d, "models", where, Mapping), f"{where}.models")
        if not models:
            raise ResultsFormatError(f"{where}.models", "no models")
        suites = as_mapping(get_field(d, "suites", where, Mapping), f"{where}.suites")
        results = as_mapping(get_field(d, "results", where, Mapping), f"{where}.results")
        return cls(
            provenance=Provenance.from_dict(get_field(d, "provenance", where, Mapping)),
            models={str(k): ModelInfo.from_dict(v, f"{where}.models.{k}") for k, v in models.items()},
            suites={str(k): SuiteMeta.from_dict(v, f"{where}.suites.{k}") for k, v in suites.items()},
            results={str(m): {str(s): _metric_results(mv, f"{where}.results.{m}.{s}") for s, mv in as_mapping(v, f"{where}.results.{m}").items()}
                     for m, v in results.items()},
            breakdowns=dict(get_field(d, "breakdowns", where, Mapping, {}, optional=True)),
            spec=get_field(d, "spec", where, Mapping, None, optional=True),
            out=get_field(d, "out", where, str, None, optional=True),
            schema=schema,
        )

    def to_dict(self) -> dict:
        return {
            "schema": self.schema,
            "out": self.out,
            "spec": self.spec,
            "provenance": self.provenance.to_dict(),
            "models": {k: m.to_dict() for k, m in self.models.items()},
            "suites": {k: s.to_dict() for k, s in self.suites.items()},
            "results": self.results,
            "breakdowns": self.breakdowns,
        }

    @property
    def adapters(self) -> list[str]:
        return [m for m in self.models if m != BASE]

    def value(self, model: str, suite: str, metric: str) -> float | None:
        """A model's aggregate of one metric on one suite (None where it is undefined)."""
        return (self.results.get(model, {}).get(suite, {}).get(metric) or {}).get("value")
