"""The merge config (``laf merge CONFIG``), validated up front.

Minimal::

    name: m
    method: slerp
    adapters: [a@1, b@1]
    t: 0.5

The schema (pydantic, ``extra="forbid"``) catches typos and types; the rules
that depend on the method (``slerp`` needs ``t`` and exactly two inputs,
``ties`` needs ``density`` ...) are checked by :func:`check_method_params`,
which names the key and what it expects. Both run before any weight is read.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Literal, Union

from pydantic import ConfigDict, Field, field_validator

from .. import defaults
from ..config import StrictModel
from ..errors import ConfigError
from ..registry import AdapterRef, check_registry_name

# method -> one-line definition (docs/merging.md and `laf merge --help` show the same words)
METHODS: dict[str, str] = {
    "linear": "lambda * sum_i w_i dW_i / sum_i w_i (normalize: true by default)",
    "task_arithmetic": "lambda * sum_i w_i dW_i (linear with normalize: false by default)",
    "slerp": "spherical interpolation of two task vectors dW_0 -> dW_1 at t (lerp when nearly colinear)",
    "ties": "trim each dW_i to its top-`density` magnitudes, elect the sign of sum_i w_i dW_i, mean of the agreeing entries",
    "dare_linear": "drop each entry of dW_i with probability 1 - density (seeded), rescale, weighted sum",
    "dare_ties": "DARE drop and rescale, then TIES sign election and disjoint sum",
    "model_stock": "t * mean_i dW_i with t = N cos / (1 + (N - 1) cos), cos = mean pairwise cosine",
    "cat": "exact: the adapters' B (times w_i * scale_i) and A stacked, rank = sum of ranks",
}
# mergekit's defaults for `normalize` (generalized task arithmetic) and ours for linear
DEFAULT_NORMALIZE = {"linear": True, "task_arithmetic": False, "ties": True, "dare_linear": False, "dare_ties": False, "cat": False}
WEIGHTED = tuple(DEFAULT_NORMALIZE)
SPARSE = ("ties", "dare_linear", "dare_ties")  # results with no low-rank structure
COMBINATIONS = ("linear", "task_arithmetic", "slerp", "model_stock", "cat")  # results = sum_i c_i dW_i
# Above this relative error (max over modules) a merged adapter is an approximation of its method: `laf merge`
# warns, and the gate, compare and the report mark the candidate "approximate merge".
APPROXIMATE_MERGE = 0.05


class Strict(StrictModel):  # the project's strict base (no YAML yes/no where a number goes), by field or alias
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, populate_by_name=True)


class TCondition(Strict):
    """One entry of a filtered ``t`` (mergekit's gradient syntax): the first matching filter wins."""

    filter: str | None = Field(None, description="substring of the module name, e.g. self_attn or mlp; none = every module")
    value: Union[float, list[float]]


TSetting = Union[float, list[float], list[TCondition]]


MAX_SCALE = 1000.0  # |weight| and |lambda|: beyond this a merge of real updates overflows float32 or means a typo
# The most adapters one merge takes (docs/merging.md). Memory, time and the exact output's rank (the sum of the
# inputs' ranks) grow with every input; no real merge needs more, and a merge of merges combines larger groups.
MAX_INPUTS = 64


class AdapterInput(Strict):
    ref: str
    weight: float | None = None


class OutputConfig(Strict):
    kind: Literal["adapter", "model"] = "adapter"
    # adapter output
    rank: int | Literal["exact"] | None = Field(None, description="'exact' (the default for linear, task_arithmetic, slerp, model_stock "
                                                 "and cat: rank = sum of ranks, no error) or the rank of a truncated re-factoring "
                                                 "(the relative error is recorded); ties/dare need a number")
    # model output
    path: str | None = None
    dtype: Literal["bf16", "fp32"] = "bf16"
    base_weights: Literal["auto", "original", "nf4_dequantized"] = "auto"

    @field_validator("rank")
    @classmethod
    def _rank(cls, v):
        if isinstance(v, int) and not 0 < v <= 65536:
            raise ValueError("must be an integer in 1..65536 or 'exact'")
        return v


class MergeConfig(Strict):
    name: str
    method: str
    adapters: list[Union[str, AdapterInput]] = Field(..., min_length=1)
    weights: list[float] | None = None
    normalize: bool | None = None
    lambda_: float = Field(1.0, alias="lambda")
    t: TSetting | None = None
    density: float | None = None
    rescale: Literal["density", "l1", "none"] = "density"
    seed: int = Field(0, ge=0, le=2**32 - 1)
    registry: str = defaults.REGISTRY
    model: str | None = Field(None, description="where the base is for model outputs (default: the spec the parents recorded); its fingerprint must match")
    output: OutputConfig = OutputConfig()
    description: str = ""

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        name, _, version = v.partition("@")
        check_registry_name(name)
        if version and not (version.isascii() and version.isdigit()):
            raise ValueError("a version after '@' must be a number (e.g. m@2), or leave it out to take the next version")
        return v

    @field_validator("adapters", mode="before")
    @classmethod
    def _adapters(cls, v):
        if isinstance(v, (list, tuple)) and len(v) > MAX_INPUTS:  # before a single entry is validated or loaded
            raise ValueError(f"a merge takes at most {MAX_INPUTS} adapters, got {len(v)}; merge them in groups of up to {MAX_INPUTS} "
                             "and merge the results (docs/merging.md)")
        return v

    @field_validator("method")
    @classmethod
    def _method(cls, v: str) -> str:
        if v not in METHODS:
            raise ValueError(f"unknown merge method {v!r}; known: {', '.join(METHODS)}")
        return v

    # -- derived views
    def target(self) -> AdapterRef:
        """The registry name (and version, when pinned) the merged adapter gets."""
        return AdapterRef.parse(self.name)

    def inputs(self) -> list[AdapterInput]:
        return [a if isinstance(a, AdapterInput) else AdapterInput(ref=a) for a in self.adapters]

    def input_weights(self) -> list[float]:
        per_input = [a.weight for a in self.inputs()]
        if self.weights is not None:
            return list(self.weights)
        return [1.0 if w is None else w for w in per_input]

    def output_rank(self) -> int | Literal["exact"]:
        """The rank the adapter output gets: the number given, else "exact" (combinations; sparse methods
        are refused by :func:`check_method_params` without a number)."""
        r = self.output.rank
        return "exact" if r is None else r

    def normalized(self) -> bool:
        return DEFAULT_NORMALIZE.get(self.method, False) if self.normalize is None else self.normalize

    def params(self) -> dict:
        """The parameters that define the merged numbers (recorded in the lineage)."""
        p: dict = {"method": self.method}
        if self.method in WEIGHTED:
            p.update(weights=self.input_weights(), normalize=self.normalized(), **{"lambda": self.lambda_})
        if self.method == "slerp":
            p["t"] = _dump_t(self.t)
        if self.method in SPARSE:
            p["density"] = self.density
        if self.method.startswith("dare"):
            p.update(rescale=self.rescale, seed=self.seed)
        return p


def _dump_t(t):
    if isinstance(t, list) and t and isinstance(t[0], TCondition):
        return [c.model_dump(mode="json") for c in t]
    return t


def _t_values(t) -> list[float]:
    if isinstance(t, (int, float)):
        return [float(t)]
    out: list[float] = []
    for x in t:
        if isinstance(x, TCondition):
            out += _t_values(x.value)
        else:
            out.append(float(x))
    return out


def check_method_params(cfg: MergeConfig, source: str | Path = "<merge config>") -> None:
    """The rules that depend on the method; each error names file, key and expectation."""
    m = cfg.method
    n = len(cfg.adapters)

    def bad(key: str, problem: str, fix: str | None = None):
        raise ConfigError(source, key, problem, fix)

    per_input = [a.weight for a in cfg.inputs() if a.weight is not None]
    if per_input and cfg.weights is not None:
        bad("weights", "weights are given both per adapter ({ref, weight}) and as a `weights` list", "use one of the two")
    if m in WEIGHTED:
        w = cfg.input_weights()
        if len(w) != n:
            bad("weights", f"{len(w)} weights for {n} adapters", "give one weight per adapter")
        if all(x == 0 for x in w):
            bad("weights", "every weight is 0, so the merge is empty", "give at least one non-zero weight")
        if cfg.normalized() and abs(sum(w)) < 1e-8:
            bad("weights", f"the weights {w} sum to zero, and {m} with normalize: true divides by their sum",
                "change the weights, or set normalize: false (plain task arithmetic)")
    else:
        if cfg.weights is not None or per_input:
            bad("weights", f"{m} takes no weights", "remove them" + (" (slerp takes t)" if m == "slerp" else ""))
        if cfg.normalize is not None:
            bad("normalize", f"{m} has no normalize setting", "remove it")
        if cfg.lambda_ != 1.0:
            bad("lambda", f"{m} has no lambda setting", "remove it")
    if m == "slerp":
        if n != 2:
            bad("adapters", f"slerp interpolates between exactly two adapters, got {n}", "list two adapters (t = 0 gives the first, t = 1 the second)")
        if cfg.t is None:
            bad("t", "slerp needs t (0 = first adapter, 1 = second)", "add e.g. t: 0.5, or a list over layer depth such as t: [0, 0.5, 1]")
        vals = _t_values(cfg.t)
        if not vals:
            bad("t", "t is an empty list", "give a number or a non-empty list")
        out = [v for v in vals if not 0.0 <= v <= 1.0]
        if out:
            bad("t", f"t must lie in [0, 1], got {out[0]}", "use values between 0 and 1")
        if isinstance(cfg.t, list) and cfg.t and isinstance(cfg.t[0], TCondition) and not any(c.filter in (None, "*") for c in cfg.t):
            bad("t", "no entry without a filter, so modules matching no filter would have no t",
                "end the list with a default, e.g. - value: 0.5")
    elif cfg.t is not None:
        bad("t", f"{m} takes no t (only slerp does)", "remove it")
    if m in SPARSE:
        if cfg.density is None:
            bad("density", f"{m} needs density (the fraction of entries each task vector keeps)", "add e.g. density: 0.5")
        if not 0.0 < cfg.density <= 1.0:
            bad("density", f"density must be in (0, 1], got {cfg.density}", "use e.g. density: 0.5")
    elif cfg.density is not None:
        bad("density", f"{m} takes no density", "remove it")
    for key in ("rescale", "seed"):
        if key in cfg.model_fields_set and not m.startswith("dare"):
            bad(key, f"{key} applies to dare_linear / dare_ties only, not {m}", "remove it")
    if m == "model_stock" and n < 2:
        bad("adapters", f"model_stock needs at least two adapters, got {n}", "list two or more")
    if not math.isfinite(cfg.lambda_) or abs(cfg.lambda_) > MAX_SCALE:
        bad("lambda", f"lambda must be a finite number within +-{MAX_SCALE:g}, got {cfg.lambda_}")
    for i, w in enumerate(cfg.input_weights() if m in WEIGHTED else []):
        if not math.isfinite(w) or abs(w) > MAX_SCALE:
            bad("weights", f"weight {i} is {w}: a weight must be a finite number within +-{MAX_SCALE:g} (it scales an update; larger ones overflow)",
                "use weights of the order of 1")
    o = cfg.output
    if o.kind == "model":
        if not o.path:
            bad("output.path", "a model output needs a folder path", "add output.path: merged-model")
        if o.rank is not None:
            bad("output.rank", "rank applies to adapter outputs only (a model output holds the exact merged weights)", "remove output.rank")
    else:
        if o.path is not None:
            bad("output.path", "an adapter output is registered in the registry, not written to a path",
                "remove output.path (set `registry:` for another registry), or set output.kind: model")
        if m == "cat" and o.rank not in (None, "exact"):
            bad("output.rank", f"cat is exact: its rank is the sum of the input ranks, so rank {o.rank} cannot be honoured",
                "remove output.rank, or use method: linear (weights, normalize: false) with rank to truncate")
        if m in SPARSE and o.rank in (None, "exact"):
            bad("output.rank", f"{m} produces an update with no low-rank structure, so it has no exact LoRA form"
                + ("" if o.rank else " and an adapter output needs a rank"),
                "give a number (the re-factored rank; the relative error is recorded and shown), or use output.kind: model")
    for key in ("dtype", "base_weights"):
        if key in o.model_fields_set and o.kind != "model":
            bad(f"output.{key}", f"{key} applies to model outputs only", "remove it or set output.kind: model")
