"""Preference objectives on the thin trainer: DPO (sigmoid, IPO), ORPO and SimPO, as TRL defines them.

    DPO    loss = -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))           summed completion log-probs
           (label_smoothing: the conservative form -(1-e) log s(x) - e log s(-x));
           IPO  loss = ((pi_c - ref_c)/n_c - (pi_r - ref_r)/n_r - 1/(2 beta))^2     (trl.DPOTrainer, loss_type)
    ORPO   loss = NLL(chosen, prompt included) - beta * mean log sigmoid(log odds(avg pi_c) - log odds(avg pi_r))
                                                                                   (trl.experimental.orpo)
    SimPO  loss = -log sigmoid(beta * (avg pi_c - avg pi_r) - gamma) [+ sft_weight * NLL(chosen completion)]
                                                                                   (trl.experimental.cpo, simpo)

Rewards are TRL's: DPO ``beta * (pi - ref)``, ORPO/SimPO ``beta * pi`` (length-averaged).

The body runs once on ``[chosen..., rejected...]`` rows; the LM head runs only on
completion positions (plus the chosen prompt for ORPO's NLL), in chunks under
activation checkpointing as in :mod:`harness.train.loss`.

The DPO reference is the starting model: the base with the adapter switched off,
or with ``init_from`` the base plus that adapter (the policy starts from its
weights, so the reference is the policy before the first step). Its log-probs
are computed once, before training, and stored in a content-keyed cache
(reference identity + tokenised pair), so a resumed or repeated run reads them
instead of running the reference again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from ..data.preference import TokenizedPair, TokenizedPairs
from ..data.tokenize import IGNORE
from ..errors import LafError
from ..io import atomic_write_json, sha256_json
from ..models.heads import body_and_head, head_logits
from .batching import epoch_order
from .checkpoint import TrainState
from .config import TrainConfig
from .loss import head_chunk

METRIC_NAMES = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected")


# ---------------------------------------------------------------- the formulas (pure, tested against TRL)


def log1mexp(x: torch.Tensor) -> torch.Tensor:
    """log(1 - exp(x)) for x < 0, stable on both sides of -ln 2 (TRL's ORPO helper)."""
    t = -0.6931471805599453
    return torch.where(x < t, torch.log1p(-torch.exp(x)), torch.log(-torch.expm1(x)))


def dpo_losses(pc, pr, rc, rr, *, beta: float, loss: str = "sigmoid", label_smoothing: float = 0.0, nc=None, nr=None):
    """Per-pair DPO losses and the rewards ``beta * (pi - ref)`` (``nc``/``nr``: completion lengths, for IPO)."""
    chosen_ratio, rejected_ratio = pc - rc, pr - rr
    if loss == "ipo":
        delta = chosen_ratio / nc.clamp(min=1) - rejected_ratio / nr.clamp(min=1)
        losses = (delta - 1 / (2 * beta)) ** 2
    else:
        x = beta * (chosen_ratio - rejected_ratio)
        losses = -F.logsigmoid(x) * (1 - label_smoothing) - F.logsigmoid(-x) * label_smoothing
    return losses, beta * chosen_ratio.detach(), beta * rejected_ratio.detach()


def orpo_terms(pc_avg, pr_avg, *, beta: float):
    """ORPO's ``beta * log sigmoid(log odds ratio)`` per pair (subtracted from the NLL) and rewards ``beta * avg logp``."""
    pc_avg, pr_avg = pc_avg.float(), pr_avg.float()
    log_odds = (pc_avg - pr_avg) - (log1mexp(pc_avg) - log1mexp(pr_avg))
    return beta * F.logsigmoid(log_odds), beta * pc_avg.detach(), beta * pr_avg.detach()


def simpo_losses(pc_avg, pr_avg, *, beta: float, gamma: float, label_smoothing: float = 0.0):
    x = beta * ((pc_avg - pr_avg) - gamma / beta)
    losses = -F.logsigmoid(x) * (1 - label_smoothing) - F.logsigmoid(-x) * label_smoothing
    return losses, beta * pc_avg.detach(), beta * pr_avg.detach()


# ---------------------------------------------------------------- batches and log-probs


@dataclass
class PairBatch:
    """``n_pairs`` chosen rows then ``n_pairs`` rejected rows, right-padded."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    labels: torch.Tensor  # completion tokens only
    keys: list[str]
    ref: torch.Tensor | None = None  # [2 * n_pairs] reference log-probs (chosen then rejected)

    @property
    def n_pairs(self) -> int:
        return self.input_ids.shape[0] // 2

    @property
    def tokens(self) -> int:
        return int(self.attention_mask.sum())

    @property
    def supervised(self) -> int:
        return int((self.labels[:, 1:] != IGNORE).sum())

    def to(self, device) -> "PairBatch":
        return PairBatch(self.input_ids.to(device), self.attention_mask.to(device), self.labels.to(device), self.keys,
                         None if self.ref is None else self.ref.to(device))


def pair_batch(pairs: list[TokenizedPair], pad_id: int) -> PairBatch:
    seqs = [(p.chosen_ids, p.chosen_labels) for p in pairs] + [(p.rejected_ids, p.rejected_labels) for p in pairs]
    width = max(len(s[0]) for s in seqs)
    n = len(seqs)
    ids = torch.full((n, width), pad_id, dtype=torch.long)
    labels = torch.full((n, width), IGNORE, dtype=torch.long)
    mask = torch.zeros((n, width), dtype=torch.long)
    for i, (s, lab) in enumerate(seqs):
        ids[i, : len(s)] = torch.tensor(s)
        labels[i, : len(s)] = torch.tensor(lab)
        mask[i, : len(s)] = 1
    return PairBatch(ids, mask, labels, [p.key() for p in pairs])


def _head_logp(head, softcap, h, y):
    return torch.log_softmax(head_logits(head, softcap, h), dim=-1).gather(-1, y.unsqueeze(-1)).squeeze(-1)


@dataclass
class Logps:
    sums: torch.Tensor  # [2B] summed completion log-probs
    counts: torch.Tensor  # [2B] completion tokens
    nll_sum: torch.Tensor | None = None  # ORPO: -sum log p over the chosen rows' every real token (prompt included)
    nll_count: int = 0

    @property
    def avg(self) -> torch.Tensor:
        return self.sums / self.counts.clamp(min=1)


def sequence_logps(model, batch: PairBatch, *, full_chosen: bool = False, chunk: int | None = None) -> Logps:
    """Summed completion log-probs of every row; with ``full_chosen`` also the NLL of the chosen rows' whole text."""
    body, head, softcap = body_and_head(model)
    position_ids = (batch.attention_mask.cumsum(-1) - 1).clamp_min(0)
    out = body(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=position_ids, use_cache=False)
    hidden = out.last_hidden_state[:, :-1]
    targets = batch.labels[:, 1:]
    completion = targets != IGNORE
    select = completion
    if full_chosen:
        whole = batch.attention_mask[:, 1:].bool().clone()
        whole[batch.n_pairs :] = False
        select = completion | whole
    rows = torch.arange(select.shape[0], device=select.device).unsqueeze(1).expand_as(select)[select]
    is_completion = completion[select]
    is_whole = whole[select] if full_chosen else None
    h = hidden[select]
    y = batch.input_ids[:, 1:][select]
    chunk = chunk or head_chunk(h.device)
    parts = []
    for i in range(0, h.shape[0], chunk):
        hc, yc = h[i : i + chunk], y[i : i + chunk]
        if torch.is_grad_enabled():
            parts.append(checkpoint(_head_logp, head, softcap, hc, yc, use_reentrant=False))
        else:
            parts.append(_head_logp(head, softcap, hc, yc))
    tok = torch.cat(parts) if parts else hidden.new_zeros(0, dtype=torch.float32)
    n = select.shape[0]
    sums = tok.new_zeros(n).index_add(0, rows[is_completion], tok[is_completion])
    counts = completion.sum(1)
    res = Logps(sums, counts)
    if full_chosen:
        res.nll_sum = -tok[is_whole].sum()
        res.nll_count = int(is_whole.sum())
    return res


# ---------------------------------------------------------------- the reference log-prob cache


class RefCache:
    """Reference log-probs by pair content, one JSON file per reference identity (written atomically)."""

    def __init__(self, root: Path, identity: str):
        self.path = Path(root) / f"{identity[:40]}.json"
        self.values: dict[str, list[float]] = {}
        self.dirty = False
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = {}
            if isinstance(data, dict) and data.get("identity") == identity and isinstance(data.get("logps"), dict):
                for k, v in data["logps"].items():
                    if isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) and torch.isfinite(torch.tensor(float(x))) for x in v):
                        self.values[k] = [float(v[0]), float(v[1])]
        self.identity = identity

    def get(self, key: str) -> list[float] | None:
        return self.values.get(key)

    def put(self, key: str, chosen: float, rejected: float) -> None:
        self.values[key] = [chosen, rejected]
        self.dirty = True

    def save(self) -> None:
        if self.dirty:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.path, {"identity": self.identity, "logps": self.values})
            self.dirty = False


def reference_identity(base_fingerprint: str, load: dict, cfg: TrainConfig, init_from: dict | None) -> str:
    """What the reference model is: the base, how it is loaded, the adapter it carries, the template."""
    return sha256_json({"base": base_fingerprint, "load": load, "init_from": init_from, "chat_template": cfg.chat_template,
                        "max_length": cfg.max_length, "mixed_precision": cfg.mixed_precision})


# ---------------------------------------------------------------- the objective the loop calls


@dataclass
class RefStats:
    computed: int = 0
    cached: int = 0
    seconds: float = 0.0


@dataclass
class PreferenceObjective:
    cfg: TrainConfig
    data: TokenizedPairs
    held: TokenizedPairs
    pad_id: int
    device: str
    autocast: Callable
    ref: dict[str, list[float]] = field(default_factory=dict)
    ref_stats: RefStats = field(default_factory=RefStats)
    _epoch: int | None = None
    _batches: list[list[int]] = field(default_factory=list)
    _acc: dict[str, list[float]] = field(default_factory=dict)
    _first: dict[str, float] | None = None
    warned: bool = False

    @property
    def needs_reference(self) -> bool:
        return self.cfg.objective == "dpo"

    # -- reference
    def prepare_reference(self, model, identity: str, log: Callable[[str], None]) -> None:
        """Fill ``self.ref`` for every train and held-out pair: from the cache, else one no-grad pass of the reference."""
        if not self.needs_reference:
            return
        import time

        cache = RefCache(Path(self.cfg.preference.ref_cache), identity)
        pairs = {p.key(): p for p in self.data.examples + self.held.examples}
        todo = [p for k, p in pairs.items() if cache.get(k) is None]
        self.ref_stats.cached = len(pairs) - len(todo)
        if todo:
            t0 = time.perf_counter()
            log(f"reference log-probs: computing {len(todo)} pairs ({self.ref_stats.cached} cached)")
            was_training = model.training
            model.eval()
            ctx = model.disable_adapter() if not self.cfg.init_from else _nullcontext()
            with torch.no_grad(), ctx, self.autocast():
                for i in range(0, len(todo), self.cfg.batch_size):
                    chunk = todo[i : i + self.cfg.batch_size]
                    b = pair_batch(chunk, self.pad_id).to(self.device)
                    s = sequence_logps(model, b).sums.float().cpu()
                    if not torch.isfinite(s).all():
                        bad = chunk[int((~torch.isfinite(s)).nonzero()[0]) % len(chunk)]
                        raise LafError(
                            f"the reference model gives a non-finite log-probability for the pair at line {bad.line}",
                            "check the base model loads correctly (precision, compute_dtype) and the pair's text",
                        )
                    n = len(chunk)
                    for j, p in enumerate(chunk):
                        cache.put(p.key(), float(s[j]), float(s[n + j]))
            if was_training:
                model.train()
            cache.save()
            self.ref_stats.computed = len(todo)
            self.ref_stats.seconds = time.perf_counter() - t0
        self.ref = {k: cache.get(k) for k in pairs}  # type: ignore[misc]

    def _with_ref(self, b: PairBatch) -> PairBatch:
        if self.needs_reference:
            vals = [self.ref[k] for k in b.keys]
            b.ref = torch.tensor([v[0] for v in vals] + [v[1] for v in vals], dtype=torch.float32)
        return b

    # -- batches
    def count_units(self) -> int:
        return len(self.data.examples)

    def next_group(self, state: TrainState) -> list[PairBatch] | None:
        cfg = self.cfg
        if self._epoch != state.epoch:
            order = epoch_order(len(self.data.examples), cfg.seed, state.epoch)
            self._batches = [order[i : i + cfg.batch_size] for i in range(0, len(order), cfg.batch_size)]
            self._epoch = state.epoch
        if state.batch_in_epoch >= len(self._batches):
            state.epoch += 1
            state.batch_in_epoch = 0
            return None
        idx = self._batches[state.batch_in_epoch : state.batch_in_epoch + cfg.grad_accum]
        return [self._with_ref(pair_batch([self.data.examples[i] for i in g], self.pad_id)) for g in idx]

    # -- loss
    def batch_loss(self, model, b: PairBatch, n_pairs: int, nll_tokens: int | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Sum of per-pair losses / ``n_pairs`` (plus the NLL term over ``nll_tokens``) and the per-pair stats."""
        cfg, p = self.cfg, self.cfg.preference
        full = cfg.objective == "orpo" or (cfg.objective == "simpo" and p.sft_weight > 0)
        lp = sequence_logps(model, b, full_chosen=cfg.objective == "orpo")
        B = b.n_pairs
        pc, pr = lp.sums[:B], lp.sums[B:]
        nc, nr = lp.counts[:B], lp.counts[B:]
        if cfg.objective == "dpo":
            assert b.ref is not None
            losses, rw_c, rw_r = dpo_losses(pc, pr, b.ref[:B], b.ref[B:], beta=p.beta, loss=p.loss, label_smoothing=p.label_smoothing, nc=nc, nr=nr)
            loss = losses.sum() / n_pairs
            logp_c, logp_r = pc, pr
        elif cfg.objective == "orpo":
            ratio, rw_c, rw_r = orpo_terms(lp.avg[:B], lp.avg[B:], beta=p.beta)
            assert lp.nll_sum is not None
            loss = lp.nll_sum / (nll_tokens or lp.nll_count) - ratio.sum() / n_pairs
            losses = -ratio
            logp_c, logp_r = lp.avg[:B], lp.avg[B:]
        else:
            losses, rw_c, rw_r = simpo_losses(lp.avg[:B], lp.avg[B:], beta=p.beta, gamma=p.simpo_gamma, label_smoothing=p.label_smoothing)
            loss = losses.sum() / n_pairs
            if full:
                loss = loss + p.sft_weight * (-pc.sum()) / (nll_tokens or int(nc.sum()))
            logp_c, logp_r = lp.avg[:B], lp.avg[B:]
        stats = {
            "rewards/chosen": rw_c, "rewards/rejected": rw_r, "rewards/accuracies": (rw_c > rw_r).float(),
            "rewards/margins": rw_c - rw_r, "logps/chosen": logp_c.detach(), "logps/rejected": logp_r.detach(), "_loss": losses.detach(),
        }
        return loss, stats

    def nll_tokens(self, group: list[PairBatch]) -> int | None:
        """Tokens the NLL term averages over for one optimizer step (ORPO: the chosen rows' whole text)."""
        if self.cfg.objective == "orpo":
            return sum(int(b.attention_mask[: b.n_pairs, 1:].sum()) for b in group)
        if self.cfg.objective == "simpo" and self.cfg.preference.sft_weight > 0:
            return sum(int((b.labels[: b.n_pairs, 1:] != IGNORE).sum()) for b in group)
        return None

    def accumulate(self, stats: dict[str, torch.Tensor]) -> None:
        for k in METRIC_NAMES:
            self._acc.setdefault(k, []).extend(float(x) for x in stats[k].float().cpu())

    def step_metrics(self, log: Callable[[str], None]) -> dict[str, float]:
        m = {k: round(sum(v) / len(v), 6) for k, v in self._acc.items() if v}
        self._acc = {}
        self._check_trend(m, log)
        return m

    def _check_trend(self, m: dict[str, float], log: Callable[[str], None], prefix: str = "") -> None:
        """Warn once when chosen log-probs fall while margins rise (likelihood displacement read as progress).

        DPO: the rewards are log-ratios to the reference, so ``rewards/chosen < 0`` with ``rewards/margins > 0``
        says exactly that, batch by batch. ORPO/SimPO have no reference: compare held-out pairs with the first evaluation.
        """
        c, mg = m.get(prefix + "logps/chosen"), m.get(prefix + "rewards/margins")
        if self.warned or c is None or mg is None:
            return
        if self.needs_reference:
            rc = m[prefix + "rewards/chosen"]
            fell = rc < -1e-3 and mg > 1e-3
            before = f"reference + {rc / self.cfg.preference.beta:.3f} nats"
        else:
            if not prefix:
                return
            if self._first is None:
                self._first = {"c": c, "m": mg}
                return
            fell = c < self._first["c"] - 1e-3 and mg > self._first["m"] + 1e-3
            before = f"{self._first['c']:.3f} -> {c:.3f}"
        if fell:
            self.warned = True
            m[prefix + "warning"] = "chosen log-probs fall while margins rise"  # type: ignore[assignment]
            log(
                f"warning: {prefix}logps/chosen fell ({before}) while {prefix}rewards/margins rose to {mg:.3f}: both answers are "
                "losing probability and the margin grows because the rejected one falls faster. Check held-out pairs and generations"
            )

    # -- held-out pairs
    def evaluate(self, model, log: Callable[[str], None] | None = None) -> dict[str, float]:
        if not self.held.examples:
            return {}
        was_training = model.training
        model.eval()
        acc: dict[str, list[float]] = {}
        with torch.no_grad(), self.autocast():
            for i in range(0, len(self.held.examples), self.cfg.batch_size):
                chunk = self.held.examples[i : i + self.cfg.batch_size]
                b = self._with_ref(pair_batch(chunk, self.pad_id)).to(self.device)
                group_nll = self.nll_tokens([b])
                loss, stats = self.batch_loss(model, b, b.n_pairs, group_nll)
                acc.setdefault("loss", []).append(float(loss) * b.n_pairs)
                for k in METRIC_NAMES:
                    acc.setdefault(k, []).extend(float(x) for x in stats[k].float().cpu())
        if was_training:
            model.train()
        n = len(self.held.examples)
        out = {"eval_loss": round(sum(acc["loss"]) / n, 6)}
        out.update({f"eval_{k}": round(sum(acc[k]) / n, 6) for k in METRIC_NAMES})
        if log is not None:
            self._check_trend(out, log, "eval_")
        return out


class _nullcontext:
    def __enter__(self):
        return self

    def __exit__(self, *a):
        return False


# ---------------------------------------------------------------- init_from: start from a registered adapter


def load_init_adapter(model, cfg: TrainConfig, base_fingerprint: str) -> dict:
    """Load ``cfg.init_from``'s weights into the freshly attached LoRA; return its lineage for the manifest.

    Refused when the adapter was trained on another base or with another LoRA shape.
    """
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    from ..registry import Registry

    assert cfg.init_from
    entry = Registry(cfg.registry).resolve(cfg.init_from)
    base = (entry.manifest.get("base_model") or {}).get("fingerprint")
    if base != base_fingerprint:
        raise LafError(
            f"init_from {entry.ref} was trained on another base model (fingerprint {str(base)[:12]}, this run's base {base_fingerprint[:12]})",
            "start from an adapter of this base model, or set model: to the base it was trained on",
        )
    acfg = json.loads((entry.path / "adapter_config.json").read_text())
    want = {"r": cfg.lora.r, "lora_alpha": cfg.lora.alpha}
    have = {"r": acfg.get("r"), "lora_alpha": acfg.get("lora_alpha")}
    if want != have:
        raise LafError(
            f"init_from {entry.ref} has LoRA r={have['r']}, alpha={have['lora_alpha']}; this config asks r={want['r']}, alpha={want['lora_alpha']}",
            "set lora.r and lora.alpha to the adapter's values",
        )
    weights = entry.path / "adapter_model.safetensors"
    try:
        state = load_file(str(weights))
        result = set_peft_model_state_dict(model, state)
    except (OSError, RuntimeError, ValueError) as e:
        raise LafError(f"init_from {entry.ref}: its weights do not fit this LoRA setup ({e})", "use the same lora settings as the adapter's manifest") from None
    if getattr(result, "unexpected_keys", None):
        raise LafError(f"init_from {entry.ref}: {len(result.unexpected_keys)} tensors match no LoRA module here (first: {result.unexpected_keys[0]})",
                       "use the adapter's lora.target_modules")
    return {"ref": str(entry.ref), "files_sha256": sha256_json(entry.manifest.get("files", {})), "base_fingerprint": base}
