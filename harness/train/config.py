"""The training config (``laf train CONFIG``), validated up front.

Relative input paths (``data.path``, ``data.eval_path``) resolve against the
config file's folder; output folders (``registry``, ``output_dir``) against
the current folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from .. import defaults
from ..config import StrictModel as Strict  # one strict base for every config model
from ..config import check_device
from ..registry import check_registry_name

MAX_STEPS = 10_000_000  # optimizer steps: far beyond any LoRA run, small enough to count
MAX_SEED = 2**32 - 1


class DataConfig(Strict):
    path: str
    schema_: Literal["auto", "alpaca", "prompt_completion", "chat"] = Field("auto", alias="schema")
    format: Literal["auto", "jsonl", "json", "csv", "parquet", "datasets"] = "auto"
    eval_path: str | None = None
    eval_fraction: float = Field(0.05, ge=0.0, lt=1.0)
    eval_max: int = Field(200, ge=0, le=1_000_000)

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class LoraSettings(Strict):
    r: int = Field(8, gt=0, le=4096, description="LoRA rank")
    alpha: float = Field(16, gt=0, le=1e6)
    dropout: float = Field(0.05, ge=0.0, lt=1.0)
    target_modules: str | list[str] = "all-linear"
    rslora: bool = False
    dora: bool = False
    bias: Literal["none", "all", "lora_only"] = "none"


class OptimSettings(Strict):
    lr: float = Field(2e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0, le=10)
    betas: tuple[Annotated[float, Field(ge=0, lt=1)], Annotated[float, Field(ge=0, lt=1)]] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0, le=1)
    scheduler: Literal["cosine", "linear", "constant"] = "cosine"
    warmup_steps: int | None = Field(None, ge=0, le=MAX_STEPS)
    warmup_ratio: float = Field(0.03, ge=0, le=1)
    min_lr_ratio: float = Field(0.0, ge=0, le=1)
    grad_clip: float | None = Field(1.0, gt=0, le=1e6)
    paged: Literal["auto", True, False] = "auto"


class PreferenceSettings(Strict):
    """DPO/ORPO/SimPO settings (TRL's names and defaults). ``beta`` is ORPO's lambda."""

    beta: float = 0.1
    loss: Literal["sigmoid", "ipo"] = "sigmoid"  # DPO only
    label_smoothing: float = Field(0.0, ge=0.0, lt=0.5)
    simpo_gamma: float = Field(0.5, ge=0.0)
    sft_weight: float = Field(0.0, ge=0.0, description="SimPO: weight of an NLL term on chosen (TRL's cpo_alpha)")
    ref_cache: str = f"{defaults.OUT_ROOT}/cache/ref_logps"

    @field_validator("beta")
    @classmethod
    def _beta(cls, v: float) -> float:
        if not v > 0 or v != v or v == float("inf"):
            raise ValueError(f"beta must be a finite number > 0 (got {v}); TRL's default is 0.1")
        return v


class ReplaySettings(Strict):
    """``preserve.replay``: general-purpose sequences mixed into the training stream at ``ratio`` of its tokens
    (loss on every replay token). ``source: self`` has the base model write them (continuations sampled from the
    base on the package's pool of neutral openings, cached per base, precision, pool, sampling settings and count);
    a path takes the user's own general text (``.txt``: one passage per paragraph; ``.jsonl`` with a ``text``
    field) or instruction file (prompt and response both trained on)."""

    source: str = Field("self", min_length=1, max_length=4096)
    ratio: float = Field(0.25, ge=0.0, le=0.9, description="share of the training tokens that are replay")
    count: int = Field(128, ge=1, le=100_000, description="self: sequences generated (each used as often as the ratio needs)")
    max_new_tokens: int = Field(80, ge=8, le=2048)
    temperature: float = Field(1.0, gt=0, le=10)
    top_p: float = Field(0.95, gt=0, le=1)
    seed: int = Field(0, ge=0, le=MAX_SEED)
    against: list[str] | None = Field(None, description="suites the replay is checked against (laf run: its eval suites; default: every known suite)")
    ngram: int = Field(13, ge=4, le=1000)


class KLSettings(Strict):
    """``preserve.kl``: ``weight * KL(p_base || p_adapted)`` per token, the base being the same model with the
    adapter switched off (no second copy), on the replay tokens, the training tokens, or all supervised tokens."""

    weight: float = Field(ge=0.0, le=1e4)
    on: Literal["replay", "train", "all"] = "all"

    @model_validator(mode="before")
    @classmethod
    def _yaml_on(cls, v):
        # YAML 1.1 reads a bare `on:` key as the boolean True; the key is still meant as "on"
        if isinstance(v, dict) and True in v and "on" not in v:
            v = {("on" if k is True else k): x for k, x in v.items()}
        return v


class PreserveSettings(Strict):
    """``preserve:``: forgetting control, every part off by default and recorded in the adapter's identity."""

    replay: ReplaySettings | None = None
    self_distill: bool = False
    distill_max_new_tokens: int = Field(160, ge=8, le=4096)
    kl: KLSettings | None = None

    @property
    def active(self) -> bool:
        return bool(self.replay is not None or self.self_distill or (self.kl is not None and self.kl.weight > 0))


IDENTITY_KEYS = ("name", "model", "precision", "data", "registry", "output_dir")  # what a run is, not how it trains


class TrainSettings(Strict):
    """How an adapter trains: everything under ``train:`` of a run config (the flat training file has the same keys
    at its top level, beside the identity keys :data:`IDENTITY_KEYS`)."""

    method: Literal["lora", "full"] = Field("lora", description="lora: a LoRA/QLoRA adapter on the frozen base; full: every weight "
                                            "trained (full fine-tuning, precision fp32 or bf16), registered as a whole model folder")
    objective: Literal["sft", "dpo", "orpo", "simpo"] = "sft"
    preference: PreferenceSettings = PreferenceSettings()
    init_from: str | None = Field(None, description="NAME@VERSION of a registered adapter to start from (the DPO reference)")
    compute_dtype: Literal["fp32", "bf16"] | None = None
    device: str = "auto"

    @field_validator("device")
    @classmethod
    def _known_device(cls, v: str) -> str:
        return check_device(v)

    allow_pickle: bool = False
    trust_remote_code: bool = False
    max_length: int = Field(512, ge=8, le=1 << 20)
    packing: bool = True
    chat_template: Literal["auto", True, False] = "auto"
    lora: LoraSettings = LoraSettings()
    optim: OptimSettings = OptimSettings()
    preserve: PreserveSettings = PreserveSettings()
    batch_size: int = Field(4, gt=0, le=4096)
    grad_accum: int = Field(1, gt=0, le=65536)
    max_steps: int | None = Field(None, gt=0, le=MAX_STEPS)
    epochs: float = Field(1.0, gt=0, le=10_000)
    eval_every: int = Field(50, ge=0, le=MAX_STEPS)
    save_every: int = Field(50, ge=0, le=MAX_STEPS)
    keep_checkpoints: int = Field(2, ge=1, le=1000)
    seed: int = Field(0, ge=0, le=MAX_SEED)  # torch generators take 64 bits; the split adds to it
    gradient_checkpointing: Literal["auto", True, False] = "auto"
    mixed_precision: Literal["auto", "bf16", "fp16", "no"] = "auto"
    description: str = ""

    @model_validator(mode="before")
    @classmethod
    def _no_identity(cls, v):
        # under a run config's train:, an identity key used to be silently overwritten by the top-level one
        if cls is TrainSettings and isinstance(v, dict):
            found = [k for k in IDENTITY_KEYS if k in v]
            if found:
                raise ValueError(f"{', '.join(found)} {'is' if len(found) == 1 else 'are'} the run's identity, not training settings: "
                                 f"write {' and '.join(f'{k}:' for k in found)} at the top level of the run config, not under train:")
        return v

    @model_validator(mode="after")
    def _check_settings(self):
        if self.init_from is not None:
            from ..registry import AdapterRef

            AdapterRef.parse(self.init_from)
        p = self.preserve
        if self.method == "full":
            if self.objective != "sft" or self.init_from:
                raise ValueError("method: full supports objective: sft from the base (no init_from): the preference objectives' reference "
                                 "and init_from are LoRA adapters on the frozen base")
            if p.kl is not None and p.kl.weight > 0:
                raise ValueError("preserve.kl reads the base by switching the adapter off; method: full changes the base's own weights, so there "
                                 "is no adapter to switch off. Use preserve.replay with method: full")
        if p.self_distill and self.objective != "sft":
            raise ValueError(f"preserve.self_distill rewrites SFT responses: it works with objective: sft; objective is {self.objective} (its chosen and rejected answers are the "
                             "signal). Use preserve.replay and preserve.kl with a preference objective, or self_distill on the SFT adapter it starts from")
        if p.kl is not None and p.kl.on == "replay" and (p.replay is None or p.replay.ratio == 0):
            raise ValueError("preserve.kl.on: replay needs replay tokens: set preserve.replay (ratio > 0) or kl.on: train/all")
        return self


class TrainConfig(TrainSettings):
    """The trainer's config: the identity of the adapter (name, model, precision, data, registry, output_dir) and its
    :class:`TrainSettings`. The flat training file (``laf train FILE``) is this model; a run config builds it with
    :meth:`build` from its top-level identity and its ``train:`` settings."""

    name: str
    model: str = "default"
    precision: Literal["nf4", "bf16", "fp32"] = "nf4"
    data: DataConfig
    registry: str = defaults.REGISTRY
    output_dir: str | None = None

    _name_check = field_validator("name")(classmethod(lambda cls, v: check_registry_name(v)))

    @model_validator(mode="after")
    def _check(self):
        if self.compute_dtype and self.precision != "nf4":
            raise ValueError("compute_dtype only applies to precision: nf4")
        if self.method == "full" and self.precision == "nf4":
            raise ValueError("method: full trains every weight, and 4-bit weights cannot be trained: set precision: fp32 or bf16 "
                             "(nf4 is QLoRA, method: lora)")
        return self

    @classmethod
    def build(cls, settings: TrainSettings, *, name: str, data: DataConfig, model: str = "default", precision: str = "nf4",
              registry: str = defaults.REGISTRY, output_dir: str | None = None) -> TrainConfig:
        """The one place a trainer config is made from identity and settings: the settings' own objects (``lora``,
        ``optim``, ...) are carried over as they are, never through a dict (pydantic keeps a model instance it is given),
        and the cross-checks that need both halves (precision vs method and compute_dtype) run here."""
        fields = {k: getattr(settings, k) for k in TrainSettings.model_fields if k in settings.model_fields_set}
        return cls(**fields, name=name, model=model, precision=precision, data=data, registry=registry, output_dir=output_dir)  # type: ignore[arg-type]

    def run_dir(self) -> Path:
        return Path(self.output_dir) if self.output_dir else Path(defaults.OUT_ROOT) / "train" / self.name

    def math_dict(self) -> dict:
        """Settings that change the numbers: a checkpoint made under other values cannot be resumed."""
        d = self.model_dump(mode="json", by_alias=True)
        for k in ("eval_every", "save_every", "keep_checkpoints", "registry", "output_dir", "description"):
            d.pop(k, None)
        if self.method == "lora":
            d.pop("method")  # adapters trained before method: existed keep their identity
        else:
            d.pop("lora")  # not used by full fine-tuning
        d.get("preference", {}).pop("ref_cache", None)
        if not self.preserve.active:
            d.pop("preserve", None)  # adapters trained before preserve: existed keep their identity
        elif d["preserve"].get("replay"):
            d["preserve"]["replay"].pop("against", None)  # what it is checked against is recorded in the manifest
        return d
