"""The preference objectives DPO (sigmoid, IPO), ORPO and SimPO, with their preserve terms, on the thin trainer.

The jobs live by module: the formulas (``preference_losses.py``, TRL's), pair batching and the completion log-probs
(``pairs.py``), the DPO reference pass and its cache (``reference.py``), starting from a registered adapter
(``init_adapter.py``). This module is the objective the loop calls (:class:`PreferenceObjective`), and re-exports
those names for the code and tests that import them from here.

Preserve terms: pairs cannot be packed with plain sequences, so replay is a few packed replay batches added to each
step (``PreferenceReplay``, their mean NLL over the step's replay tokens), and the KL anchor covers the chosen
completions (``kl.on`` train/all) and the replay tokens (``kl.on`` replay/all).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Iterator, Sequence

import torch

from ..data.preference import PreferencePair, PreferenceRead, TokenizedPairs, read_pairs, tokenize_pairs
from ..data.tokenize import IGNORE, TokenizedExample
from .batching import Batch, epoch_order
from .checkpoint import TrainState
from .config import TrainConfig
from .init_adapter import load_init_adapter
from .loss import preserve_loss_sums
from .objective import Log, Objective, StartPoint
from .pairs import Logps, PairBatch, SharedRows, pair_batch, sequence_logps, shared_masks, shared_rows
from .preference_losses import dpo_losses, log1mexp, orpo_terms, simpo_losses
from .preserve import PreferenceReplay, anchored_count, chosen_rows
from .reference import REF_PROGRESS_S, RefCache, RefStats, reference_identity, reference_logps
from .schedule import count_steps
from .trainset import read_split, tokenize_split

__all__ = [
    "METRIC_NAMES", "REF_PROGRESS_S", "Logps", "PairBatch", "PreferenceObjective", "RefCache", "RefStats", "SharedRows", "dpo_losses",
    "load_init_adapter", "log1mexp", "orpo_terms", "pair_batch", "reference_identity", "sequence_logps", "shared_masks", "shared_rows", "simpo_losses",
]

METRIC_NAMES = ("rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected")


class PreferenceObjective(Objective[PairBatch]):
    """The mean per-pair loss of ``cfg.objective`` over a step's pairs (ORPO and SimPO with ``sft_weight``: plus the
    NLL term over the step's chosen tokens), the replay batches' mean NLL, and ``kl.weight x`` the KL anchor."""

    def __init__(self, cfg: TrainConfig, data: TokenizedPairs, held: TokenizedPairs, pad_id: int, device: str, autocast: Callable,
                 replay: list[TokenizedExample]):
        super().__init__(cfg, data, held, pad_id, device, autocast, replay)
        self.data: TokenizedPairs = data
        self.held: TokenizedPairs = held
        self.replay = PreferenceReplay(replay, self.replay_ratio, cfg.seed, cfg.batch_size, cfg.max_length, pad_id)
        self.ref: dict[str, list[float]] = {}
        self.ref_stats = RefStats()
        self.ref_identity: str | None = None
        self.warned = False
        self._epoch: int | None = None
        self._batches: list[list[int]] = []
        self._acc: dict[str, list[float]] = {}
        self._first: dict[str, float] | None = None
        self._replay_batches: list[Batch] = []
        self._nll = self._kl = 0.0
        self._anchored = 0

    @classmethod
    def read_data(cls, cfg: TrainConfig, data_path: Path, config_dir: Path) -> tuple[PreferenceRead, list[PreferencePair], list[PreferencePair]]:
        read = read_pairs(data_path, file_format=cfg.data.format, strict=True)
        return read_split(read, lambda p: read_pairs(p, strict=True).examples, cfg, config_dir)

    @classmethod
    def tokenize(cls, train_rows: list[PreferencePair], eval_rows: list[PreferencePair], tok, cfg: TrainConfig, log: Log) -> tuple[TokenizedPairs, TokenizedPairs]:
        return tokenize_split(tokenize_pairs, train_rows, eval_rows, tok, cfg, log, "pairs", "no preference pair is usable",
                              "fix empty or identical answers, raise max_length, or shorten the prompts")

    @property
    def needs_reference(self) -> bool:
        return self.cfg.objective == "dpo"

    # -- reference
    def prepare(self, model, start: StartPoint, log: Log) -> None:
        """DPO: fill ``self.ref`` for every train and held-out pair, from the cache, else one no-grad pass of the reference."""
        self.start = start
        if not self.needs_reference:
            return
        self.ref_identity = reference_identity(start.base_fingerprint, start.load, self.cfg, start.init_from)
        cache = RefCache(Path(self.cfg.preference.ref_cache), self.ref_identity)
        pairs = {p.key(): p for p in self.data.examples + self.held.examples}
        self.ref, self.ref_stats = reference_logps(model, pairs, cache, batch_size=self.cfg.batch_size, pad_id=self.pad_id, device=self.device,
                                                   autocast=self.autocast, adapter_off=not self.cfg.init_from, log=log)

    def _with_ref(self, b: PairBatch) -> PairBatch:
        if self.needs_reference:
            vals = [self.ref[k] for k in b.keys]
            b.ref = torch.tensor([v[0] for v in vals] + [v[1] for v in vals], dtype=torch.float32)
        return b

    # -- batches
    def total_steps(self) -> int:
        return count_steps(self.data.examples, self.cfg.model_copy(update={"packing": False}))  # a pair is one unit, never packed

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

    # -- the step
    def losses(self, model, group: Sequence[PairBatch], step: int) -> Iterator[torch.Tensor]:
        """Per pair batch: its share of the preference loss (+ the KL on its chosen completions for ``kl.on``
        train/all); then per replay batch: its share of the replay NLL (+ its KL for ``kl.on`` replay/all)."""
        kl = self.kl
        n_pairs = sum(b.n_pairs for b in group)
        nll_tokens = self.nll_tokens(group)
        replay = self.replay.batches(step, sum(b.tokens for b in group)) if self.replay else []
        n_anchor = sum(pref_anchored_count(b, kl.on) for b in group) + sum(anchored_count(b, kl.on) for b in replay) if kl is not None else 0
        n_replay = sum(b.supervised for b in replay)
        self._replay_batches, self._anchored, self._nll, self._kl = replay, n_anchor, 0.0, 0.0
        for b in group:
            with self.autocast():
                loss, stats = self.batch_loss(model, b.to(self.device), n_pairs, nll_tokens)
                self.accumulate(stats)
                if kl is not None and kl.on != "replay":
                    _, kl_sum, _ = preserve_loss_sums(model, chosen_rows(b).to(self.device), "all")
                    self._kl += float(kl_sum.detach()) / max(1, n_anchor)
                    loss = loss + kl.weight * kl_sum / max(1, n_anchor)
            yield loss
        for rb in replay:  # mean NLL over the step's replay tokens (+ their KL)
            with self.autocast():
                nll, kl_sum, _ = preserve_loss_sums(model, rb.to(self.device), kl.on if kl is not None and kl.on != "train" else None)
                self._nll += float(nll.detach()) / max(1, n_replay)
                loss = nll / max(1, n_replay)
                if kl is not None and kl.on != "train":
                    self._kl += float(kl_sum.detach()) / max(1, n_anchor)
                    loss = loss + kl.weight * kl_sum / max(1, n_anchor)
            yield loss

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

    def nll_tokens(self, group: Sequence[PairBatch]) -> int | None:
        """Tokens the NLL term averages over for one optimizer step (ORPO: the chosen rows' whole text)."""
        if self.cfg.objective == "orpo":
            return sum(int(b.attention_mask[: b.n_pairs, 1:].sum()) for b in group)
        if self.cfg.objective == "simpo" and self.cfg.preference.sft_weight > 0:
            return sum(int((b.labels[: b.n_pairs, 1:] != IGNORE).sum()) for b in group)
        return None

    def accumulate(self, stats: dict[str, torch.Tensor]) -> None:
        for k in METRIC_NAMES:
            self._acc.setdefault(k, []).extend(float(x) for x in stats[k].float().cpu())

    def step_metrics(self, group: Sequence[PairBatch], log: Log) -> dict:
        """The step's mean rewards and log-probs over its pairs, then its replay and KL figures."""
        m: dict = {k: round(sum(v) / len(v), 6) for k, v in self._acc.items() if v}
        self._acc = {}
        self._check_trend(m, log)
        if self._replay_batches:
            m.update(replay_tokens=sum(b.replay_tokens for b in self._replay_batches), replay_nll=round(self._nll, 6))
        if self.kl is not None:
            m.update(kl=round(self._kl, 6), kl_tokens=self._anchored)
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
    @property
    def has_held_out(self) -> bool:
        return bool(self.held.examples)

    def evaluate(self, model, log: Log | None = None) -> tuple[float | None, dict]:
        """``(eval loss, metrics)``: the mean per-pair loss and the rewards/log-probs over the held-out pairs."""
        if not self.held.examples:
            return None, {}
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
        return out["eval_loss"], out

    def manifest_block(self) -> dict:
        cfg, lineage = self.cfg, self.start.init_from if self.start is not None else None
        return {
            "name": cfg.objective, **cfg.preference.model_dump(mode="json", exclude={"ref_cache"}),
            "reference": {"identity": self.ref_identity, "model": "base + init_from adapter" if cfg.init_from else "base (adapter disabled)",
                          "computed_pairs": self.ref_stats.computed, "cached_pairs": self.ref_stats.cached,
                          "seconds": round(self.ref_stats.seconds, 2)} if self.needs_reference else None,
            "init_from": lineage, "warning_chosen_logps_fall": self.warned,
        }


def pref_anchored_count(b: PairBatch, on: str) -> int:
    """Positions the KL anchor covers in a preference ``PairBatch``: its chosen completions, unless ``on`` is replay."""
    return 0 if on == "replay" else chosen_rows(b).supervised
