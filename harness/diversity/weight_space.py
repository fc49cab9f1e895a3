"""Weight space: how alike are the adapters' task vectors, read from the registry (numpy, no torch).

A LoRA module's task vector is ``dW = s * B @ A`` (``s`` = alpha / r, or
alpha / sqrt(r) with rsLoRA). Everything here is computed from the small
factors without materialising any ``dW`` (640 x 2048 per module for the
default model, against r x r products):

* inner products: ``<s1 B1 A1, s2 B2 A2>_F = s1 s2 * sum((B1^T B2) * (A1 A2^T))``,
  so cosines and norms per module, per layer, per module type and for the
  whole adapter (modules one adapter lacks count as zero);
* effective rank (Roy & Vetterli 2007): ``exp(entropy(sigma / sum sigma))`` of
  the singular values of ``dW``, which are those of ``R_B R_A^T`` (QR of B and A^T);
* subspace overlap: principal angles between the column spaces of the two
  B's (orthonormal bases, then the singular values of ``Q1^T Q2`` are the
  cosines); overlap = mean squared cosine = ``||Q1^T Q2||_F^2 / min(r1, r2)``.
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import LafError
from ..registry.lora import CONFIG, PEFT_PREFIX, WEIGHTS, layer_of, read_lora_factors


@dataclass
class LoraModule:
    name: str  # e.g. base_model.model.model.layers.3.self_attn.q_proj
    layer: int | None
    kind: str  # q_proj, ...
    A: np.ndarray  # (r, in)
    B: np.ndarray  # (out, r)
    scale: float


@dataclass
class LoadedAdapter:
    ref: str
    base_fingerprint: str
    base_spec: str | None
    modules: dict[str, LoraModule]


def _pattern_value(patterns: dict, module: str, default):
    """PEFT's rank_pattern / alpha_pattern: a key matches a module name ending in it."""
    for key, value in (patterns or {}).items():
        if re.match(rf"(.*\.)?({key})$", module):
            return value
    return default


def load_adapter(ref: str, folder: Path, manifest: dict) -> LoadedAdapter:
    fp = ((manifest or {}).get("base_model") or {}).get("fingerprint")
    if not fp:
        raise LafError(f"adapter {ref}: its manifest records no base-model fingerprint, so it cannot be matched with others",
                       "register adapters with `laf train` (or `laf merge`), which record the base")
    try:
        cfg = json.loads((folder / CONFIG).read_text())
    except (OSError, ValueError) as e:
        raise LafError(f"adapter {ref}: {folder / CONFIG} is unreadable: {e}", f"run `laf registry verify {ref}`") from e
    if not isinstance(cfg, dict) or str(cfg.get("peft_type", "LORA")).upper() != "LORA":
        raise LafError(f"adapter {ref} is not a LoRA adapter (peft_type {cfg.get('peft_type') if isinstance(cfg, dict) else '?'})",
                       "weight-space measures read LoRA factors; leave this adapter out of --adapters")
    if cfg.get("use_dora"):
        raise LafError(f"adapter {ref} is a DoRA adapter: its update is not scale * B @ A, so task-vector cosines would be wrong",
                       "leave it out of --adapters (prediction- and function-space measures still apply)")
    alpha = cfg.get("lora_alpha", 8)
    if not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise LafError(f"adapter {ref}: lora_alpha {alpha!r} is not a number", "fix adapter_config.json or retrain")
    read = read_lora_factors(folder / WEIGHTS, ref)  # modules_to_save and other full tensors are not task vectors of LoRA form
    modules = {}
    for module, pair in read.modules.items():
        name = PEFT_PREFIX + module  # named as PEFT saves it, however this file was written
        A, B = pair.A, pair.B
        if not (np.isfinite(A).all() and np.isfinite(B).all()):
            raise LafError(f"adapter {ref}: module {name} holds non-finite weights (NaN or inf)", "the training diverged; retrain it")
        r = A.shape[0]
        a = _pattern_value(cfg.get("alpha_pattern"), name, alpha)
        scale = a / math.sqrt(r) if cfg.get("use_rslora") else a / r
        modules[name] = LoraModule(name, layer_of(name), name.rsplit(".", 1)[-1], A, B, float(scale))
    if not modules:
        raise LafError(f"adapter {ref}: {folder / WEIGHTS} holds no LoRA factors", "restore or retrain the adapter")
    return LoadedAdapter(ref, fp, ((manifest or {}).get("base_model") or {}).get("spec"), modules)


def load_registered(refs: list[str], registry: str | Path) -> list[LoadedAdapter]:
    from ..registry import Registry

    reg = Registry(registry)
    out = []
    for ref in refs:
        entry = reg.resolve(ref)
        check = reg.verify(entry.ref)
        if not check.ok:
            bad = ", ".join(check.mismatched + check.missing + check.unexpected) or "no recorded hashes"
            raise LafError(f"adapter {entry.ref} does not match its manifest ({bad})", f"run `laf registry verify {entry.ref}`; retrain or restore the files")
        out.append(load_adapter(str(entry.ref), entry.path, entry.manifest))
    if len({a.ref for a in out}) != len(out):
        raise LafError("the same adapter was named twice in --adapters", "name each adapter once")
    return out


def check_same_base(adapters: list[LoadedAdapter]) -> None:
    first = adapters[0]
    for a in adapters[1:]:
        if a.base_fingerprint != first.base_fingerprint:
            raise LafError(
                f"adapters {first.ref} and {a.ref} were trained on different base models "
                f"({first.base_fingerprint} [{first.base_spec}] vs {a.base_fingerprint} [{a.base_spec}]); their weights live in different spaces",
                "compare adapters of one base model (the weight-space measures need a shared base)",
            )


# ---------------------------------------------------------------- measures

def task_vector_inner(A1, B1, s1, A2, B2, s2) -> float:
    """<s1 B1 A1, s2 B2 A2>_F from the factors: (r1 x r2) products only."""
    return float(s1 * s2 * np.sum((B1.T @ B2) * (A1 @ A2.T)))


def singular_values(A: np.ndarray, B: np.ndarray, scale: float) -> np.ndarray:
    """Singular values of scale * B @ A via the r x r core R_B R_A^T."""
    rb = np.linalg.qr(B, mode="r")
    ra = np.linalg.qr(A.T, mode="r")
    return abs(scale) * np.linalg.svd(rb @ ra.T, compute_uv=False)


def effective_rank(sigma: np.ndarray) -> float | None:
    total = float(sigma.sum())
    if total <= 0:
        return None
    p = sigma[sigma > 0] / total
    return float(np.exp(-(p * np.log(p)).sum()))


def orthonormal_basis(B: np.ndarray, rtol: float = 1e-10) -> np.ndarray:
    u, s, _ = np.linalg.svd(B, full_matrices=False)
    if s.size == 0 or s[0] == 0:
        return u[:, :0]
    return u[:, s > rtol * s[0]]


def principal_cosines(B1: np.ndarray, B2: np.ndarray) -> np.ndarray:
    """Cosines of the principal angles between col(B1) and col(B2), largest first."""
    q1, q2 = orthonormal_basis(B1), orthonormal_basis(B2)
    if q1.shape[1] == 0 or q2.shape[1] == 0:
        return np.zeros(0)
    return np.clip(np.linalg.svd(q1.T @ q2, compute_uv=False), 0.0, 1.0)


def subspace_overlap(B1: np.ndarray, B2: np.ndarray) -> float | None:
    c = principal_cosines(B1, B2)
    return None if c.size == 0 else float(np.mean(c ** 2))


def _r(v):
    return None if v is None or not math.isfinite(v) else round(float(v), 6)


def _mat(labels, values, undefined_reason=None):
    n = len(labels)
    values = np.asarray(values, dtype=np.float64)
    bad = ~np.isfinite(values)
    rows = np.round(np.where(bad, 0.0, values), 6).tolist()
    for i, j in zip(*np.nonzero(bad)):
        rows[i][j] = None
    out = {"labels": list(labels), "values": rows}
    und = [{"pair": [labels[i], labels[j]], "reason": undefined_reason} for i in range(n) for j in range(i + 1, n) if rows[i][j] is None]
    if und:
        out["undefined"] = und
    return out


def weight_space(adapters: list[LoadedAdapter], per_module: bool = True) -> dict:
    """Cosines, norms, norm ratios, effective ranks and subspace overlaps of the adapters' task vectors."""
    if len(adapters) < 2:
        raise LafError(f"weight-space measures need at least two adapters (got {len(adapters)})", "name two or more with --adapters")
    check_same_base(adapters)
    labels = [a.ref for a in adapters]
    n = len(adapters)
    names = sorted({m for a in adapters for m in a.modules}, key=lambda s: (layer_of(s) is None, layer_of(s) or 0, s))
    shapes: dict[str, tuple] = {}
    for a in adapters:
        for name, mod in a.modules.items():
            shp = (mod.B.shape[0], mod.A.shape[1])
            if shapes.setdefault(name, shp) != shp:
                raise LafError(f"module {name} has shape {shapes[name]} in one adapter and {shp} in {a.ref}, though both name the same base",
                               "check the adapters' base models")
    ip_total = np.zeros((n, n))
    ip_layer: dict[str, np.ndarray] = defaultdict(lambda: np.zeros((n, n)))
    ip_kind: dict[str, np.ndarray] = defaultdict(lambda: np.zeros((n, n)))
    module_cos, module_overlap, erank = {}, {}, {a.ref: {} for a in adapters}
    ov_layer: dict[str, list] = defaultdict(list)
    ov_kind: dict[str, list] = defaultdict(list)
    ov_all = []
    for name in names:
        have = [i for i, a in enumerate(adapters) if name in a.modules]
        mods = [adapters[i].modules[name] for i in have]
        # one Gram product per factor for all adapters holding this module, then block sums
        sizes = [m.A.shape[0] for m in mods]
        starts = np.cumsum([0] + sizes[:-1])
        Bcat = np.concatenate([m.B * m.scale for m in mods], axis=1)
        Acat = np.concatenate([m.A for m in mods], axis=0)
        H = (Bcat.T @ Bcat) * (Acat @ Acat.T)
        blocks = np.add.reduceat(np.add.reduceat(H, starts, axis=0), starts, axis=1)
        ip = np.zeros((n, n))
        ip[np.ix_(have, have)] = blocks
        ip_total += ip
        mod0 = mods[0]
        ip_layer[str(mod0.layer) if mod0.layer is not None else "other"] += ip
        ip_kind[mod0.kind] += ip
        # subspace overlap for every pair at once: ||Q_i^T Q_j||_F^2 (the sum of squared principal cosines) / min(rank_i, rank_j)
        if len({m.B.shape[1] for m in mods}) == 1:  # one rank: batched QR / SVD over the adapters
            Bs = np.stack([m.B for m in mods])
            As = np.stack([m.A for m in mods])
            sig = np.linalg.svd(np.linalg.qr(Bs, mode="r") @ np.swapaxes(np.linalg.qr(np.swapaxes(As, 1, 2), mode="r"), 1, 2), compute_uv=False)
            sig *= np.abs([m.scale for m in mods])[:, None]
            u, sv, _ = np.linalg.svd(Bs, full_matrices=False)
            bases = [u[x][:, sv[x] > 1e-10 * sv[x][0]] if sv[x][0] > 0 else u[x][:, :0] for x in range(len(mods))]
        else:
            sig = [singular_values(m.A, m.B, m.scale) for m in mods]
            bases = [orthonormal_basis(m.B) for m in mods]
        for x, i in enumerate(have):
            erank[adapters[i].ref][name] = effective_rank(sig[x])
        ranks = np.array([q.shape[1] for q in bases])
        ov = np.full((n, n), np.nan)
        live = [x for x in range(len(have)) if ranks[x] > 0]
        if live:
            Q = np.concatenate([bases[x] for x in live], axis=1)
            qstarts = np.cumsum([0] + [int(ranks[x]) for x in live[:-1]])
            sq = np.add.reduceat(np.add.reduceat((Q.T @ Q) ** 2, qstarts, axis=0), qstarts, axis=1)
            idx = [have[x] for x in live]
            ov[np.ix_(idx, idx)] = np.clip(sq / np.minimum.outer(ranks[live], ranks[live]), 0.0, 1.0)
        if per_module:
            module_cos[name] = _mat(labels, _cos(ip), "a task vector is zero (or the module is missing) in one adapter")
            module_overlap[name] = _mat(labels, ov, "the module is missing or its B is zero in one adapter")
        key = str(mod0.layer) if mod0.layer is not None else "other"
        ov_layer[key].append(ov)
        ov_kind[mod0.kind].append(ov)
        ov_all.append(ov)
    norms = {a.ref: {"overall": _r(math.sqrt(ip_total[i, i])),
                     "by_layer": {k: _r(math.sqrt(v[i, i])) for k, v in ip_layer.items()},
                     "by_module_type": {k: _r(math.sqrt(v[i, i])) for k, v in ip_kind.items()}} for i, a in enumerate(adapters)}
    total_norm = np.sqrt(np.diag(ip_total))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.maximum.outer(total_norm, total_norm) / np.minimum.outer(total_norm, total_norm)
    zero_reason = "a task vector is zero in one adapter, so the cosine is undefined"
    doc = {
        "adapters": labels,
        "base_fingerprint": adapters[0].base_fingerprint,
        "weight_cosine": {
            "overall": _mat(labels, _cos(ip_total), zero_reason),
            "by_layer": {k: _mat(labels, _cos(v), zero_reason) for k, v in ip_layer.items()},
            "by_module_type": {k: _mat(labels, _cos(v), zero_reason) for k, v in ip_kind.items()},
            **({"by_module": module_cos} if per_module else {}),
        },
        "weight_norm": norms,
        "norm_ratio": _mat(labels, ratio, "a task vector is zero in one adapter"),
        "effective_rank": {ref: {"mean": _r(_nanmean([v for v in d.values() if v is not None])), "by_module": {k: _r(v) if v is not None else None for k, v in d.items()}}
                           for ref, d in erank.items()},
        "subspace_overlap": {
            "overall": _mat(labels, _avg(ov_all), "no module with a non-zero B in both adapters"),
            "by_layer": {k: _mat(labels, _avg(v), "no module with a non-zero B in both adapters") for k, v in ov_layer.items()},
            "by_module_type": {k: _mat(labels, _avg(v), "no module with a non-zero B in both adapters") for k, v in ov_kind.items()},
            **({"by_module": module_overlap} if per_module else {}),
        },
        "modules": {"count": len(names), "only_in_some": sorted(nm for nm in names if sum(nm in a.modules for a in adapters) < n)},
    }
    return doc


def _cos(ip: np.ndarray) -> np.ndarray:
    d = np.sqrt(np.clip(np.diag(ip), 0, None))
    den = np.outer(d, d)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.where(den > 0, ip / np.where(den > 0, den, 1), np.nan)
    return np.clip(c, -1.0, 1.0)


def _avg(mats: list[np.ndarray]) -> np.ndarray:
    stack = np.stack(mats)
    with np.errstate(invalid="ignore"):
        cnt = np.isfinite(stack).sum(axis=0)
        tot = np.nansum(stack, axis=0)
    return np.where(cnt > 0, tot / np.maximum(cnt, 1), np.nan)


def _nanmean(v: list[float]) -> float | None:
    return float(np.mean(v)) if v else None
