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
completion positions (plus the chosen prompt for ORPO's NLL), in chunks, through
:func:`harness.train.loss.token_logps` as the SFT loss does.

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

from ..data.preference import TokenizedPair, TokenizedPairs
from ..data.tokenize import IGNORE
from ..errors import LafError
from ..io import atomic_write_json, sha256_json
from ..models.heads import body_and_head
from .batching import epoch_order
from .checkpoint import TrainState
from .config import TrainConfig
from .loss import head_chunk, token_logps

REF_PROGRESS_S = 30.0  # the reference pass logs its progress and saves its cache at most this often

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


@dataclass
class Logps:
    sums: torch.Tensor  # [2B] summed completion log-probs
    counts: torch.Tensor  # [2B] completion tokens
    nll_sum: torch.Tensor | None = None  # ORPO: -sum log p over the chosen rows' every real token (prompt included)
    nll_count: int = 0

    @property
    def avg(self) -> torch.Tensor:
        return self.sums / self.counts.clamp(min=1)


@dataclass
class SharedRows:
    """A pair batch laid out so that each pair's shared prefix runs once::

        tokens     p0 .. pS-1 | chosen tail | rejected tail | next pair ...
        positions  0  .. S-1  | S .. Lc-1   | S .. Lr-1     | 0 ..

    (S: the longest common prefix of the two sides, at least the prompt). The chosen tail sees the prefix
    and itself, the rejected tail the prefix and itself; pairs share rows (first-fit, longest first) and
    never see each other. ``flat``/``targets``/``owner`` list every position whose next token is scored:
    the flat index of the hidden state that predicts it, the token, and the side row (0..2B-1) it belongs to.
    """

    input_ids: torch.Tensor
    position_ids: torch.Tensor
    segments: torch.Tensor  # 3 * pair + part (0 prefix, 1 chosen tail, 2 rejected tail); -1 padding
    flat: torch.Tensor
    targets: torch.Tensor
    owner: torch.Tensor
    completion: torch.Tensor  # bool: the target is a completion token (else: prompt, scored only for ORPO's NLL)


def shared_rows(batch: "PairBatch", full_chosen: bool = False, pad_id: int = 0) -> SharedRows:
    B = batch.n_pairs
    ids = batch.input_ids.tolist()
    lens = batch.attention_mask.sum(1).tolist()
    labels = batch.labels.tolist()
    sides = [ids[i][: lens[i]] for i in range(2 * B)]
    pairs = []
    for k in range(B):
        c, r = sides[k], sides[B + k]
        S = 0
        while S < min(len(c), len(r)) and c[S] == r[S]:
            S += 1
        pairs.append((k, S, len(c) + len(r) - S))
    budget = max(w for _, _, w in pairs)
    rows: list[list[tuple[int, int, int]]] = []
    used: list[int] = []
    for pr in sorted(pairs, key=lambda x: (-x[2], x[0])):
        for j in range(len(rows)):
            if used[j] + pr[2] <= budget:
                rows[j].append(pr)
                used[j] += pr[2]
                break
        else:
            rows.append([pr])
            used.append(pr[2])
    W = budget
    toks = [[pad_id] * W for _ in rows]
    pos = [list(range(W)) for _ in rows]
    seg = [[-1] * W for _ in rows]
    flat, targets, owner, completion = [], [], [], []
    for j, row in enumerate(rows):
        at = 0
        for k, S, w in row:
            c, r = sides[k], sides[B + k]
            Lc = len(c)
            toks[j][at : at + w] = c + r[S:]
            pos[j][at : at + w] = list(range(Lc)) + list(range(S, len(r)))
            seg[j][at : at + w] = [3 * k] * S + [3 * k + 1] * (Lc - S) + [3 * k + 2] * (len(r) - S)
            for side, seq in ((k, c), (B + k, r)):
                lab = labels[side]
                for t in range(1, len(seq)):
                    comp = lab[t] != IGNORE
                    if not (comp or (full_chosen and side < B)):
                        continue
                    src = t - 1
                    idx = at + src if (side < B or src < S) else at + Lc + src - S
                    flat.append(j * W + idx)
                    targets.append(seq[t])
                    owner.append(side)
                    completion.append(comp)
            at += w
        pos[j][at:] = list(range(W - at))
    dev = batch.input_ids.device
    t = lambda x, dt=torch.long: torch.tensor(x, dtype=dt, device=dev)  # noqa: E731
    return SharedRows(t(toks), t(pos), t(seg), t(flat), t(targets), t(owner), t(completion, torch.bool))


def shared_masks(config, seg: torch.Tensor, pos: torch.Tensor):
    """Boolean [R, 1, W, W] masks (True = attend) for :class:`SharedRows`; a dict per layer type for hybrid models
    (the sliding window counted in positions, as the model counts it)."""
    q_seg, k_seg = seg[:, :, None], seg[:, None, :]
    q_pos, k_pos = pos[:, :, None], pos[:, None, :]
    same_pair = torch.div(q_seg, 3, rounding_mode="floor") == torch.div(k_seg, 3, rounding_mode="floor")
    visible = same_pair & ((k_seg % 3 == 0) | (k_seg == q_seg)) & (k_pos <= q_pos) & (k_seg >= 0) & (q_seg >= 0)
    eye = torch.eye(seg.shape[1], dtype=torch.bool, device=seg.device)[None]
    pad_self = eye & (q_seg < 0)  # padding attends to itself only (no empty softmax rows)
    full = visible | pad_self
    layer_types = getattr(config, "layer_types", None)
    window = getattr(config, "sliding_window", None)
    if layer_types and window and "sliding_attention" in layer_types:
        sliding = (visible & ((q_pos - k_pos) < window)) | pad_self
        return {"full_attention": full[:, None], "sliding_attention": sliding[:, None]}
    return full[:, None]


def sequence_logps(model, batch: PairBatch, *, full_chosen: bool = False, chunk: int | None = None) -> Logps:
    """Summed completion log-probs of every row; with ``full_chosen`` also the NLL of the chosen rows' whole text.

    One body pass over :func:`shared_rows` (each pair's prompt once, chosen and rejected as two tails),
    then the head only at the scored positions (:func:`token_logps`)."""
    body, head, softcap = body_and_head(model)
    lay = shared_rows(batch, full_chosen)
    config = (model.get_base_model() if hasattr(model, "get_base_model") else model).config
    out = body(input_ids=lay.input_ids, attention_mask=shared_masks(config, lay.segments, lay.position_ids),
               position_ids=lay.position_ids, use_cache=False)
    hidden = out.last_hidden_state
    h = hidden.reshape(-1, hidden.shape[-1]).index_select(0, lay.flat)
    chunk = chunk or head_chunk(h.device)
    tok = token_logps(head, softcap, h, lay.targets, chunk)
    n = 2 * batch.n_pairs
    comp = lay.completion
    sums = tok.new_zeros(n).index_add(0, lay.owner[comp], tok[comp])
    counts = (batch.labels[:, 1:] != IGNORE).sum(1)
    res = Logps(sums, counts)
    if full_chosen:
        whole = lay.owner < batch.n_pairs
        res.nll_sum = -tok[whole].sum()
        res.nll_count = int(whole.sum())
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
            t0 = last = time.perf_counter()
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
                    done = i + n
                    if done < len(todo) and time.perf_counter() - last >= REF_PROGRESS_S:
                        # a long pass says how far it is, and a kill loses at most this interval's pairs
                        cache.save()
                        last = time.perf_counter()
                        log(f"reference log-probs: {done}/{len(todo)} pairs ({done / (last - t0):.1f} pairs/s, saved)")
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
