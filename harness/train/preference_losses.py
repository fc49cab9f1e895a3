"""The preference losses, pure functions of summed or length-averaged log-probs, as TRL defines them.

    DPO    loss = -log sigmoid(beta * ((pi_c - ref_c) - (pi_r - ref_r)))           summed completion log-probs
           (label_smoothing: the conservative form -(1-e) log s(x) - e log s(-x));
           IPO  loss = ((pi_c - ref_c)/n_c - (pi_r - ref_r)/n_r - 1/(2 beta))^2     (trl.DPOTrainer, loss_type)
    ORPO   loss = NLL(chosen, prompt included) - beta * mean log sigmoid(log odds(avg pi_c) - log odds(avg pi_r))
                                                                                   (trl.experimental.orpo)
    SimPO  loss = -log sigmoid(beta * (avg pi_c - avg pi_r) - gamma) [+ sft_weight * NLL(chosen completion)]
                                                                                   (trl.experimental.cpo, simpo)

Rewards are TRL's: DPO ``beta * (pi - ref)``, ORPO/SimPO ``beta * pi`` (length-averaged). Tested against TRL in
tests/test_preference.py; the objective that calls them is :mod:`harness.train.preference`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


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
