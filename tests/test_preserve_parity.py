"""Parity of the KL anchor (``preserve.kl``) with the published formula and HF's own loss.

The fused path computes, per supervised position, ``log q(y)`` and ``KL(p_base || q)`` from the hidden states in
chunks, with both gradients formed while each chunk's logits are alive. The reference is the textbook computation
on full-vocabulary logits from ``model(...)``: ``torch.nn.functional.kl_div(log q, log p, log_target=True)`` with
the base being the same PeftModel inside ``disable_adapter()``. Checked for packed and padded batches, with and
without the final-logit softcap, for every ``on`` choice, on values and on the LoRA gradients.
"""

from __future__ import annotations

import json
import shutil

import pytest
import torch
import torch.nn.functional as F

from harness.data.formats import to_example
from harness.data.tokenize import IGNORE, TokenizedExample, tokenize_examples
from harness.train.batching import make_batches
from harness.train.loss import preserve_loss, preserve_loss_sums, supervised_loss_sum


def _lora_model(folder, softcap):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = json.loads((folder / "config.json").read_text())
    cfg["final_logit_softcapping"] = softcap
    (folder / "config.json").write_text(json.dumps(cfg))
    base = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    torch.manual_seed(0)
    model = get_peft_model(base, LoraConfig(r=4, lora_alpha=8, target_modules="all-linear", lora_dropout=0.0, init_lora_weights=False))
    model.train()
    return model, AutoTokenizer.from_pretrained(folder)


@pytest.fixture(scope="module", params=[None, 0.3], ids=["plain", "softcap"])
def lora(request, tiny_model_dir, tmp_path_factory):
    folder = tmp_path_factory.mktemp("kl") / "tiny"
    shutil.copytree(tiny_model_dir, folder)
    return _lora_model(folder, request.param)


def _batch(tok, packing):
    exs = [to_example({"instruction": f"Question {i}: " + "why " * (1 + i % 4), "output": f"answer {i} " * (1 + i % 3)}, "alpaca", i + 1) for i in range(4)]
    td = tokenize_examples(exs, tok, 64).examples
    replay = [TokenizedExample(ids, list(ids), 100 + j, replay=True)
              for j, ids in enumerate(tok(["The quick brown fox jumps over the lazy dog.", "Water boils at 100 degrees."])["input_ids"])]
    return make_batches(td + replay, [0, 4, 1, 2, 5, 3], batch_size=8, max_length=256 if packing else 64, packing=packing, pad_id=tok.pad_token_id)[0]


def _reference(model, batch, on):
    kwargs = {"position_ids": batch.position_ids, "use_cache": False}
    if batch.attention_mask is not None:
        kwargs["attention_mask"] = batch.attention_mask
    logq = torch.log_softmax(model(input_ids=batch.input_ids, **kwargs).logits.float()[:, :-1], -1)
    with torch.no_grad(), model.disable_adapter():
        logp = torch.log_softmax(model(input_ids=batch.input_ids, **kwargs).logits.float()[:, :-1], -1)
    y = batch.labels[:, 1:]
    keep = y != IGNORE
    rep = batch.replay[:, 1:] if batch.replay is not None else torch.zeros_like(keep)
    anchored = {"all": keep, "replay": keep & rep, "train": keep & ~rep}[on]
    nll = -logq.gather(-1, y.clamp_min(0).unsqueeze(-1)).squeeze(-1)[keep].sum()
    kl = F.kl_div(logq[anchored], logp[anchored], log_target=True, reduction="sum")
    return nll, kl, int(anchored.sum())


def _grads(model):
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad and p.grad is not None}


@pytest.mark.parametrize("packing", [True, False], ids=["packed", "padded"])
@pytest.mark.parametrize("on", ["all", "train", "replay"])
def test_kl_anchor_equals_the_formula_on_full_logits(lora, packing, on):
    model, tok = lora
    batch = _batch(tok, packing)
    assert batch.replay is not None and batch.replay_tokens > 0
    model.zero_grad()
    nll_ref, kl_ref, n_ref = _reference(model, batch, on)
    (nll_ref + 0.7 * kl_ref).backward()
    g_ref = _grads(model)
    model.zero_grad()
    nll, kl, n = preserve_loss_sums(model, batch, on, chunk=5)  # a chunk that does not divide the rows
    (nll + 0.7 * kl).backward()
    g = _grads(model)
    assert n == n_ref > 0
    assert float(kl_ref.detach()) > 1e-4  # the adapter (non-zero init) moved the distribution: the check is not 0 == 0
    torch.testing.assert_close(nll, nll_ref, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(kl, kl_ref, rtol=1e-4, atol=1e-5)
    assert g.keys() == g_ref.keys() and g
    for k in g:
        torch.testing.assert_close(g[k], g_ref[k], rtol=1e-4, atol=2e-5)  # fp32 sums in another order


@pytest.mark.parametrize("packing", [True, False], ids=["packed", "padded"])
@pytest.mark.parametrize("on", ["all", "train", "replay"])
def test_combined_anchor_loss_equals_the_formula_on_full_logits(lora, packing, on):
    """preserve_loss (one head product for both gradients, what SFT trains with) against nll_scale x NLL + kl_scale
    x F.kl_div on full logits: the value, both sums and the LoRA gradients, with and without the softcap."""
    model, tok = lora
    batch = _batch(tok, packing)
    a, b = 1 / 0.77, 0.7  # unequal, and of the size the existing parity test uses (its tolerance fits gradients of this size)
    model.zero_grad()
    nll_ref, kl_ref, n_ref = _reference(model, batch, on)
    (a * nll_ref + b * kl_ref).backward()
    g_ref = _grads(model)
    model.zero_grad()
    loss, nll, kl, n = preserve_loss(model, batch, on, 0.77, b, 1.0, chunk=5)  # a chunk that does not divide the rows
    loss.backward()
    g = _grads(model)
    assert n == n_ref > 0 and not nll.requires_grad and not kl.requires_grad
    assert float(kl_ref.detach()) > 1e-4
    torch.testing.assert_close(nll, nll_ref.detach(), rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(kl, kl_ref.detach(), rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(loss.detach(), (a * nll_ref + b * kl_ref).detach(), rtol=1e-5, atol=1e-6)
    assert g.keys() == g_ref.keys() and g
    for k in g:
        torch.testing.assert_close(g[k], g_ref[k], rtol=1e-4, atol=2e-5)


def test_no_anchor_is_the_plain_loss(lora):
    model, tok = lora
    batch = _batch(tok, True)
    nll, kl, n = preserve_loss_sums(model, batch, None)
    assert n == 0 and float(kl) == 0.0
    assert torch.equal(nll, supervised_loss_sum(model, batch))


def test_kl_is_zero_at_the_base(lora):
    """With the adapter's B at zero (PEFT's default init) the adapted model is the base: KL 0, gradient of KL 0."""
    model, tok = lora
    saved = {n: p.detach().clone() for n, p in model.named_parameters() if "lora_B" in n}
    try:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if "lora_B" in n:
                    p.zero_()
        _, kl, n = preserve_loss_sums(model, _batch(tok, True), "all")
        assert n > 0 and abs(float(kl)) < 1e-5
    finally:
        with torch.no_grad():
            for n, p in model.named_parameters():
                if n in saved:
                    p.copy_(saved[n])
