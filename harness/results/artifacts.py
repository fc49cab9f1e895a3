"""Typed artifacts: the JSON documents the stages write and read back, as pydantic models, and the one reader.

``results.json`` has its reader in :mod:`harness.results.document`; the others are here:

=============  ==========================  =========================================================
kind           file                        written by
=============  ==========================  =========================================================
verdict        ``verdict.json``            ``laf gate``, ``laf run``'s gate stage (sealed)
compare        ``compare.json``            ``laf compare``, ``laf run`` / ``laf sweep``'s compare stage
calibration    ``calibration.json``        ``laf calibrate``
parity         ``parity.json``             ``laf parity``, ``laf run``'s parity stage
diversity      ``diversity.json``          ``laf diversity``, ``laf run``'s diversity stage
sweep          ``sweep.json``              ``laf sweep``
run            ``run.json``                ``laf run``
=============  ==========================  =========================================================

Every file is untrusted input when it is read back (a run folder is shared, copied, edited): :func:`read` bounds
its size, refuses what is not JSON, a non-finite number anywhere (``NaN``, ``1e999``) and a document of another
shape, each as one :class:`~harness.errors.LafError` naming the file, the field and the fix. The models are
what ``laf schema KIND`` prints.

The JSON on disk is what the writers wrote before these models existed: a model dumps exactly the keys it was
given (``to_dict`` leaves out fields that were never set), numbers keep their JSON type (an ``int`` stays an
``int``), and the field order is the writers' order, so ``Model.from_dict(d).to_dict() == d``, key order included.

``extra``: the documents laf writes whole and whose every key a reader uses (verdict, compare, calibration,
sweep, run, and their rows) forbid unknown keys: one is a document of another version or a hand edit, said at
once instead of ignored. Parts that describe something outside laf's control (a run's provenance and
environment, a policy, an adapter's manifest summary, a cost estimate) and the measurement reports whose
sections grow with what was measured (parity, diversity) allow them and keep them as written.
"""

from __future__ import annotations

import json
import math
import os
import stat
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Optional, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    PlainValidator,
    PrivateAttr,
    ValidationError,
    WithJsonSchema,
    model_serializer,
    model_validator,
)

from ..errors import LafError
from .checks import is_finite_number

MAX_BYTES = 64 << 20  # the largest artifact read back (a verdict or sweep of many suites is a few hundred kB)
MAX_DEPTH = 64


def _finite(v: Any) -> Any:
    if not is_finite_number(v):
        raise ValueError("not a finite number" + ("" if isinstance(v, (int, float)) and not isinstance(v, bool) else f" (got {type(v).__name__})"))
    return v


# A JSON number that is finite; an int stays an int and a float a float, so the JSON written back is what was read.
Number = Annotated[float, PlainValidator(_finite), PlainSerializer(lambda v: v, return_type=Any), WithJsonSchema({"type": "number"})]


def _count(v: Any) -> Any:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise ValueError(f"expected a count (a whole number >= 0), got {v!r}"[:120])
    return v


Count = Annotated[int, PlainValidator(_count), PlainSerializer(lambda v: v, return_type=Any), WithJsonSchema({"type": "integer", "minimum": 0})]
Status = Literal["pass", "fail", "inconclusive"]


def _exit(v: Any) -> Any:
    if isinstance(v, bool) or v not in (0, 1, 2):
        raise ValueError(f"expected an exit code 0, 1 or 2, got {v!r}"[:120])
    return v


ExitCode = Annotated[int, PlainValidator(_exit), PlainSerializer(lambda v: v, return_type=Any), WithJsonSchema({"enum": [0, 1, 2]})]


class Part(BaseModel):
    """A part laf writes whole: unknown keys are refused, types are strict (a bool is not a number, "1" not 1).

    A part read from a mapping remembers its key order and dumps in it (declared fields and kept unknown keys
    interleave in a writer's order, which the field declarations alone cannot give)."""

    model_config = ConfigDict(extra="forbid", strict=True, populate_by_name=True)
    _order: tuple = PrivateAttr(default=())

    @model_validator(mode="wrap")
    @classmethod
    def _keep_order(cls, data: Any, handler: Any) -> Any:
        part = handler(data)
        if isinstance(data, dict) and isinstance(part, Part):
            part._order = tuple(data)
        return part

    @model_serializer(mode="wrap")
    def _in_order(self, handler: Any) -> Any:
        out = handler(self)
        if not self._order or not isinstance(out, dict):
            return out
        first = {k: out[k] for k in self._order if k in out}
        return {**first, **{k: v for k, v in out.items() if k not in first}}

    def to_dict(self) -> dict:
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


class OpenPart(Part):
    """A part that describes something outside laf's control: unknown keys are kept as written."""

    model_config = ConfigDict(extra="allow", strict=True, populate_by_name=True)


A = TypeVar("A", bound="Artifact")


class Artifact(Part):
    """A whole document: its ``kind`` (``laf schema KIND``), its file name and the fix a bad file's error gives."""

    KIND: ClassVar[str] = ""
    FILE: ClassVar[str] = ""
    FIX: ClassVar[str] = "regenerate the file with the command that wrote it"

    @classmethod
    def from_dict(cls: type[A], d: Any, where: str | None = None) -> A:
        return parse(d, cls, where or cls.FILE)


# ---------------------------------------------------------------- shared parts


class PairedStats(Part):
    """The fields of ``PairedDelta.to_dict`` (a number the statistics could not define is null), shared by a delta
    and a calibration suite; each document keeps its writer's key order (see :class:`Part`)."""

    metric: str
    n: Count
    base: Optional[Number] = None
    candidate: Optional[Number] = None
    delta: Optional[Number] = None
    improvement: Optional[Number] = None
    ci_low: Optional[Number] = None
    ci_high: Optional[Number] = None
    lower_bound: Optional[Number] = None
    upper_bound: Optional[Number] = None
    confidence: Optional[Number] = None
    p_value: Optional[Number] = None
    test: str = ""
    base_only: Optional[Count] = None
    candidate_only: Optional[Count] = None
    se: Optional[Number] = None
    higher_is_better: bool = True
    ideal: Optional[Number] = None
    minimum_detectable_effect: Optional[Number] = None


class Delta(PairedStats):
    """A paired delta, with the keys the summaries add."""

    category: Optional[str] = None
    suites: Optional[list[str]] = None


class Side(OpenPart):
    """One side of a comparison (``RunSide.describe``): the model, its run folder and how it was scored."""

    ref: str
    run: Optional[str] = None
    model: str


class PolicyInfo(OpenPart):
    confidence: Number
    source: Optional[str] = None


# ---------------------------------------------------------------- verdict.json


class RuleDoc(Part):
    rule: str
    kind: str
    margin: Number
    required: bool
    suite: str
    category: str
    metric: str
    status: Status
    message: str
    stats: Optional[Delta] = None
    minimum_detectable_effect: Optional[Number] = None
    min_items: Count = 0


class Summaries(Part):
    suites: dict[str, Delta]
    categories: dict[str, Delta] = {}
    overall: Optional[Delta] = None


class VerdictDoc(Artifact):
    """``verdict.json``: a gate's decision, sealed by ``verdict_sha256`` (checked by :func:`harness.gate.verdict.read_verdict`)."""

    KIND: ClassVar[str] = "verdict"
    FILE: ClassVar[str] = "verdict.json"
    FIX: ClassVar[str] = "run `laf gate` again to rewrite it (a verdict is never edited by hand)"

    schema_: Literal["laf.verdict/1"] = Field("laf.verdict/1", alias="schema")
    verdict: Status
    exit_code: ExitCode
    created: str
    rules: list[RuleDoc]
    summaries: Optional[Summaries] = None
    baseline: Side
    candidate: Side
    policy: PolicyInfo
    contamination: Optional[dict[str, Any]] = None
    warnings: list[str] = []
    baseline_kind: str = "base"
    notes: list[str] = []
    history: Optional[dict[str, Any]] = None
    marks: list[str] = []
    verdict_sha256: Optional[str] = None


# ---------------------------------------------------------------- compare.json


class Cell(Part):
    """One comparison cell: a change in the metric's own direction and unit (``harness.gate.compare.change_cell``)."""

    metric: str
    unit: str
    base: Optional[Number] = None
    candidate: Optional[Number] = None
    shown_as: str
    better: str
    change: Optional[Number] = None
    ci_low: Optional[Number] = None
    ci_high: Optional[Number] = None
    improvement: Optional[Number] = None
    improvement_ci: list[Optional[Number]] = []
    p_value: Optional[Number] = None


class Column(Part):
    key: str
    suites: list[str]
    metric: Optional[str] = None
    unit: Optional[str] = None
    shown_as: Optional[str] = None
    better: Optional[str] = None
    rules: list[str] = []


class RankRow(Part):
    candidate: str
    ref: str
    model: str
    identity: dict[str, Any]
    resolved_from: Optional[str] = None
    merge: Optional[dict[str, Any]] = None
    columns: dict[str, Cell]
    suites: dict[str, Delta]
    categories: dict[str, Delta]
    verdict: Optional[Status] = None
    exit_code: Optional[ExitCode] = None
    failed_rules: list[str] = []
    rank: Count
    pareto: bool
    domain_p_holm: Optional[Number] = None


class Pairwise(Part):
    improvement: Optional[Number] = None
    ci_low: Optional[Number] = None
    ci_high: Optional[Number] = None
    p_one_sided: Number
    p_holm: Optional[Number] = None


class Winner(Part):
    candidate: Optional[str] = None
    reason: str
    pairwise: dict[str, Pairwise] = {}


class ParetoOn(Part):
    quantities: list[str]
    source: str
    orientation: str


class CompareDoc(Artifact):
    """``compare.json``: every candidate against one baseline, ranked, with the Pareto front and a winner."""

    KIND: ClassVar[str] = "compare"
    FILE: ClassVar[str] = "compare.json"
    FIX: ClassVar[str] = "run `laf compare` (or the run) again to rewrite it"

    schema_: Literal["laf.compare/2"] = Field("laf.compare/2", alias="schema")
    baseline: Side
    confidence: Number
    categories: list[str]
    columns: list[Column]
    pareto_on: ParetoOn
    ranking: list[RankRow]
    winner: Winner

    def row(self, model: str) -> RankRow | None:
        return next((r for r in self.ranking if r.model == model), None)


# ---------------------------------------------------------------- calibration.json


class NoiseSuite(PairedStats):
    """One suite's noise: its paired delta (in ``calibrate``'s key order), the flip rate and the margin."""

    category: str
    flip_rate: Optional[Number] = None
    suggested_margin: Number
    warning: Optional[str] = None  # too few items to measure the noise: the margin is no measurement


class CalibrationDoc(Artifact):
    """``calibration.json``: run-to-run noise of two runs of one model, per suite, and the margins it suggests."""

    KIND: ClassVar[str] = "calibration"
    FILE: ClassVar[str] = "calibration.json"
    FIX: ClassVar[str] = "run `laf calibrate` again to rewrite it"

    schema_: Literal["laf.calibration/1"] = Field("laf.calibration/1", alias="schema")
    runs: list[Side]
    confidence: Number
    suites: dict[str, NoiseSuite]
    suggested_policy: dict[str, Any]
    suggested_policy_yaml: str
    warnings: list[str] = []


# ---------------------------------------------------------------- parity.json


class ParityPair(OpenPart):
    reference: str
    form: str
    kl_mean: Optional[Number] = None
    kl_p99: Optional[Number] = None
    top1_agreement: Optional[Number] = None
    flip_share: Optional[Number] = None
    mean_abs_delta_ll: Optional[Number] = None
    items: Optional[Count] = None
    flips: Optional[Count] = None
    positions: Optional[Count] = None


class ParityDoc(Artifact):
    """``parity.json``: the forms of one candidate (on the fly, merged, merged + NF4) compared pair by pair."""

    model_config = ConfigDict(extra="allow", strict=True, populate_by_name=True)
    KIND: ClassVar[str] = "parity"
    FILE: ClassVar[str] = "parity.json"
    FIX: ClassVar[str] = "re-run `laf parity`"

    adapter: Optional[str] = None
    pairs: list[ParityPair]

    def pair(self, form: str, reference: str) -> ParityPair | None:
        return next((p for p in self.pairs if p.reference == reference and p.form == form), None)


# ---------------------------------------------------------------- diversity.json


class DiversityInputs(OpenPart):
    runs: list[str]
    adapters: list[str]


class DiversityDoc(Artifact):
    """``diversity.json``: how different the candidates are (prediction, weight and function space), the clusters
    and the mergeability predictions; each measure is a section (or ``{"skipped": reason}``)."""

    model_config = ConfigDict(extra="allow", strict=True, populate_by_name=True)
    KIND: ClassVar[str] = "diversity"
    FILE: ClassVar[str] = "diversity.json"
    FIX: ClassVar[str] = "re-run `laf diversity` on this run (or the run's diversity stage), or remove the file"

    schema_: Literal["laf.diversity/1"] = Field("laf.diversity/1", alias="schema")
    created: str
    inputs: DiversityInputs
    warnings: list[str] = []
    definitions: dict[str, str] = {}


# ---------------------------------------------------------------- sweep.json


class PointCell(Part):
    improvement: Optional[Number] = None
    ci_low: Optional[Number] = None
    ci_high: Optional[Number] = None
    p_value: Optional[Number] = None
    base: Optional[Number] = None
    candidate: Optional[Number] = None


class VsBest(Part):
    improvement: Optional[Number] = None
    ci_low: Optional[Number] = None
    ci_high: Optional[Number] = None


class SweepPoint(Part):
    name: str
    kind: Literal["train", "merge"]
    params: dict[str, Any]
    model: str
    cost: dict[str, Any]
    domain: Optional[PointCell] = None
    general: Optional[PointCell] = None
    columns: dict[str, Cell] = {}
    pareto: Optional[bool] = None
    rank: Optional[Count] = None
    verdict: Optional[Status] = None
    failed_rules: list[str] = []
    vs_best: Optional[VsBest] = None
    non_inferior: Optional[bool] = None
    eligible: Optional[bool] = None


class SweepDoc(Artifact):
    """``sweep.json``: every point of a sweep with its cost, gains, verdict and rank, and the recommendation."""

    KIND: ClassVar[str] = "sweep"
    FILE: ClassVar[str] = "sweep.json"
    FIX: ClassVar[str] = "run `laf sweep` again to rewrite it (finished points are reused)"

    schema_: Literal["laf.sweep/1"] = Field("laf.sweep/1", alias="schema")
    name: str
    axes: dict[str, list[Any]]
    points: list[SweepPoint]
    recommendation: dict[str, Any]
    base_eval_time_s: Optional[Number] = None
    cost_method: str
    eval_time_method: str
    distributed: Optional[dict[str, Any]] = None
    winner: Optional[Winner] = None
    compare: str = "compare.json"
    frontier: Optional[dict[str, Any]] = None
    selection: Optional[dict[str, Any]] = None
    select: Optional[dict[str, Any]] = None


# ---------------------------------------------------------------- run.json


class RunVerdict(Part):
    model: str
    verdict: Status
    exit_code: ExitCode
    failed_rules: list[str]
    verdict_json: str


class RunDoc(Artifact):
    """``run.json``: what ``laf run`` did: the adapters, every candidate's verdict, the exit code, the stages."""

    KIND: ClassVar[str] = "run"
    FILE: ClassVar[str] = "run.json"
    FIX: ClassVar[str] = "run `laf run CONFIG` again to rewrite it (unchanged stages are skipped)"

    run_dir: str
    report: str
    adapters: list[str]
    resolved: list[dict[str, Any]]
    verdict: Optional[Status] = None
    verdicts: list[RunVerdict]
    exit_code: ExitCode
    exit_explanation: str
    stages_ran: list[str]
    stages_skipped: list[str]
    wall_time_s: Number
    history: Optional[dict[str, Any]] = None


# ---------------------------------------------------------------- curation.json (read, never a `laf schema` kind)


def _share(v: Any) -> Any:
    _finite(v)
    if not 0 <= v <= 1:
        raise ValueError(f"expected a share between 0 and 1, got {v!r}"[:120])
    return v


Share = Annotated[float, PlainValidator(_share), PlainSerializer(lambda v: v, return_type=Any), WithJsonSchema({"type": "number", "minimum": 0, "maximum": 1})]


class ContaminationSuite(OpenPart):
    """One suite's overlap with the training data (``harness.data.curate.contamination_check``)."""

    items: Count = 0
    contaminated_items: Count = 0
    share: Share = 0.0
    max_token_share: Optional[Share] = None

    @model_validator(mode="after")
    def _within(self) -> "ContaminationSuite":
        if self.contaminated_items > self.items:
            raise ValueError(f"contaminated_items ({self.contaminated_items}) is more than items ({self.items})")
        return self


class Contamination(OpenPart):
    """The contamination block the gate's ``max_contamination`` rule and the report read."""

    ngram: Optional[Count] = None
    suites: dict[str, ContaminationSuite] = {}
    skipped: list[str] = []
    contaminated_items: Optional[Count] = None
    contaminated_item_share: Share


class CurationDoc(Artifact):
    """``curation.json`` of ``laf data check|clean``: the fields a reader uses are typed (counts whole numbers >= 0,
    shares finite and within [0, 1], suites a mapping of mappings); every other key is kept as written. Not a
    ``laf schema`` kind: a curation manifest is a record of the data, not a decision."""

    model_config = ConfigDict(extra="allow", strict=True, populate_by_name=True)
    KIND: ClassVar[str] = "curation"
    FILE: ClassVar[str] = "curation.json"
    FIX: ClassVar[str] = "re-run `laf data check DATA --against SUITES` to rewrite it (a curation manifest is never edited by hand), or remove it"

    schema_: Optional[Literal["laf.curation/1"]] = Field(None, alias="schema")
    counts: dict[str, Count] = {}
    contamination: Optional[Contamination] = None
    fingerprints: dict[str, str] = {}


def read_curation(path: str | os.PathLike, *, symlinks: bool = True) -> dict:
    """``curation.json`` read like every artifact (bounded, a plain file, strict JSON, finite numbers) and checked
    to have the shape its readers use: one ``LafError`` naming the file and the field."""
    return read(path, CurationDoc, symlinks=symlinks).to_dict()


def check_contamination(block: Any, where: str = "the contamination record") -> dict:
    """A contamination block handed over as a dict (``evaluate_gate``'s callers), checked like ``curation.json``'s."""
    if isinstance(block, Contamination):
        return block.to_dict()
    return parse({"contamination": block}, CurationDoc, where).contamination.to_dict()  # type: ignore[union-attr]


# ---------------------------------------------------------------- results.json (its schema; the reader is ResultsDoc)


class MetricValue(OpenPart):
    value: Optional[Number] = None
    stderr: Optional[Number] = None
    n: Optional[Count] = None


class BaseModelDoc(OpenPart):
    spec: str = ""
    fingerprint: str
    kind: Optional[str] = None
    source: Optional[str] = None


class LoadDoc(OpenPart):
    precision: str


class ProvenanceDoc(OpenPart):
    base_model: BaseModelDoc
    load: LoadDoc
    batch_size: int
    max_length: int
    scoring_version: Optional[str] = None
    share_context: Optional[bool] = None
    cache: Optional[str] = None
    wall_time_s: Optional[Number] = None


class ModelDoc(OpenPart):
    kind: str
    identity: str = ""
    adapter: Optional[dict[str, Any]] = None
    requests: Optional[dict[str, Any]] = None


class ResultsSchema(Artifact):
    """``results.json`` as JSON Schema (``laf schema results``) and a second check of a document's shape; the typed
    reader every stage uses is :class:`harness.results.ResultsDoc` (:func:`harness.results.load_results`)."""

    model_config = ConfigDict(extra="allow", strict=True, populate_by_name=True)
    KIND: ClassVar[str] = "results"
    FILE: ClassVar[str] = "results.json"
    FIX: ClassVar[str] = "re-run the evaluation (`laf eval --out`) to rewrite it"

    schema_: Literal["laf.results/1"] = Field("laf.results/1", alias="schema")
    out: Optional[str] = None
    spec: Optional[dict[str, Any]] = None
    provenance: ProvenanceDoc
    models: dict[str, ModelDoc]
    suites: dict[str, dict[str, Any]]
    results: dict[str, dict[str, dict[str, MetricValue]]]
    breakdowns: dict[str, Any] = {}


KINDS: dict[str, type[Artifact]] = {m.KIND: m for m in (ResultsSchema, VerdictDoc, CompareDoc, SweepDoc, RunDoc, CalibrationDoc, ParityDoc, DiversityDoc)}


def json_schema(kind: str) -> dict:
    """The JSON Schema of an artifact kind (``laf schema KIND``); an unknown kind is a ``KeyError``."""
    model = KINDS[kind]
    schema = model.model_json_schema(by_alias=True, mode="validation")
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", "title": f"lost-and-found {model.FILE}",
            **{k: v for k, v in schema.items() if k != "title"}}


# ---------------------------------------------------------------- reading


def _reject_constant(name: str):
    raise ValueError(f"{name} is not a finite number (a non-finite number is not JSON)")


def _nonfinite(x: Any, where: str, depth: int = 0) -> str | None:
    """The first place in ``x`` holding a non-finite number (``1e999`` parses to infinity), or None."""
    if depth > MAX_DEPTH:
        raise LafError(f"{where}: nested more than {MAX_DEPTH} levels deep", "")
    if isinstance(x, float) and not math.isfinite(x):
        return where
    if isinstance(x, dict):
        for k, v in x.items():
            found = _nonfinite(v, f"{where}.{k}", depth + 1)
            if found:
                return found
    elif isinstance(x, list):
        for i, v in enumerate(x):
            found = _nonfinite(v, f"{where}[{i}]", depth + 1)
            if found:
                return found
    return None


def _loc(loc: tuple) -> str:
    out = ""
    for part in loc:
        part = part if isinstance(part, int) else str(part)[:80]  # a key of an untrusted document may be long
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out or "(the document)"


def parse(d: Any, kind: type[A], where: str) -> A:
    """``d`` (a decoded JSON value) as a ``kind``, or one ``LafError`` naming ``where``, the field and the fix."""
    try:
        bad = _nonfinite(d, "")
    except LafError as e:
        raise LafError(f"{where}: {e.cause}", kind.FIX) from None
    if bad is not None:
        raise LafError(f"{where}: field {bad.lstrip('.') or '(the document)'}: not a finite number (NaN or infinity)", kind.FIX)
    if not isinstance(d, dict):
        raise LafError(f"{where} is not a {kind.FILE} document: expected a JSON object, got {type(d).__name__}", kind.FIX)
    try:
        return kind.model_validate(d)
    except ValidationError as e:
        err = e.errors()[0]
        msg = str(err["msg"]).removeprefix("Value error, ")
        more = f" (and {e.error_count() - 1} more problem(s))" if e.error_count() > 1 else ""
        raise LafError(f"{where}: field {_loc(tuple(err['loc']))}: {msg}{more}", kind.FIX) from None


def read_raw(path: str | os.PathLike, fix: str, *, max_bytes: int = MAX_BYTES, symlinks: bool = True) -> Any:
    """A JSON file read with a size bound, refusing bare NaN/Infinity and nesting too deep: one ``LafError`` each."""
    path = Path(path)
    try:
        if not symlinks and path.is_symlink():
            raise LafError(f"{path} is a symlink, not a plain file", fix)
        if not path.exists():
            raise LafError(f"file not found: {path}", "check the path")
        if not path.is_file():
            raise LafError(f"{path} is not a plain file", fix)
        # opened without blocking (a FIFO swapped in after the check never hangs) and without following a link
        # swapped in (symlinks=False); what was opened is checked again to be a regular file of a bounded size
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | (0 if symlinks else getattr(os, "O_NOFOLLOW", 0))
        with open(path, "rb", opener=lambda p, _flags: os.open(p, flags)) as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):
                raise LafError(f"{path} is not a plain file", fix)
            if st.st_size > max_bytes:
                raise LafError(f"{path} is {st.st_size:,} bytes, larger than the {max_bytes:,} a laf artifact may be", fix)
            data = f.read(max_bytes + 1)
        if len(data) > max_bytes:  # grew while we read it
            raise LafError(f"{path} is larger than the {max_bytes:,} bytes a laf artifact may be", fix)
        return json.loads(data.decode("utf-8"), parse_constant=_reject_constant)
    except LafError:
        raise
    except RecursionError:
        raise LafError(f"{path} is nested too deeply to be a laf artifact", fix) from None
    except UnicodeDecodeError as e:
        raise LafError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})", fix) from None
    except json.JSONDecodeError as e:
        raise LafError(f"{path} is not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}", fix) from None
    except ValueError as e:
        raise LafError(f"{path}: {e}", fix) from None
    except OSError as e:
        raise LafError(f"{path} is unreadable: {e}", fix) from None


def read(path: str | os.PathLike, kind: type[A], *, symlinks: bool = True) -> A:
    """The artifact at ``path`` as a ``kind`` model: the one reader of every laf artifact (see the module doc)."""
    return parse(read_raw(path, kind.FIX, symlinks=symlinks), kind, str(path))
