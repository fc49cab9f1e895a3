"""Parity of the trainer's pieces with the transformers references they replace.

* The chunked supervised loss (body once, LM head applied in chunks to the
  supervised positions only, final-logit softcapping) equals
  ``model(input_ids, labels=...).loss`` for a packed batch (position ids
  restarting per example, no attention mask) and a padded batch, and so do
  its gradients.
* The learning-rate schedule equals transformers' ``get_cosine_schedule_with_warmup``
  (and the linear / min-lr variants) shifted by one step, step by step.
"""

from __future__ import annotations

import json
import math
import shutil

import pytest
import torch

from harness.config import validate
from harness.data.formats import to_example
from harness.data.tokenize import tokenize_examples
from harness.train import TrainConfig
from harness.train.batching import make_batches
from harness.train.loss import supervised_loss_sum
from harness.train.schedule import make_scheduler

SOFTCAP = 0.3  # small enough that the tiny model's logits are visibly bent by it


@pytest.fixture(scope="module")
def softcapped(tiny_model_dir, tmp_path_factory):
    """The tiny fixture with ``final_logit_softcapping`` on, loaded by transformers in fp32."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = tmp_path_factory.mktemp("softcap") / "tiny"
    shutil.copytree(tiny_model_dir, folder)
    cfg = json.loads((folder / "config.json").read_text())
    cfg["final_logit_softcapping"] = SOFTCAP
    (folder / "config.json").write_text(json.dumps(cfg))
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    assert model.config.final_logit_softcapping == SOFTCAP
    model.eval()
    return model, AutoTokenizer.from_pretrained(folder)


def _examples(tok, n=6, max_length=64):
    exs = [to_example({"instruction": f"Question {i}: " + "why " * (1 + i % 4), "output": f"answer {i} " * (1 + i % 3)}, "alpaca", i + 1) for i in range(n)]
    td = tokenize_examples(exs, tok, max_length)
    assert len(td.examples) == n
    return td.examples


def _reference_loss(model, batch):
    kwargs = {"position_ids": batch.position_ids}
    if batch.attention_mask is not None:
        kwargs["attention_mask"] = batch.attention_mask
    return model(input_ids=batch.input_ids, labels=batch.labels, use_cache=False, **kwargs).loss


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


@pytest.mark.parametrize("packing", [True, False], ids=["packed", "padded"])
def test_chunked_loss_equals_transformers_loss_with_softcapping(softcapped, packing):
    model, tok = softcapped
    examples = _examples(tok)
    [batch] = make_batches(examples, list(range(len(examples))), batch_size=len(examples), max_length=256, packing=packing, pad_id=tok.pad_token_id)
    if packing:
        assert batch.attention_mask is None and batch.input_ids.shape[0] == 1
        assert int((batch.position_ids[0] == 0).sum()) >= len(examples)  # positions restart per example
    else:
        assert batch.attention_mask is not None and int((batch.attention_mask == 0).sum()) > 0  # real padding

    with torch.no_grad():
        ref = float(_reference_loss(model, batch))
        ours = float(supervised_loss_sum(model, batch, chunk=7)) / batch.supervised  # several head chunks, one partial
        model.config.final_logit_softcapping = None
        try:
            uncapped = float(_reference_loss(model, batch))
        finally:
            model.config.final_logit_softcapping = SOFTCAP
    assert ours == pytest.approx(ref, rel=1e-5, abs=1e-5)
    assert abs(uncapped - ref) > 1e-2, "softcapping must change the loss, or this test could not catch a missing softcap"

    # gradients too: the chunked head runs under activation checkpointing when grad is on
    model.zero_grad(set_to_none=True)
    _reference_loss(model, batch).backward()
    g_ref = _grads(model)
    model.zero_grad(set_to_none=True)
    (supervised_loss_sum(model, batch, chunk=7) / batch.supervised).backward()
    g_ours = _grads(model)
    model.zero_grad(set_to_none=True)
    assert g_ref.keys() == g_ours.keys() and g_ref
    for name, g in g_ref.items():
        torch.testing.assert_close(g_ours[name], g, rtol=1e-4, atol=1e-6, msg=lambda m, name=name: f"{name}: {m}")


def _cfg(**optim) -> TrainConfig:
    return validate(TrainConfig, {"name": "s", "model": "default", "data": {"path": "x.jsonl"}, "optim": {"lr": 1e-3, **optim}}, "test.yaml")


def _lrs(sched, steps):
    out = []
    for _ in range(steps):
        out.append(sched.get_last_lr()[0])
        sched.optimizer.step()
        sched.step()
    return out


@pytest.mark.parametrize(
    ("optim", "total"),
    [
        ({"scheduler": "cosine", "warmup_steps": 5}, 40),
        ({"scheduler": "cosine", "warmup_ratio": 0.1}, 97),
        ({"scheduler": "cosine", "warmup_steps": 0}, 13),
        ({"scheduler": "cosine", "warmup_steps": 3, "min_lr_ratio": 0.1}, 30),
        ({"scheduler": "linear", "warmup_steps": 4}, 25),
    ],
)
def test_lr_schedule_matches_transformers_step_by_step(optim, total):
    from transformers import get_cosine_schedule_with_warmup, get_cosine_with_min_lr_schedule_with_warmup, get_linear_schedule_with_warmup

    cfg = _cfg(**optim)
    warmup = optim.get("warmup_steps")
    if warmup is None:
        warmup = math.ceil(optim["warmup_ratio"] * total)
    p = torch.nn.Parameter(torch.zeros(1))

    def opt():
        return torch.optim.SGD([p], lr=cfg.optim.lr)

    ours = _lrs(make_scheduler(opt(), cfg.optim, total), total)
    # transformers spends step 0 at lr 0; ours starts one step later on the same curve
    if cfg.optim.scheduler == "linear":
        ref_sched = get_linear_schedule_with_warmup(opt(), warmup + 1, total + 1)
    elif cfg.optim.min_lr_ratio:
        ref_sched = get_cosine_with_min_lr_schedule_with_warmup(opt(), warmup + 1, total + 1, min_lr_rate=cfg.optim.min_lr_ratio)
    else:
        ref_sched = get_cosine_schedule_with_warmup(opt(), warmup + 1, total + 1)
    ref = _lrs(ref_sched, total + 1)
    assert ref[0] == 0.0
    assert ours == pytest.approx(ref[1:], rel=1e-12, abs=1e-15)
    assert max(ours) == pytest.approx(cfg.optim.lr) and ours[0] > 0


@pytest.mark.parametrize("softcap", [None, SOFTCAP * 30], ids=["plain", "softcapped"])
@pytest.mark.parametrize(("rows", "vocab_tile"), [(7, 96), (64, 512), (5, 1)], ids=["partial-tiles", "one-tile", "one-column-tiles"])
def test_tiled_head_equals_full_log_softmax_and_its_gradient(softcap, rows, vocab_tile):
    """The fused head's tiles (an online log-sum-exp across the vocabulary, the gradient accumulated in the same pass)
    against the textbook: full-vocabulary logits, ``log_softmax``, autograd. 96-column tiles leave a partial last
    tile of 512 (5 x 96 + 32), 7-row chunks a partial last chunk; targets sit in every tile, the first and last word
    included; the logits are spread wide (std 4) so the running maximum changes from tile to tile."""
    from harness.train.loss import token_logps

    torch.manual_seed(0)
    n, d, vocab = 40, 24, 512
    head = torch.nn.Linear(d, vocab, bias=False)
    with torch.no_grad():
        head.weight.normal_(0, 1.0)
    head.weight.requires_grad_(False)  # LoRA's frozen head: the fused path
    h0 = torch.randn(n, d) * 4 / d**0.5
    y = torch.randint(0, vocab, (n,))
    y[0], y[1] = 0, vocab - 1

    h = h0.clone().requires_grad_(True)
    ours = token_logps(head, softcap, h, y, rows, vocab_tile)
    (ours * torch.linspace(0.5, 1.5, n)).sum().backward()  # a gradient that differs per row

    hr = h0.double().requires_grad_(True)
    z = hr @ head.weight.double().T
    if softcap:
        z = torch.tanh(z / softcap) * softcap
    ref = torch.log_softmax(z, -1).gather(1, y[:, None]).squeeze(1)
    (ref * torch.linspace(0.5, 1.5, n, dtype=torch.float64)).sum().backward()

    assert ours.dtype == torch.float32 and float(ref.std()) > 1.0
    torch.testing.assert_close(ours.double(), ref.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(h.grad.double(), hr.grad, rtol=1e-5, atol=1e-6)
    with torch.no_grad():  # without a gradient: the same numbers
        torch.testing.assert_close(token_logps(head, softcap, h0, y, rows, vocab_tile), ours.detach(), rtol=0, atol=1e-6)


def test_tiled_head_marks_a_target_outside_the_vocabulary_as_nan():
    """A target id past the head's rows falls in no tile: its log-prob is NaN (the trainer refuses a non-finite loss),
    never a neighbour's value, with or without a gradient (no IndexError from the gradient's row lookup)."""
    from harness.train.loss import token_logps

    head = torch.nn.Linear(8, 32, bias=False).requires_grad_(False)
    h = torch.randn(3, 8)
    with torch.no_grad():
        out = token_logps(head, None, h, torch.tensor([0, 31, 32]), 2, 5)
    assert torch.isfinite(out[:2]).all() and torch.isnan(out[2])
    hg = h.clone().requires_grad_(True)
    out = token_logps(head, None, hg, torch.tensor([0, 31, 32]), 2, 5)
    assert torch.isfinite(out[:2]).all() and torch.isnan(out[2])


def test_tiled_head_with_masked_words_in_the_first_tiles_matches_the_textbook():
    """A ``-inf`` bias on whole tiles (a masked vocabulary) leaves the running maximum at ``-inf`` for a while: the
    tiles after it must still give the textbook's log-probs and gradients, not NaN; a target that is masked is
    ``-inf``, as ``log_softmax`` gives it."""
    from harness.train.loss import token_logps

    torch.manual_seed(2)
    n, d, vocab, tile = 6, 8, 300, 64
    head = torch.nn.Linear(d, vocab, bias=True)
    with torch.no_grad():
        head.bias.zero_()
        head.bias[:128] = -torch.inf  # the first two tiles
    head.requires_grad_(False)
    y = torch.tensor([130, 299, 200, 257, 5, 64])  # the last two masked
    h0 = torch.randn(n, d)
    h = h0.clone().requires_grad_(True)
    ours = token_logps(head, None, h, y, 4, tile)
    ours[:4].sum().backward()
    hr = h0.double().requires_grad_(True)
    ref = torch.log_softmax(hr @ head.weight.double().T + head.bias.double(), -1).gather(1, y[:, None]).squeeze(1)
    ref[:4].sum().backward()
    torch.testing.assert_close(ours[:4].double(), ref[:4].detach(), rtol=1e-5, atol=1e-5)
    assert bool((ours[4:] == -torch.inf).all())
    torch.testing.assert_close(h.grad.double(), hr.grad, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("softcap", [None, 9.0], ids=["plain", "softcapped"])
@pytest.mark.parametrize("anchored", ["all", "some", "none", "late"])
@pytest.mark.parametrize(("rows", "vocab_tile"), [(7, 96), (64, 512)], ids=["partial-tiles", "one-tile"])
def test_tiled_kl_head_equals_full_softmax_kl_and_its_gradient(softcap, anchored, rows, vocab_tile):
    """The KL anchor's fused head, tile by tile (online log-sum-exp on both sides, E_p[z_p - z_q] carried the same
    way), against the textbook: full logits of the adapted and the base hidden states, ``log_softmax``,
    ``KL(p || q) = sum p (log p - log q)`` where anchored, autograd. Both fused forms: per-row (log q(y), KL) and
    the combined scalar ``NLL / nll_div + w KL / kl_div``, whose per-row numbers must be the same to the last bit."""
    from harness.train.loss import _FusedHeadLossKL, token_logps_and_kl

    torch.manual_seed(1)
    n, d, vocab = 30, 16, 512
    head = torch.nn.Linear(d, vocab, bias=softcap is not None)  # a bias in one of the two
    with torch.no_grad():
        head.weight.normal_(0, 1.0)
        if head.bias is not None:
            head.bias.normal_(0, 0.5)
    head.requires_grad_(False)
    h0 = torch.randn(n, d) * 4 / d**0.5
    hb = h0 + 0.3 * torch.randn(n, d) / d**0.5  # the base's states: near the adapted ones, as after a few steps
    y = torch.randint(0, vocab, (n,))
    mask = {"all": torch.ones(n, dtype=torch.bool), "some": torch.arange(n) % 3 == 1, "none": torch.zeros(n, dtype=torch.bool),
            "late": torch.arange(n) >= 7}[anchored]  # late: the first 7-row chunk has no anchored row, the others all
    weights = torch.linspace(0.5, 1.5, n, dtype=torch.float64)

    hr = h0.double().requires_grad_(True)

    def logits(x):
        z = x @ head.weight.double().T + (head.bias.double() if head.bias is not None else 0)
        return torch.tanh(z / softcap) * softcap if softcap else z

    logq = torch.log_softmax(logits(hr), -1)
    logpb = torch.log_softmax(logits(hb.double()), -1)
    ref_lp = logq.gather(1, y[:, None]).squeeze(1)
    ref_kl = (logpb.exp() * (logpb - logq)).sum(-1) * mask
    (ref_lp * weights + ref_kl * weights.flip(0)).sum().backward(retain_graph=True)
    assert anchored == "none" or float(ref_kl[mask].min()) > 1e-3  # real, distinct distributions

    h = h0.clone().requires_grad_(True)
    lp, kl = token_logps_and_kl(head, softcap, h, hb, y, mask, rows, vocab_tile)
    (lp * weights.float() + kl * weights.flip(0).float()).sum().backward()
    torch.testing.assert_close(lp.double(), ref_lp.detach(), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(kl.double(), ref_kl.detach(), rtol=1e-4, atol=2e-6)
    assert bool((kl[~mask] == 0).all())
    torch.testing.assert_close(h.grad.double(), hr.grad, rtol=1e-4, atol=1e-6)
    if anchored == "none":  # one walk serves both heads: without anchored rows it is the plain loss's, bit for bit
        from harness.train.loss import token_logps

        assert torch.equal(lp.detach(), token_logps(head, softcap, h0, y, rows, vocab_tile))

    nll_div, kl_weight, kl_div = 7.0, 0.5, 3.0
    hr.grad = None
    (-ref_lp.sum() / nll_div + kl_weight * ref_kl.sum() / kl_div).backward()
    h2 = h0.clone().requires_grad_(True)
    loss, nll, kls = _FusedHeadLossKL.apply(h2, hb, mask, head.weight, head.bias, y, softcap, rows, vocab_tile, nll_div, kl_weight, kl_div, True)
    loss.backward()
    assert torch.equal(nll, -lp.detach().sum()) and torch.equal(kls, kl.detach().sum())  # the same walk, the same bits
    torch.testing.assert_close(loss.detach(), nll / nll_div + kl_weight * kls / kl_div, rtol=0, atol=0)
    torch.testing.assert_close(h2.grad.double(), hr.grad, rtol=1e-4, atol=1e-6)
