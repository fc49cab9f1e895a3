"""The run config of ``laf run``: its schema, loading, and every check that can run before a stage starts."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import Field, PrivateAttr, ValidationError, field_validator

from .. import defaults
from ..config import StrictModel, apply_overrides, error_lines, load_yaml, resolve_path, validate
from ..config_schema import TRAIN_SETTING_KEYS, check_shape
from ..errors import ConfigError, LafError
from ..merge.config import MergeConfig
from ..train.config import DataConfig, TrainConfig, TrainSettings


class RunCurate(StrictModel):
    enabled: bool = True
    near_duplicate_threshold: float = Field(0.8, gt=0, le=1)
    ngram: int = Field(13, ge=4, le=1000)
    drop_contaminated: bool = True


class RunEval(StrictModel):
    suites: list[str | dict] = Field(min_length=1)

    @field_validator("suites")
    @classmethod
    def _suites(cls, v: list) -> list:
        for i, s in enumerate(v):
            if not isinstance(s, dict):
                continue
            extra = sorted(set(s) - {"suite", "limit"})
            if extra:
                raise ValueError(f"entry {i}: unknown key(s) {', '.join(map(str, extra))} (allowed: suite, limit)")
            if not isinstance(s.get("suite"), str) or not s["suite"]:
                raise ValueError(f"entry {i}: 'suite' must be a suite name or file")
            lim = s.get("limit")
            if lim is not None and (isinstance(lim, bool) or not isinstance(lim, int) or not 1 <= lim <= 10**9):
                raise ValueError(f"entry {i}: 'limit' must be a whole number in 1..1000000000, got {str(lim)[:40]}")
        return v
    batch_size: int = Field(8, gt=0, le=4096)
    max_length: int = Field(defaults.MAX_LENGTH, ge=8, le=defaults.MAX_TOKENS)
    limit: int | None = Field(None, gt=0, le=10**9)
    cache: str | None = None
    data_dir: str | None = None


class RunGate(StrictModel):
    policy: str | dict
    inconclusive: Literal["inconclusive", "fail", "pass"] = "inconclusive"
    # base: each candidate against the base model; released: against the last released version of its adapter name
    # in the release history (re-scored next to it on the same items when its recorded records cannot be used)
    baseline: Literal["base", "released"] = "base"
    sign: str | None = Field(None, min_length=1, max_length=4096, description="an Ed25519 private key (`laf keygen`): each verdict gets a .sig beside it")


class RunParity(StrictModel):
    """``parity:``: ``laf parity`` on one candidate (default: the first) into ``eval/parity/`` before the gate."""

    adapter: str | None = None
    forms: list[Literal["merged", "merged_nf4", "merged_original"]] = Field(default_factory=lambda: ["merged", "merged_nf4"], min_length=1)
    limit: int | None = Field(None, gt=0)
    dtype: Literal["fp32", "bf16"] = "fp32"
    base_weights: Literal["auto", "original", "nf4_dequantized"] = "auto"


class RunDiversity(StrictModel):
    """``diversity:``: after evaluation, how alike the candidates are and which pairs should merge well (``laf diversity``
    on the run's records), into ``eval/diversity.json`` and the report. Prediction space is always measured."""

    enabled: bool = True
    weight_space: bool = True  # task-vector cosines etc. of the candidates' adapter files (no model load)
    function_space: bool = False  # CKA / KL / merge-vs-ensemble gap on a probe set (loads the base once)
    probe_suite: str | None = None  # default: the first domain suite run
    probe_n: int = Field(32, ge=4, le=100_000)
    min_items: int = Field(20, ge=1, le=10**9)
    per_module: bool = False


class RunSelect(StrictModel):
    """``select:``: checkpoint selection on one split of the gated suites, the verdict on the other
    (``harness/pipeline/select.py``)."""

    every: int = Field(gt=0, le=10_000_000, description="steps between candidate snapshots (the last step is always one)")
    fraction: float = Field(0.4, gt=0, lt=1, description="share of each gated suite's items in the selection split")
    seed: int = Field(0, ge=0, le=2**32 - 1)
    split: str | None = Field(None, description="a JSON file {suite: {selection: [index...], confirmation: [index...]}} instead of a seeded split")
    by: Literal["pass_chance", "rules"] = Field(
        "pass_chance", description="pass_chance: the snapshot most likely to pass every required rule on the confirmation split, predicted "
        "from its selection-split estimates and CIs; rules: most required rules passing on the selection split, then the largest primary gain")


class RunConfig(StrictModel):
    name: str
    model: str = "default"
    precision: Literal["nf4", "bf16", "fp32"] = "nf4"
    data: DataConfig | None = None  # the trainer's data settings (eval split etc.); the path is curated first
    curate: RunCurate = RunCurate()
    train: TrainSettings = TrainSettings()  # how the adapter trains; its identity (name, model, precision, data, registry) is above
    adapters: list[str] = []
    merge: list[MergeConfig] = []  # laf merge configs (adapter outputs); each merged adapter joins the candidates
    eval: RunEval
    parity: RunParity | None = None
    diversity: RunDiversity | None = None
    gate: RunGate | None = None
    select: RunSelect | None = None
    registry: str = defaults.REGISTRY
    out_root: str = defaults.OUT_ROOT
    # the release history every run is recorded in: a SQLite path, sqlite:///PATH or postgresql://...; 'off': none.
    # Default: LAF_HISTORY_URL, else <out_root>/history.sqlite
    history: str | None = Field(None, min_length=1, max_length=4096)
    # problems of train: and merge: found while loading, reported by validate_run with every other problem
    _problems: list[str] = PrivateAttr(default_factory=list)
    _invalid_merges: int = PrivateAttr(0)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        from ..io import check_name

        return check_name(v, "the run name")  # the run folder is out_root/<name>: never a path

    @field_validator("adapters")
    @classmethod
    def _adapters(cls, v: list[str]) -> list[str]:
        from ..registry import AdapterRef

        for ref in v:
            try:
                AdapterRef.parse(ref)
            except LafError as e:
                raise ValueError(e.cause) from None
        return v

    def train_config(self, data: DataConfig, output_dir: str | None = None) -> TrainConfig:
        """The trainer's config of this run: its identity (name, model, precision, registry), ``data`` and ``train:``."""
        if self._problems:  # never train on the defaults that stand in for a train: that did not validate
            raise LafError(f"the run config has problems: {'; '.join(self._problems[:3])}", "fix them (`laf run` lists them all)")
        return TrainConfig.build(self.train, name=self.name, model=self.model, precision=self.precision, data=data,
                                 registry=self.registry, output_dir=output_dir)

    def merge_configs(self) -> list[MergeConfig]:
        """``merge:``, each registering into the run's registry unless it names its own."""
        return [m if "registry" in m.model_fields_set else m.model_copy(update={"registry": self.registry}) for m in self.merge]

    def policy_source(self) -> str:
        return str(self.gate.policy) if self.gate and isinstance(self.gate.policy, str) else "inline (config gate.policy)"


def suite_refs(cfg: RunConfig, base: Path) -> tuple[list[str], dict[str, int]]:
    """Suite references (YAML paths resolved against the config's folder) and per-suite limits."""
    refs, limits = [], {}
    for s in cfg.eval.suites:
        if isinstance(s, dict):
            ref, lim = s.get("suite"), s.get("limit")
        else:
            ref, lim = s, None
        p = resolve_path(ref, base) if ref and ref.endswith((".yaml", ".yml")) else None
        ref = str(p) if p is not None and p.exists() else ref
        refs.append(ref)
        if lim:
            limits[ref] = int(lim)
    return refs, limits


def run_overrides(overrides: list[str] | None, top_level: set[str]) -> list[str]:
    """``--set`` paths for a run-shaped config. The rule, the same for ``laf train``, ``laf run`` and sweep axes: a
    path is the YAML's own dotted path (``train.lora.r``, ``eval.limit``, ``name``), and a training setting may
    leave out its ``train.`` (``lora.r``, as in a flat training file): no run config has a top-level key of that
    name, so the short path means one thing only."""
    out = []
    for item in overrides or []:
        key = item.split("=", 1)[0].strip() if "=" in item else ""
        head = key.split(".", 1)[0]
        if head and head not in top_level and head in TRAIN_SETTING_KEYS:
            item = f"train.{item.lstrip()}"
        out.append(item)
    return out


def load_run_config(path: str | Path, overrides: list[str] | None = None, command: str = "laf run") -> tuple[RunConfig, Path]:
    """The validated run config and the folder its relative paths resolve against (``command``: who asks, named
    when the file is of another shape)."""
    path = Path(path)
    raw = load_yaml(path)
    check_shape(raw, ("run",), path, command, sorted(RunConfig.model_fields))
    raw = apply_overrides(raw, run_overrides(overrides, set(RunConfig.model_fields)))
    return validate_deferred(RunConfig, raw, path), path.resolve().parent


def validate_deferred(model: type[RunConfig], raw: Any, path: Path):
    """``raw`` validated as ``model``; problems only under ``train:`` and ``merge:`` are kept on the config for
    :func:`validate_run`, which reports them together with every problem it finds (missing data, unknown suites,
    policy rules...), as before any stage starts. Any other problem raises here, every one listed."""
    try:
        return model.model_validate(raw)
    except ValidationError as e:
        if not isinstance(raw, dict) or any(not err["loc"] or err["loc"][0] not in ("train", "merge") for err in e.errors()):
            validate(model, raw, path)  # raises with every problem listed
            raise
        problems = error_lines(model, e)
    merges = raw.get("merge") if isinstance(raw.get("merge"), list) else []
    valid = []
    for m in merges:
        try:
            valid.append(MergeConfig.model_validate(m))
        except ValidationError:
            pass
    rest = {k: v for k, v in raw.items() if k not in ("train", "merge")}
    try:
        cfg = model.model_validate({**rest, "merge": valid})
    except ValidationError:
        validate(model, raw, path)
        raise
    cfg._problems, cfg._invalid_merges = problems, len(merges) - len(valid)
    return cfg


def _rebase(value: Any, base: Path, must_exist: bool) -> Any:
    """``value`` made absolute against ``base`` when it is a relative path (that exists there, if ``must_exist``)."""
    if not isinstance(value, str) or not value:
        return value
    p = Path(value).expanduser()
    if p.is_absolute():
        return str(p)
    q = (base / p).resolve()
    return str(q) if (q.exists() or not must_exist) else value


def saved_config_text(cfg: StrictModel, base: Path) -> str:
    """The run config as it ran (with ``--set`` overrides), every config-relative path made absolute, so that
    ``laf run RUN_DIR/config.yaml`` re-runs it from anywhere: the original's relative paths resolved against
    the original file's folder, and a copy in the run folder would resolve them against the run folder."""
    import yaml

    d = cfg.model_dump(mode="json", by_alias=True, exclude_unset=True)
    if isinstance(d.get("data"), dict):
        for key in ("path", "eval_path"):
            d["data"][key] = _rebase(d["data"].get(key), base, False) if d["data"].get(key) else d["data"].get(key)
    ev = d.get("eval")
    if isinstance(ev, dict) and isinstance(ev.get("suites"), list):
        ev["suites"] = [({**s, "suite": _rebase(s.get("suite"), base, True)} if isinstance(s, dict) and str(s.get("suite", "")).endswith((".yaml", ".yml"))
                         else _rebase(s, base, True) if isinstance(s, str) and s.endswith((".yaml", ".yml")) else s) for s in ev["suites"]]
    if isinstance(d.get("gate"), dict):
        for key in ("policy", "sign"):
            if isinstance(d["gate"].get(key), str):
                d["gate"][key] = _rebase(d["gate"][key], base, False)
    if isinstance(d.get("select"), dict) and d["select"].get("split"):
        d["select"]["split"] = _rebase(d["select"]["split"], base, False)
    train = d.get("train")
    if isinstance(train, dict):
        replay = ((train.get("preserve") or {}).get("replay") or {}) if isinstance(train.get("preserve"), dict) else {}
        if isinstance(replay, dict) and replay.get("source") not in (None, "self"):
            replay["source"] = _rebase(replay["source"], base, True)
    return "# saved by laf: the config this run ran with, its relative paths made absolute\n" + yaml.safe_dump(d, sort_keys=False, allow_unicode=True)


def validate_run(cfg: RunConfig, base: Path, config_path: Path):
    """Everything that can be checked before a stage starts, reported together; returns (suites, policy)."""
    from ..gate.policy import Policy, load_policy
    from ..suites import load_suite

    problems: list[str] = list(cfg._problems)
    if cfg.data is None and not cfg.adapters and not cfg.merge and not cfg._invalid_merges:
        problems.append("nothing to evaluate against the base: give 'data' (to train an adapter) or 'adapters' (registered ones)")
    if cfg.data is not None:
        p = resolve_path(cfg.data.path, base)
        if not p.exists():
            problems.append(f"key 'data.path': file not found: {p}")
        if not any(line.startswith("key 'train") for line in cfg._problems):
            try:  # the checks that need identity and settings together (precision vs method, compute_dtype)
                cfg.train_config(cfg.data.model_copy(update={"path": str(p)}))
            except ValidationError as e:
                for err in e.errors():
                    key = ".".join(str(x) for x in err["loc"])
                    problems.append(f"key '{key}': {err['msg']}" if key == "name" else f"key 'train': {err['msg']}" if not key else f"key 'train.{key}': {err['msg']}")
    refs, _ = suite_refs(cfg, base)
    suites = []
    for ref in refs:
        try:
            s = load_suite(ref, cfg.eval.data_dir)
            if not s.spec.lm_eval:
                s.load_docs()
            suites.append(s)
        except LafError as e:
            problems.append(f"key 'eval.suites': {ref}: {e.cause}")
    if cfg.adapters:
        from ..registry import Registry

        reg = Registry(cfg.registry)
        for a in cfg.adapters:
            try:
                reg.resolve(a)
            except LafError as e:
                problems.append(f"key 'adapters': {e.cause}")
    from ..merge.config import check_method_params

    for i, mc in enumerate(cfg.merge_configs()):
        try:
            check_method_params(mc, f"{config_path} (merge[{i}])")
            if mc.output.kind != "adapter":
                problems.append(f"key 'merge.{i}.output.kind': a run's merge makes a candidate adapter; use `laf merge` for a model folder")
        except LafError as e:
            problems.append(f"key 'merge.{i}': {e.cause}")
    if cfg.diversity is not None and cfg.diversity.enabled:
        n_cand = (cfg.data is not None) + len(dict.fromkeys(cfg.adapters)) + len(cfg.merge) + cfg._invalid_merges
        if n_cand < 2:
            problems.append(f"key 'diversity': it compares candidates, and this run has {n_cand} (train, list or merge at least two, "
                            "or set diversity.enabled: false)")
        probe = cfg.diversity.probe_suite
        if probe is not None and probe not in {s.name for s in suites}:
            problems.append(f"key 'diversity.probe_suite': suite '{probe}' is not run (eval.suites has {', '.join(sorted(s.name for s in suites))})")
    policy = None
    if cfg.gate is not None:
        try:
            if isinstance(cfg.gate.policy, dict):
                policy = Policy.model_validate(cfg.gate.policy)
            else:
                policy = load_policy(resolve_path(cfg.gate.policy, base))
        except ValidationError as e:
            for err in e.errors():
                problems.append(f"key 'gate.policy.{'.'.join(str(x) for x in err['loc'])}': {err['msg']}")
        except LafError as e:
            problems.append(f"key 'gate.policy': {e.cause}")
        if cfg.gate.sign:
            from ..gate.signing import load_private_key

            try:
                load_private_key(resolve_path(cfg.gate.sign, base))  # before training: a loose or missing key fails now, not after hours
            except LafError as e:
                problems.append(f"key 'gate.sign': {e.cause}")
        if policy is not None:
            if policy.max_contamination is not None and cfg.data is None:
                problems.append("key 'gate.policy.max_contamination': this config has no training data to check against the suites "
                                "(give 'data', or remove max_contamination)")
            names = {s.name for s in suites}
            cats = {s.category for s in suites}
            for i, rule in enumerate(policy.rules):
                if rule.suite and rule.suite not in names:
                    problems.append(f"key 'gate.policy.rules.{i}': suite '{rule.suite}' is not run (eval.suites has {', '.join(sorted(names))})")
                if rule.category and rule.category not in cats:
                    problems.append(f"key 'gate.policy.rules.{i}': no suite of category '{rule.category}' is run")
    if cfg.select is not None:
        if cfg.data is None:
            problems.append("key 'select': it chooses among checkpoints of a training run, and this config trains nothing (give 'data')")
        if policy is None:
            problems.append("key 'select': it chooses by the gate's rules; add a 'gate:' policy")
        steps = cfg.train.max_steps
        if steps is not None and cfg.select.every > steps:
            problems.append(f"key 'select.every': {cfg.select.every} is more than max_steps {steps}: there would be one candidate only")
        if policy is not None and cfg.data is not None and not problems:
            from .select import make_split

            try:
                make_split(cfg, base, policy, suites, config_path)
            except LafError as e:
                problems.append(f"key 'select': {e.cause}")
    if problems:
        raise ConfigError(config_path, None, f"{len(problems)} problem(s) before any stage started:\n  - " + "\n  - ".join(problems),
                          "fix them all and run again (see docs/config.md)")
    return suites, policy
