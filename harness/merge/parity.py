"""``laf parity ADAPTER``: does exporting an adapter change what the model says?

Up to four forms of one registered adapter are scored on the same suite items:

- ``on_the_fly``: the adapter applied by PEFT to the base it was trained on (for QLoRA: the NF4 base);
- ``merged``: ``merge_adapters`` (linear, the one adapter with weight 1) into a full fp32/bf16 folder, on the
  base weights ``base_weights`` picks (``auto``: the NF4-dequantised weights for a QLoRA adapter, which is what
  it was trained against; else the original weights);
- ``merged_nf4``: that folder loaded in NF4 (what people deploy);
- ``merged_original`` (opt-in): merged into the original, unquantised weights (for a QLoRA adapter a different
  model from ``merged``: this measures the other choice of base).

Each form is a normal evaluation (``forms/<form>/``: records, results.json), so the per-item comparison
(flips, |Δ log-likelihood|, every metric's paired delta with CI) is done on records by
:func:`harness.gate.parity.compare_records`; the next-token KL and top-1 agreement at the scored positions of
the multiple-choice items come from scoring all forms in lockstep
(:func:`harness.evaluate.parity.next_token_drift`). Everything lands in ``OUT/parity.json``.
"""

from __future__ import annotations

import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable

from .. import defaults
from ..errors import LafError
from ..io import atomic_write_json

FORMS = ("on_the_fly", "merged", "merged_nf4", "merged_original")
DEFAULT_FORMS = ("merged", "merged_nf4")


@dataclass
class ParitySpec:
    adapter: str
    suites: list[str]
    out: str
    model: str | None = None  # default: the base the adapter's manifest names (fingerprint checked)
    registry: str = defaults.REGISTRY
    forms: list[str] = field(default_factory=lambda: list(DEFAULT_FORMS))
    limit: int | None = None
    dtype: str = "fp32"  # of the merged folder
    base_weights: str = "auto"
    batch_size: int = defaults.BATCH_SIZE
    max_length: int = defaults.MAX_LENGTH
    device: str = defaults.DEVICE
    data_dir: str | None = None
    cache: str | None = None
    no_cache: bool = False
    confidence: float = 0.95
    resamples: int = 2000
    seed: int = 0


def _check(spec: ParitySpec):
    from ..models import resolve_model
    from ..registry import Registry

    bad = [f for f in spec.forms if f not in FORMS or f == "on_the_fly"]
    if bad or not spec.forms:
        raise LafError(f"unknown parity form {bad[0] if bad else '(none)'}", f"use one or more of {', '.join(FORMS[1:])} (on_the_fly is always scored)")
    if spec.dtype not in ("fp32", "bf16"):
        raise LafError(f"unknown merged dtype {spec.dtype!r}", "use fp32 or bf16")
    if spec.limit is not None and spec.limit <= 0:
        raise LafError(f"--limit must be positive (got {spec.limit})", "use e.g. --limit 40")
    if not spec.suites:
        raise LafError("no suites to compare the forms on", "pass at least one --suite")
    out = Path(spec.out)
    if out.exists() and any(out.iterdir()):
        raise LafError(f"{out} already exists and is not empty; parity never overwrites", "choose another --out or remove the folder")
    entry = Registry(spec.registry).resolve(spec.adapter)
    base = entry.manifest.get("base_model") or {}
    trained_on = base.get("fingerprint")
    model_spec = spec.model or base.get("spec")
    if not model_spec:
        raise LafError(f"adapter {entry.ref}'s manifest names no base model", "pass --model with the base it was trained on")
    resolved = resolve_model(model_spec)
    if not resolved.is_base_of(trained_on):
        raise LafError(f"adapter {entry.ref} was trained on base sha256:{str(trained_on)[:16]}... ({base.get('spec')}), "
                       f"not on {model_spec} (sha256:{resolved.fingerprint[:16]}...)",
                       "pass --model with the base the adapter was trained on (or leave --model out)")
    if "merged_original" in spec.forms and (entry.manifest.get("load") or {}).get("precision") != "nf4" and spec.base_weights != "nf4_dequantized":
        raise LafError(f"merged_original is the same model as merged for {entry.ref} (not trained on NF4)", "drop merged_original from --form")
    return entry, resolved


def _merge(entry, resolved, target: Path, spec: ParitySpec, base_weights: str, log) -> dict:
    from .config import MergeConfig, OutputConfig
    from .engine import merge_adapters

    cfg = MergeConfig(name=entry.ref.name, method="linear", adapters=[str(entry.ref)], registry=spec.registry, model=str(resolved.path),
                      output=OutputConfig(kind="model", path=str(target), dtype=spec.dtype, base_weights=base_weights))  # type: ignore[arg-type]
    res = merge_adapters(cfg, source="laf parity", log=log)
    return {"path": str(target), "dtype": spec.dtype, "base_weights": res.lineage["output"]["base_weights"], "seconds": res.seconds}


def run_parity(spec: ParitySpec, log: Callable[[str], None] = lambda s: None, progress=None) -> dict:
    """Score the forms of ``spec.adapter``, compare each pair, write and return ``OUT/parity.json``."""
    started = time.time()
    entry, resolved = _check(spec)
    out = Path(spec.out)
    fresh = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _run(spec, entry, resolved, out, started, log, progress)
    except BaseException:
        if fresh:  # a failed run leaves nothing behind that would block the next one
            shutil.rmtree(out, ignore_errors=True)
        raise


def _run(spec: ParitySpec, entry, resolved, out: Path, started: float, log, progress) -> dict:
    from ..evaluate.engine import EvalSpec, run_eval
    from ..gate.parity import compare_records
    from ..gate.runs import load_side

    trained = entry.manifest.get("load") or {}
    ref = str(entry.ref)

    merges: dict[str, dict] = {}
    if any(f in spec.forms for f in ("merged", "merged_nf4")):
        log(f"merging {ref} into full {spec.dtype} weights")
        merges["merged"] = _merge(entry, resolved, out / f"merged_{spec.dtype}", spec, spec.base_weights, log)
    if "merged_original" in spec.forms:
        merges["merged_original"] = _merge(entry, resolved, out / f"merged_original_{spec.dtype}", spec, "original", log)

    forms = ["on_the_fly", *[f for f in FORMS[1:] if f in spec.forms]]
    nf4_compute = trained.get("compute_dtype") if trained.get("precision") == "nf4" else None
    how: dict[str, dict] = {
        "on_the_fly": {"model": str(resolved.path), "adapter": ref, "adapter_path": str(entry.path), "precision": "auto"},
        "merged": {"model": merges.get("merged", {}).get("path"), "adapter": None, "precision": spec.dtype},
        "merged_nf4": {"model": merges.get("merged", {}).get("path"), "adapter": None, "precision": "nf4", "compute_dtype": nf4_compute},
        "merged_original": {"model": merges.get("merged_original", {}).get("path"), "adapter": None, "precision": spec.dtype},
    }
    sides = {}
    for f in forms:
        h = how[f]
        log(f"scoring form {f}")
        es = EvalSpec(suites=list(spec.suites), model=h["model"], adapters=[h["adapter"]] if h["adapter"] else [], out=str(out / "forms" / f),
                      limit=spec.limit, precision=h["precision"], compute_dtype=h.get("compute_dtype"), device=spec.device,
                      batch_size=spec.batch_size, max_length=spec.max_length, registry=spec.registry, cache=spec.cache,
                      no_cache=spec.no_cache, data_dir=spec.data_dir)
        doc = run_eval(es, progress=(lambda m, s, d, t, hits, _f=f: progress(_f, s, d, t, hits)) if progress else None, log=log)
        h["load"] = doc.provenance.load
        sides[f] = load_side(f"{out / 'forms' / f}#{ref if h['adapter'] else 'base'}", f, default_base=False)

    pairs = [(a, b) for i, a in enumerate(forms) for b in forms[i + 1:]]
    log("next-token KL of every pair")
    drift = _drift(forms, how, sides["on_the_fly"], pairs, resolved, spec)
    rows = []
    for a, b in pairs:
        cmp = compare_records(sides[a], sides[b], confidence=spec.confidence, resamples=spec.resamples, seed=spec.seed)
        d = drift[(a, b)].summary()
        item_kl = d.pop("item_kl")
        d["kl_items"] = d.pop("items")
        worst = sorted(item_kl.items(), key=lambda kv: -kv[1])[:10]
        rows.append({"reference": a, "form": b, **d, **cmp,
                     "worst_items": [{"item": k, "kl": v} for k, v in worst]})
    doc = {
        "adapter": ref, "adapter_path": str(entry.path), "trained_load": trained,
        "base_model": {"spec": str(resolved.spec), "path": str(resolved.path), "fingerprint": resolved.fingerprint},
        "merge": merges, "forms": {f: how[f] for f in forms}, "suites": list(spec.suites), "limit": spec.limit,
        "kl": "KL(P_reference || P_form) of the next-token distributions at every scored position (nats)",
        "pairs": rows, "spec": asdict(spec), "wall_time_s": round(time.time() - started, 2),
    }
    atomic_write_json(out / "parity.json", doc)
    return doc


def encode_request(lm, context: str, continuation: str) -> tuple[list[int], list[int]]:
    """A (context, continuation) pair as HFLM.loglikelihood encodes it: an empty context (CrowS-Pairs scores whole
    sentences) becomes the prefix token, as lm-eval does, where ``_encode_pair`` would assert."""
    if context == "":  # lm_eval.api.model.TemplateLM.loglikelihood, line for line
        cont = lm.tok_encode(continuation, add_special_tokens=False)
        return ([lm.prefix_token_id], cont) if not cont or lm.prefix_token_id != cont[0] else (cont[:1], cont[1:])
    return lm._encode_pair(context, continuation)


def _drift(forms, how, ref_side, pairs, resolved, spec: ParitySpec):
    """Load every form at once and score the multiple-choice items' continuations in lockstep."""
    import torch

    from ..evaluate.lm import HarnessLM
    from ..evaluate.parity import next_token_drift
    from ..models import LoadSpec, load_model, resolve_model

    models: dict = {}
    tok = base = device = None
    for f in forms:
        h = how[f]
        load = h["load"]
        if f == "on_the_fly":
            from peft import PeftModel

            base, tok, ls = load_model(resolved, LoadSpec(load["precision"], load["compute_dtype"], load["device"]))
            models[f] = PeftModel.from_pretrained(base, how[f]["adapter_path"], is_trainable=False).eval()
            device = ls.device
        else:
            models[f], _, _ = load_model(resolve_model(h["model"]), LoadSpec(load["precision"], load["compute_dtype"], load["device"]),
                                         with_tokenizer=False)
    lm = HarnessLM(base, tok, batch_size=spec.batch_size, max_length=spec.max_length)
    requests, owners = [], []
    for suite, recs in ref_side.records.items():
        for r in recs:
            if not r.choices:
                continue
            prompts = r.prompt if isinstance(r.prompt, list) else [r.prompt] * len(r.choices)
            for ctx, cont in zip(prompts, r.choices):
                requests.append(encode_request(lm, ctx, cont))
                owners.append(f"{suite}#{r.doc_id}")
    with torch.no_grad():
        return next_token_drift(models, pairs, requests, owners, batch_size=spec.batch_size, max_length=spec.max_length,
                                pad_id=tok.pad_token_id or 0, device=device)
