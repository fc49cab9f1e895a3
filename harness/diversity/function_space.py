"""Function space: how alike do the adapters make the model behave on a probe set (needs the model; torch).

The base is loaded once and the adapters are hot-swapped onto it (PEFT
``load_adapter`` / ``set_adapter``; the base itself runs inside
``disable_adapter()``). For each probe (a suite item's prompt, and its gold
continuation when it has one, read from the run's records so no lm-eval is
needed):

* hidden states of every layer at the last prompt token -> linear CKA per
  layer between every two models (Kornblith et al. 2019);
* next-token distributions at the continuation positions -> KL(p_i || p_j),
  averaged over positions, then over probes;
* for every pair of adapters, the parameter average (both task vectors at
  weight 1/2, loaded as one exact rank r1 + r2 adapter: A = [A1; A2],
  B = [s1 B1 / 2, s2 B2 / 2], scale 1) against the ensemble of the two parents
  (the mean of their probabilities): KL(ensemble || average) and the
  per-token log-likelihood of the gold continuation, ensemble minus average
  (the merge-vs-ensemble gap, "M-Loss", arXiv 2602.08564).

Imported lazily by :mod:`harness.diversity.analyse`: nothing else in the
package loads torch.
"""

from __future__ import annotations

import json
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import LafError
from ..registry.lora import WEIGHTS
from .weight_space import LoadedAdapter

MAX_MERGE_PAIRS = 28  # 8 adapters; each pair is one more adapter forward per probe


@dataclass(frozen=True)
class ProbeSpec:
    suite: str
    n: int = 32
    model: str = "default"
    device: str = "auto"
    max_tokens: int = 256
    max_continuation: int = 16


# ---------------------------------------------------------------- CKA

def linear_cka(X: np.ndarray, Y: np.ndarray) -> float | None:
    """Linear CKA of two (examples x features) representations; None when one has no variance."""
    X = np.asarray(X, dtype=np.float64)
    Y = np.asarray(Y, dtype=np.float64)
    X = X - X.mean(axis=0)
    Y = Y - Y.mean(axis=0)
    K, L = X @ X.T, Y @ Y.T  # (n x n) Gram matrices: cheaper than d x d when examples < features
    num = float(np.sum(K * L))
    den = math.sqrt(float(np.sum(K * K)) * float(np.sum(L * L)))
    if den <= 1e-300:
        return None
    return num / den


# ---------------------------------------------------------------- probes from records

def probe_items(records: list[dict], suite: str, n: int) -> list[tuple[str, str]]:
    """The first ``n`` items (by doc id) of ``suite``: (prompt, gold continuation or '')."""
    out = []
    for r in sorted((r for r in records if r["suite"] == suite), key=lambda r: r["doc_id"]):
        prompt = r.get("prompt")
        if isinstance(prompt, list):
            prompt = prompt[0] if prompt and isinstance(prompt[0], str) else None
        if not isinstance(prompt, str) or not prompt:
            continue
        cont, choices, target = "", r.get("choices"), r.get("target")
        if isinstance(choices, list) and isinstance(target, int) and not isinstance(target, bool) and 0 <= target < len(choices):
            cont = str(choices[target])
        elif isinstance(target, str):
            cont = target
        out.append((prompt, cont))
        if len(out) >= n:
            break
    return out


# ---------------------------------------------------------------- the parameter average as one adapter

def write_average_adapter(a: LoadedAdapter, b: LoadedAdapter, config: dict, folder: Path) -> Path:
    """An exact PEFT adapter for (dW_a + dW_b) / 2: factors stacked, the scales folded into B."""
    import torch
    from safetensors.torch import save_file

    tensors = {}
    for name in sorted(set(a.modules) | set(b.modules)):
        ma, mb = a.modules.get(name), b.modules.get(name)
        ref = ma or mb
        out_dim, in_dim = ref.B.shape[0], ref.A.shape[1]
        parts_a, parts_b = [], []
        for m in (ma, mb):
            if m is None:
                parts_a.append(np.zeros((1, in_dim)))
                parts_b.append(np.zeros((out_dim, 1)))
            else:
                parts_a.append(m.A)
                parts_b.append(m.B * (m.scale / 2))
        tensors[f"{name}.lora_A.weight"] = torch.from_numpy(np.concatenate(parts_a, axis=0)).float().contiguous()
        tensors[f"{name}.lora_B.weight"] = torch.from_numpy(np.concatenate(parts_b, axis=1)).float().contiguous()
    ranks = {t.shape[0] for k, t in tensors.items() if k.endswith("lora_A.weight")}
    if len(ranks) != 1:  # modules missing in one parent have a smaller stacked rank: pad to one rank
        r = max(ranks)
        for k in list(tensors):
            t = tensors[k]
            if k.endswith("lora_A.weight") and t.shape[0] < r:
                tensors[k] = torch.cat([t, torch.zeros(r - t.shape[0], t.shape[1])], 0)
            if k.endswith("lora_B.weight") and t.shape[1] < r:
                tensors[k] = torch.cat([t, torch.zeros(t.shape[0], r - t.shape[1])], 1)
        ranks = {r}
    r = ranks.pop()
    cfg = {**config, "r": r, "lora_alpha": r, "use_rslora": False, "rank_pattern": {}, "alpha_pattern": {}, "use_dora": False,
           "target_modules": sorted({n.rsplit(".", 1)[-1] for n in set(a.modules) | set(b.modules)}), "lora_dropout": 0.0}
    folder.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(folder / WEIGHTS))
    (folder / "adapter_config.json").write_text(json.dumps(cfg, indent=2, sort_keys=True))
    return folder


# ---------------------------------------------------------------- the measurement

def function_space(spec: ProbeSpec, adapters: list[LoadedAdapter], adapter_paths: dict[str, Path], probes: list[tuple[str, str]],
                   merge_pairs: bool = True) -> dict:
    import torch

    from ..models import LoadSpec, load_model, resolve_model
    from ..models.heads import body_and_head, head_logits

    if len(adapters) < 2:
        raise LafError(f"function-space measures need at least two adapters (got {len(adapters)})", "name two or more with --adapters")
    if len(probes) < 4:
        raise LafError(f"the probe suite {spec.suite} gave {len(probes)} usable prompts; CKA needs at least 4",
                       "pick a suite with text prompts, or raise --probe-n")
    resolved = resolve_model(spec.model)
    for a in adapters:
        if a.base_fingerprint != resolved.fingerprint:
            raise LafError(f"adapter {a.ref} was trained on base {a.base_fingerprint} [{a.base_spec}], not on {spec.model} ({resolved.fingerprint})",
                           "pass the adapters' base model with --model")
    model, tok, load = load_model(resolved, LoadSpec("fp32", None, spec.device))
    model.eval()
    from peft import PeftModel

    names = [a.ref for a in adapters]
    slot = {ref: f"c{i}" for i, ref in enumerate(names)}
    peft = PeftModel.from_pretrained(model, str(adapter_paths[names[0]]), adapter_name=slot[names[0]], is_trainable=False)
    for ref in names[1:]:
        peft.load_adapter(str(adapter_paths[ref]), adapter_name=slot[ref], is_trainable=False)
    pairs = [(i, j) for i in range(len(names)) for j in range(i + 1, len(names))]
    merge_note = None
    if merge_pairs and len(pairs) > MAX_MERGE_PAIRS:
        merge_note = f"{len(pairs)} pairs exceed the limit of {MAX_MERGE_PAIRS} averaged adapters per analysis; pass at most 8 adapters for the merge-vs-ensemble gap"
        merge_pairs = False
    tmp = tempfile.TemporaryDirectory(prefix="laf-diversity-")
    try:
        if merge_pairs:
            base_cfg = json.loads((adapter_paths[names[0]] / "adapter_config.json").read_text())
            for i, j in pairs:
                folder = write_average_adapter(adapters[i], adapters[j], base_cfg, Path(tmp.name) / f"m{i}_{j}")
                peft.load_adapter(str(folder), adapter_name=f"m{i}_{j}", is_trainable=False)
        peft.eval()
        decoder, head, softcap = body_and_head(peft)
        device = next(peft.parameters()).device
        models = ["base"] + names
        n = len(models)
        kl_sum = np.zeros((n, n))
        gap_kl = np.zeros((len(names), len(names)))
        gap_ll = np.zeros((len(names), len(names)))
        reps: dict[str, list[np.ndarray]] = {m: [] for m in models}

        def run(adapter: str | None, ids):
            with torch.no_grad():
                if adapter is None:
                    with peft.disable_adapter():
                        out = decoder(input_ids=ids, output_hidden_states=True)
                else:
                    peft.set_adapter(adapter)
                    out = decoder(input_ids=ids, output_hidden_states=True)
            return out

        for p_i, (prompt, cont) in enumerate(probes):
            ctx = tok(prompt).input_ids
            cids = tok(cont, add_special_tokens=False).input_ids[: spec.max_continuation] if cont else []
            ctx = ctx[-max(2, spec.max_tokens - len(cids)):]
            ids_list = ctx + cids
            if cids:
                positions = list(range(len(ctx) - 1, len(ids_list) - 1))
                targets = cids
            else:
                positions = list(range(0, len(ids_list) - 1))
                targets = ids_list[1:]
            ids = torch.tensor([ids_list], device=device)
            lps = {}
            for m in models + ([f"m{i}_{j}" for i, j in pairs] if merge_pairs else []):
                adapter = None if m == "base" else slot.get(m, m)
                out = run(adapter, ids)
                hid = out.hidden_states
                pos = torch.tensor(positions, device=device)
                logits = head_logits(head, softcap, hid[-1][0, pos])
                lp = torch.log_softmax(logits.double(), dim=-1).cpu().numpy()
                if not np.all(np.isfinite(lp)):
                    raise LafError(f"{m} gives non-finite log-probabilities on probe {p_i} of {spec.suite}",
                                   "the adapter's weights are broken; check it with `laf registry verify` and a plain `laf eval`")
                lps[m] = lp
                if m in reps:
                    last = len(ctx) - 1
                    reps[m].append(np.stack([h[0, last].double().cpu().numpy() for h in hid[1:]]))
            probs = {m: np.exp(lps[m]) for m in models}
            for a in range(n):
                for b in range(n):
                    if a != b:
                        kl_sum[a, b] += float(np.mean(np.sum(probs[models[a]] * (lps[models[a]] - lps[models[b]]), axis=-1)))
            if merge_pairs:
                t = np.asarray(targets)
                rows = np.arange(len(t))
                for i, j in pairs:
                    ens = np.logaddexp(lps[names[i]], lps[names[j]]) - math.log(2)
                    mer = lps[f"m{i}_{j}"]
                    kl = float(np.mean(np.sum(np.exp(ens) * (ens - mer), axis=-1)))
                    ll = float(np.mean(ens[rows, t] - mer[rows, t]))
                    gap_kl[i, j] += kl
                    gap_ll[i, j] += ll
            del lps, probs
        P = len(probes)
        kl = kl_sum / P
        layers = reps[models[0]][0].shape[0]
        X = {m: np.stack(reps[m]) for m in models}  # (probes, layers, d)
        by_layer, acc = {}, np.zeros((n, n))
        und_any = np.zeros((n, n), dtype=bool)
        for layer in range(layers):
            mat = np.full((n, n), np.nan)
            for a in range(n):
                for b in range(a, n):
                    v = linear_cka(X[models[a]][:, layer], X[models[b]][:, layer])
                    if v is not None:
                        mat[a, b] = mat[b, a] = v
            und_any |= ~np.isfinite(mat)
            acc += np.nan_to_num(mat)
            by_layer[str(layer + 1)] = _mat(models, mat, "a model's representations do not vary across probes at this layer")
        mean = np.where(und_any, np.nan, acc / layers)
        doc = {
            "models": models,
            "probe": {"suite": spec.suite, "n": P, "model": spec.model, "base_fingerprint": resolved.fingerprint,
                      "precision": load.precision, "device": load.device,
                      "positions": "continuation tokens (gold answer) when the item has one, else every token of the prompt",
                      "representation": "hidden state of each layer at the last prompt token"},
            "cka": {"mean": _mat(models, mean, "undefined at some layer"), "by_layer": by_layer},
            "kl": {"matrix": _mat(models, kl, None), "symmetric": _mat(models, (kl + kl.T) / 2, None),
                   "definition": "values[i][j] = KL(p_i || p_j) in nats, mean over scored positions, then over probes"},
        }
        if merge_pairs:
            sym = lambda g: g + g.T  # noqa: E731 - upper triangle mirrored
            doc["merge_ensemble_gap"] = {
                "kl": _mat(names, sym(gap_kl / P), None),
                "loglik": _mat(names, sym(gap_ll / P), None),
                "definition": "parameter average = (dW_i + dW_j) / 2 as one exact adapter; ensemble = mean of the parents' probabilities; "
                              "kl = KL(ensemble || average) in nats per scored position; loglik = log p_ensemble - log p_average of the gold tokens, nats per token",
            }
        else:
            doc["merge_ensemble_gap"] = {"skipped": merge_note or "not requested"}
        return doc
    finally:
        tmp.cleanup()


def _mat(labels, values, reason):
    n = len(labels)
    rows = [[round(float(values[i][j]), 6) if math.isfinite(values[i][j]) else None for j in range(n)] for i in range(n)]
    out = {"labels": list(labels), "values": rows}
    und = [{"pair": [labels[i], labels[j]], "reason": reason} for i in range(n) for j in range(i + 1, n) if rows[i][j] is None]
    if und:
        out["undefined"] = und
    return out
