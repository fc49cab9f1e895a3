"""Next-token drift between forms of one model (``laf parity``), on the positions the scorer scores.

Every form is scored on the same (context, continuation) requests by the
shared-context scorer (``scoring.py``) with its opt-in ``capture`` hook, all
forms in lockstep: the batches depend only on the requests and the settings,
so batch k of every form covers the same positions. At each scored position
we take the full next-token log-softmax of each form and compute, for every
pair (reference R, form F),

    KL(P_R || P_F) = sum_v p_R(v) (log p_R(v) - log p_F(v))     (nats)
    top-1 agreement = argmax p_R == argmax p_F

then drop the batch's distributions: memory is one batch of positions x vocab
per form, nothing is stored, and normal evaluation never pays for the hook
(``capture`` is None there). Per item, KL and agreement are means over the
item's positions (every choice's continuation tokens of a multiple-choice
item).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from .scoring import score_loglikelihood


@dataclass
class PairDrift:
    reference: str
    form: str
    kl: list[float] = field(default_factory=list)  # per scored position
    agree: list[bool] = field(default_factory=list)
    per_item: dict = field(default_factory=dict)  # item key -> [kl sum, agreements, positions]

    def summary(self) -> dict:
        if not self.kl:
            return {"positions": 0, "kl_mean": None, "kl_p99": None, "kl_max": None, "top1_agreement": None, "items": 0, "item_kl": {}}
        kl = torch.tensor(self.kl, dtype=torch.float64)
        return {
            "positions": len(self.kl),
            "kl_mean": float(kl.mean()),
            "kl_p99": float(torch.quantile(kl, 0.99)),
            "kl_max": float(kl.max()),
            "top1_agreement": sum(self.agree) / len(self.agree),
            "items": len(self.per_item),
            "item_kl": {k: v[0] / v[2] for k, v in self.per_item.items()},
        }


def next_token_drift(models: dict[str, object], pairs: list[tuple[str, str]], requests: list[tuple[list[int], list[int]]],
                     owners: list[str], *, batch_size: int, max_length: int, pad_id: int, device) -> dict[tuple[str, str], PairDrift]:
    """KL and top-1 agreement of every (reference, form) pair at every scored position of ``requests`` (token ids);
    ``owners[i]`` names the item request i belongs to."""
    captured: dict[str, tuple] = {}

    def keeper(name: str):
        def keep(spans, logp):
            captured[name] = (spans, logp)
        return keep

    gens = {name: score_loglikelihood(m, requests, batch_size=batch_size, max_length=max_length, pad_id=pad_id, device=device,
                                      capture=keeper(name)) for name, m in models.items()}
    out = {p: PairDrift(*p) for p in pairs}
    # The scorers are generators that each hold torch.no_grad() while suspended; zip leaves all but the first
    # unfinished, and closing one later would restore *its* saved grad mode. Close them all here and restore ours,
    # so the caller's grad mode is what it was (a training run in the same process must still get gradients).
    grad_mode = torch.is_grad_enabled()
    try:
        for _ in zip(*gens.values()):
            for (r, f), drift in out.items():
                spans, lr = captured[r]
                spans_f, lf = captured[f]
                if spans != spans_f:  # the plan is deterministic; a difference would be a scorer bug
                    raise RuntimeError("forms were scored in different batches")
                kl = (lr.exp() * (lr - lf)).sum(-1).clamp_min(0.0).double()
                agree = lr.argmax(-1) == lf.argmax(-1)
                if not torch.isfinite(kl).all():
                    raise ValueError(f"non-finite KL between {r} and {f}")
                for index, start, n in spans:
                    k = kl[start : start + n]
                    a = agree[start : start + n]
                    drift.kl += k.tolist()
                    drift.agree += a.tolist()
                    acc = drift.per_item.setdefault(owners[index], [0.0, 0, 0])
                    acc[0] += float(k.sum())
                    acc[1] += int(a.sum())
                    acc[2] += n
            captured.clear()
    finally:
        for g in gens.values():
            g.close()
        torch.set_grad_enabled(grad_mode)
    for d in out.values():
        if any(not math.isfinite(x) for x in d.kl):
            raise ValueError("non-finite KL")
    return out
