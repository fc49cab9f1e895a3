"""``merge_adapters(cfg)``: the one call behind ``laf merge`` (and a future ``merge:`` pipeline stage).

    check the config -> read + verify the registered inputs -> check they fit together
    -> module by module: merge the exact dW_i -> LoRA factors (exact or truncated SVD,
       relative error recorded) or base + dW
    -> register the adapter with its lineage, or write the model folder

Every check runs before anything is written, so a bad input registers nothing.
"""

from __future__ import annotations

import contextlib
import json
import resource
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..env import command_line, now_iso, package_versions
from ..errors import LafError
from ..registry import AdapterEntry, AdapterRef, Registry
from ..registry.lora import CONFIG, WEIGHTS, layer_of
from .adapters import LoadedAdapter, adapter_config, check_compatible, load_adapter, lora_key
from .config import APPROXIMATE_MERGE, COMBINATIONS, MergeConfig, check_method_params
from .lineage import lineage_summary
from .methods import (
    EXACT_TOLERANCE,
    LoraModule,
    Merged,
    MethodParams,
    combine,
    factored_error,
    merge_module,
    refactor_combination,
    refactor_dense,
    stack_exact,
)


@dataclass
class MergeResult:
    kind: str  # "adapter" | "model"
    path: Path
    lineage: dict
    manifest: dict  # the registered manifest, or the model folder's merge.json
    entry: AdapterEntry | None = None
    seconds: float = 0.0

    @property
    def ref(self) -> AdapterRef | None:
        return self.entry.ref if self.entry else None


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _check_target_name(cfg: MergeConfig, registry: Registry, source) -> None:
    target = cfg.target()
    if cfg.output.kind != "adapter" or target.version is None:
        return
    versions = registry.versions(target.name)
    if target.version in versions:
        from ..errors import ConfigError

        raise ConfigError(source, "name", f"{target} is already registered; registered versions are never overwritten",
                          f"leave the version out (name: {target.name}) to register the next one, or choose another name")
    nxt = (versions[-1] if versions else 0) + 1
    if target.version != nxt:
        from ..errors import ConfigError

        raise ConfigError(source, "name", f"versions are numbered in order; the next version of {target.name} is {nxt}, not {target.version}",
                          f"use name: {target.name}@{nxt} or leave the version out")


@contextlib.contextmanager
def _module_parallel():
    """Modules run in parallel on Python threads, each op single-threaded.

    One module's ops (a 2048 x 16 QR, a 2048 x 640 top-k) are too small for
    torch's intra-op threads: on a loaded 2-core machine a factored re-SVD
    took 0.25 s with 2 intra-op threads and 0.016 s with 1. Torch releases the
    GIL inside ops, so one module per core uses the cores instead. Results do
    not depend on the order (DARE's masks are seeded per module)."""
    prev = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield max(1, prev)
    finally:
        torch.set_num_threads(prev)


def _module_order(names) -> list[str]:
    return sorted(names, key=lambda n: (layer_of(n) if layer_of(n) is not None else -1, n))


def _params(cfg: MergeConfig, n_layers: int) -> MethodParams:
    return MethodParams(
        method=cfg.method,
        weights=cfg.input_weights(),
        normalize=cfg.normalized(),
        lam=cfg.lambda_,
        t=cfg.t,
        density=cfg.density,
        rescale=cfg.rescale,
        seed=cfg.seed,
        n_layers=n_layers,
    )


def _module(name: str, adapters: list[LoadedAdapter]) -> LoraModule:
    return LoraModule(name, [a.factors[name][0] for a in adapters], [a.factors[name][1] for a in adapters], [a.scale for a in adapters])


def _merge_one(mod: LoraModule, params: MethodParams) -> Merged:
    try:
        return merge_module(mod, params)
    except ValueError as e:  # magnitude_trim: density keeps no entry
        raise LafError(f"module {mod.name}: {e}", "raise density") from None


def _parents(adapters: list[LoadedAdapter], weights: list[float] | None) -> list[dict]:
    out = []
    for i, a in enumerate(adapters):
        m = a.entry.manifest
        p = {
            "ref": a.ref,
            "weights_sha256": a.weights_sha256,
            "config_sha256": (m.get("files") or {}).get(CONFIG),
            "base_fingerprint": a.base_fingerprint,
            "kind": m.get("kind"),
            "rank": a.rank,
            "scale": a.scale,
        }
        if weights is not None:
            p["weight"] = weights[i]
        if isinstance(m.get("lineage"), dict):
            p["lineage"] = lineage_summary(m["lineage"])
        out.append(p)
    return out


def _check_lineage_size(lineage: dict) -> None:
    """Refused before any module is merged: a lineage that alone exceeds what a manifest may hold (parents whose
    manifests record huge parameters) would make a version ``laf`` cannot read back."""
    from ..registry import MAX_MANIFEST_BYTES

    size = len(json.dumps(lineage, default=str).encode("utf-8", "backslashreplace"))
    if size > MAX_MANIFEST_BYTES // 2:
        raise LafError(f"the merge's lineage (its parents' records) would be {size:,} bytes, more than half of the "
                       f"{MAX_MANIFEST_BYTES:,} a manifest may have; nothing was merged",
                       "merge fewer adapters at once, or merge parents whose manifests record less (re-run their merges with this laf)")


def _common_load(adapters: list[LoadedAdapter]) -> tuple[dict, str | None]:
    loads = {json.dumps(a.entry.manifest.get("load") or {}, sort_keys=True) for a in adapters}
    first = adapters[0].entry.manifest.get("load") or {}
    if len(loads) == 1:
        return first, None
    return first, f"the parents were trained on differently loaded bases ({'; '.join(sorted(loads))}); the first parent's is recorded"


def merge_adapters(cfg: MergeConfig, *, source: str | Path = "<merge config>", log: Callable[[str], None] = lambda s: None) -> MergeResult:
    """Merge the registered adapters ``cfg.adapters`` by ``cfg.method``; register or write the result."""
    t0 = time.perf_counter()
    check_method_params(cfg, source)
    registry = Registry(cfg.registry)
    _check_target_name(cfg, registry, source)
    if cfg.output.kind == "model" and Path(cfg.output.path).exists():
        raise LafError(f"output folder {cfg.output.path} already exists; a merge never overwrites", "choose another output.path or remove the folder")

    loaded: dict[str, LoadedAdapter] = {}  # a reference listed twice is read (and held in memory) once
    adapters = [loaded.get(i.ref) or loaded.setdefault(i.ref, load_adapter(registry, i.ref)) for i in cfg.inputs()]
    check_compatible(adapters)
    names = _module_order(adapters[0].factors)
    layers = [layer_of(n) for n in names if layer_of(n) is not None]
    n_layers = max(layers) + 1 if layers else 1
    params = _params(cfg, n_layers)
    weights = cfg.input_weights() if cfg.method in ("linear", "task_arithmetic", "cat", "ties", "dare_linear", "dare_ties") else None
    lineage = {"method": cfg.method, "params": cfg.params(), "parents": _parents(adapters, weights), "layers": n_layers}
    _check_lineage_size(lineage)
    log(f"merging {len(adapters)} adapters ({', '.join(a.ref for a in adapters)}) by {cfg.method}, {len(names)} modules")

    if cfg.output.kind == "adapter":
        result = _adapter_output(cfg, adapters, names, params, lineage, registry, t0)
    else:
        result = _model_output(cfg, adapters, names, params, lineage, t0)
    result.seconds = round(time.perf_counter() - t0, 3)
    return result


def _record_module_info(per_module: dict, name: str, merged: Merged) -> None:
    if merged.info:
        per_module[name] = {k: (round(v, 6) if isinstance(v, float) else v) for k, v in merged.info.items()}


def _summarise(lineage: dict, per_module: dict) -> None:
    if not per_module:
        return
    lineage["modules"] = per_module
    if lineage["method"] == "slerp":
        lineage["slerp_lerp_fallbacks"] = sum(1 for v in per_module.values() if v.get("lerp"))


def _adapter_output(cfg, adapters, names, params, lineage, registry: Registry, t0) -> MergeResult:
    rank_setting = cfg.output_rank()
    exact = rank_setting == "exact"
    if exact and cfg.method not in COMBINATIONS:  # also caught by check_method_params
        raise LafError(f"{cfg.method} has no exact LoRA form", "give output.rank a number")
    rank = sum(a.rank for a in adapters) if exact else int(rank_setting)
    if not exact:
        for n in names:
            out_dim, in_dim = adapters[0].factors[n][1].shape[0], adapters[0].factors[n][0].shape[1]
            if rank > min(out_dim, in_dim):
                raise LafError(f"output.rank ({rank}) exceeds the smaller side of module {n} ({out_dim} x {in_dim}); a LoRA of that rank is not a compression",
                               "choose a smaller output.rank, leave it out (exact), or output.kind: model")

    def one(n: str):
        mod = _module(n, adapters)
        try:
            merged = _merge_one(mod, params)
            if merged.coeffs is not None:
                if exact:
                    B, A = stack_exact(mod, merged.coeffs)
                else:
                    B, A, _ = refactor_combination(mod, merged.coeffs, rank)
                # measured on the stored factors against the float64 combination, for exact and truncated alike
                diff, total = factored_error(mod, merged.coeffs, B, A)
            else:
                B, A, err = refactor_dense(merged.dense, rank)
                total = float(torch.linalg.norm(merged.dense.double()))
                diff = err * total
        except (ValueError, torch.linalg.LinAlgError) as e:  # huge finite weights overflow fp32, and an SVD of inf is an error
            raise LafError(f"module {n}: the merge cannot be computed ({e})", "check the weights and lambda: they scale the updates (keep them within +-1000)") from None
        if not (torch.isfinite(A).all() and torch.isfinite(B).all()):
            raise LafError(f"module {n}: the merged update is not finite", "check the weights and lambda (too large?)")
        return n, A, B, diff, total, merged

    tensors: dict[str, torch.Tensor] = {}
    errors: dict[str, float] = {}
    per_module: dict = {}
    sq_diff = sq_total = 0.0
    with _module_parallel() as workers, ThreadPoolExecutor(workers) as pool:
        for n, A, B, diff, total, merged in pool.map(one, names):
            _record_module_info(per_module, n, merged)
            tensors[lora_key(n, "A")] = A
            tensors[lora_key(n, "B")] = B
            errors[n] = float(f"{diff / total:.6g}") if total > 0 else 0.0
            sq_diff, sq_total = sq_diff + diff * diff, sq_total + total * total
    _summarise(lineage, per_module)
    errs = list(errors.values())
    worst = max(errs)
    if exact and worst > EXACT_TOLERANCE:  # cannot happen unless the arithmetic is broken: never record it as exact
        bad = max(errors, key=errors.__getitem__)
        raise LafError(f"the exact merge of module {bad} is off by a relative error of {worst:.2e} (above {EXACT_TOLERANCE:g})",
                       "report this as a bug; meanwhile give output.rank a number (the error is then recorded as a truncation)")
    lineage["output"] = {
        "kind": "adapter",
        "rank": rank,
        "exact": exact,
        "relative_error": {
            "max": worst,
            "mean": float(f"{sum(errs) / len(errs):.6g}"),
            # the error of the whole update: sqrt(sum_m ||dW_hat_m - dW_m||^2 / sum_m ||dW_m||^2)
            "overall": float(f"{(sq_diff / sq_total) ** 0.5:.6g}") if sq_total > 0 else 0.0,
            "per_module": errors,
        },
        "approximate": worst > APPROXIMATE_MERGE,
    }
    load, load_note = _common_load(adapters)
    manifest = {
        "created": now_iso(),
        "kind": "merge",
        "description": cfg.description,
        "base_model": adapters[0].entry.manifest.get("base_model"),
        "load": load,
        "config": cfg.model_dump(mode="json", by_alias=True),
        "lineage": lineage,
        "rank": rank,
        "packages": package_versions(),
        "command": command_line(),
        "merge_time_s": round(time.perf_counter() - t0, 3),
        "peak_rss_mb": round(_peak_rss_mb(), 1),
    }
    if load_note:
        manifest["load_note"] = load_note
    from safetensors.torch import save_file

    with tempfile.TemporaryDirectory(prefix="laf-merge-") as tmp:
        tmp = Path(tmp)
        save_file(tensors, str(tmp / WEIGHTS), metadata={"format": "pt"})
        (tmp / CONFIG).write_text(json.dumps(adapter_config(adapters[0].config, rank, names), indent=2, sort_keys=True) + "\n")
        entry = registry.register(cfg.target().name, tmp, manifest)
    return MergeResult("adapter", entry.path, lineage, entry.manifest, entry)


def _model_output(cfg, adapters, names, params, lineage, t0) -> MergeResult:
    from ..models import resolve_model
    from .full import write_model

    base = adapters[0].entry.manifest.get("base_model") or {}
    spec = cfg.model or base.get("spec")
    if not spec:
        raise LafError(f"adapter {adapters[0].ref}'s manifest names no base model", "set model: to the base folder")
    resolved = resolve_model(spec)
    if resolved.fingerprint != adapters[0].base_fingerprint:
        raise LafError(
            f"the base {spec} has fingerprint sha256:{resolved.fingerprint}, but the adapters were trained on sha256:{adapters[0].base_fingerprint}",
            "set model: to the base the adapters were trained on",
        )
    precisions = {(a.entry.manifest.get("load") or {}).get("precision") for a in adapters}
    choice = cfg.output.base_weights
    if choice == "auto":
        if len(precisions) > 1:
            raise LafError(f"the adapters were trained on differently loaded bases ({', '.join(sorted(map(str, precisions)))}), so no base is the right one",
                           "set output.base_weights: original or nf4_dequantized")
        choice = "nf4_dequantized" if precisions == {"nf4"} else "original"
    wanted = set(names)
    per_module: dict = {}

    def delta_for(module: str):
        if module not in wanted:
            return None
        wanted.discard(module)
        mod = _module(module, adapters)
        merged = _merge_one(mod, params)
        _record_module_info(per_module, module, merged)
        d = combine(mod, merged.coeffs) if merged.coeffs is not None else merged.dense
        if not torch.isfinite(d).all():
            raise LafError(f"module {module}: the merged update is not finite", "check the weights and lambda (too large?)")
        return d

    lineage["output"] = {"kind": "model", "path": str(Path(cfg.output.path).resolve()), "dtype": cfg.output.dtype, "base_weights": choice}
    info = {"created": now_iso(), "base_model": base, "config": cfg.model_dump(mode="json", by_alias=True), "lineage": lineage,
            "packages": package_versions(), "command": command_line()}
    target = Path(cfg.output.path)
    with _module_parallel():
        done = write_model(resolved, target, delta_for, expected=set(names), dtype=cfg.output.dtype, base_weights=choice,
                           load=(adapters[0].entry.manifest.get("load") or {}), info=info,
                           fan_in_fan_out=bool(adapters[0].config.get("fan_in_fan_out")),
                           before_info=lambda: _summarise(lineage, per_module))
    return MergeResult("model", target.resolve(), lineage, done)
