"""Preference training (DPO, ORPO, SimPO): parity with TRL, the reference cache, data checks, bad input, the suite type."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from harness.config import validate
from harness.data.preference import read_pairs, tokenize_pairs
from harness.errors import LafError
from harness.train import TrainConfig, train
from harness.train.preference import dpo_losses, orpo_terms, pair_batch, sequence_logps, simpo_losses
from tests.conftest import assert_clean_error, run_cli

ROWS = [
    {"prompt": f"What is the code for item {i}?", "chosen": f"The code for item {i} is Z{i * 7}.", "rejected": f"Item {i} has code Q{i * 3 + 1}, I think."}
    for i in range(24)
]


def write_jsonl(path: Path, rows) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_config(tmp_path: Path, model_dir: Path, objective: str = "dpo", rows=ROWS, **over) -> TrainConfig:
    raw: dict = {
        "name": f"pref-{objective}", "model": str(model_dir), "precision": "fp32", "objective": objective,
        "data": {"path": str(write_jsonl(tmp_path / "pairs.jsonl", rows))},
        "max_length": 64, "batch_size": 4, "max_steps": 4, "eval_every": 2, "save_every": 2,
        "registry": str(tmp_path / "registry"), "output_dir": str(tmp_path / f"run-{objective}"),
        "preference": {"ref_cache": str(tmp_path / "refcache")},
    }
    for k, v in over.items():
        node = raw
        *parents, last = k.split("__")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = v
    return validate(TrainConfig, raw, "test.yaml")


# ---------------------------------------------------------------- parity with TRL


def _policy(tiny_model_dir):
    """The tiny model in fp32 with a LoRA whose weights are perturbed (so policy != reference), dropout 0."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    torch.manual_seed(0)
    model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, lora_dropout=0.0, target_modules="all-linear", task_type="CAUSAL_LM"))
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    model.eval()  # no dropout anywhere: both sides compute the same function
    return model, tok


def _batch(tok, n=3):
    pairs = read_pairs(write_jsonl(Path(tok.name_or_path) / "parity.jsonl", ROWS[:n])).examples
    data = tokenize_pairs(pairs, tok, 64, use_chat_template=False)
    assert len(data.examples) == n
    return pair_batch(data.examples, tok.pad_token_id)


def _grads(model) -> dict[str, torch.Tensor]:
    out = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    model.zero_grad(set_to_none=True)
    return out


def _assert_grads_equal(ours, theirs):
    assert ours.keys() == theirs.keys() and ours
    for k in ours:
        torch.testing.assert_close(ours[k], theirs[k], atol=1e-5, rtol=1e-4, msg=k)


def _dataset():
    import datasets

    return datasets.Dataset.from_list(ROWS[:4])


def _nudge(model, seed: int) -> None:
    """Move the trained ("default") adapter away from its starting point."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "lora_" in n and ".default." in n:
                p.add_(torch.randn(p.shape, generator=g) * 0.05)


@pytest.mark.parametrize("loss_type", ["sigmoid", "ipo"])
def test_dpo_loss_rewards_and_gradients_equal_trl(tiny_model_dir, tmp_path, loss_type):
    """Retraining an existing adapter (our ``init_from``): the reference is the adapter as it starts (TRL's "ref" copy)."""
    from trl import DPOConfig, DPOTrainer

    model, tok = _policy(tiny_model_dir)
    b = _batch(tok)
    beta, B = 0.2, b.n_pairs
    with torch.no_grad():
        ref = sequence_logps(model, b).sums  # our reference: the policy before its first step
    args = DPOConfig(output_dir=str(tmp_path / "trl"), beta=beta, loss_type=[loss_type], report_to=[], per_device_train_batch_size=B,
                     max_length=64, use_cpu=True, bf16=False, gradient_checkpointing=False, save_strategy="no", logging_strategy="no")
    trainer = DPOTrainer(model=model, args=args, train_dataset=_dataset(), processing_class=tok)  # copies the adapter as "ref"
    _nudge(model, 2)
    inputs = {"input_ids": b.input_ids, "attention_mask": b.attention_mask, "completion_mask": (b.labels != -100).long()}
    theirs_ref = torch.cat(trainer.compute_ref_log_probs(trainer.model, inputs))
    torch.testing.assert_close(ref, theirs_ref, atol=1e-5, rtol=1e-6)

    lp = sequence_logps(model, b)
    losses, rc, rr = dpo_losses(lp.sums[:B], lp.sums[B:], ref[:B], ref[B:], beta=beta, loss=loss_type, nc=lp.counts[:B], nr=lp.counts[B:])
    ours_loss = losses.mean()
    ours_loss.backward()
    ours_grads = _grads(model)

    theirs_loss = trainer._compute_loss(trainer.model, inputs, return_outputs=False)
    theirs_loss.backward()
    theirs_grads = _grads(model)
    metrics = {k: v[-1] for k, v in trainer._metrics["eval"].items()}  # the model is in eval mode

    torch.testing.assert_close(ours_loss.detach(), theirs_loss.detach(), atol=1e-5, rtol=1e-5)
    assert abs(float(rc.mean()) - metrics["rewards/chosen"]) < 1e-5
    assert abs(float(rr.mean()) - metrics["rewards/rejected"]) < 1e-5
    assert abs(float((rc - rr).mean()) - metrics["rewards/margins"]) < 1e-5
    assert abs(float((rc > rr).float().mean()) - metrics["rewards/accuracies"]) < 1e-6
    assert abs(float(lp.sums[:B].detach().mean()) - metrics["logps/chosen"]) < 1e-4
    assert abs(float(lp.sums[B:].detach().mean()) - metrics["logps/rejected"]) < 1e-4
    assert float((rc - rr).abs().max()) > 1e-3  # the policy really moved away from the reference
    _assert_grads_equal(ours_grads, theirs_grads)


def _orpo_style_batch(b):
    B = b.n_pairs
    labels = b.labels
    return {
        "chosen_input_ids": b.input_ids[:B], "chosen_attention_mask": b.attention_mask[:B], "chosen_labels": labels[:B],
        "rejected_input_ids": b.input_ids[B:], "rejected_attention_mask": b.attention_mask[B:], "rejected_labels": labels[B:],
    }


def test_orpo_loss_rewards_and_gradients_equal_trl(tiny_model_dir, tmp_path):
    from trl.experimental.orpo import ORPOConfig, ORPOTrainer

    model, tok = _policy(tiny_model_dir)
    b = _batch(tok)
    beta, B = 0.25, b.n_pairs
    lp = sequence_logps(model, b, full_chosen=True)
    ratio, rc, rr = orpo_terms(lp.avg[:B], lp.avg[B:], beta=beta)
    ours_loss = lp.nll_sum / lp.nll_count - ratio.mean()
    ours_loss.backward()
    ours_grads = _grads(model)

    args = ORPOConfig(output_dir=str(tmp_path / "trl"), beta=beta, report_to=[], max_length=64, use_cpu=True, bf16=False, save_strategy="no")
    trainer = ORPOTrainer(model=model, args=args, train_dataset=_dataset(), processing_class=tok)
    theirs_loss, metrics = trainer.get_batch_loss_metrics(model, _orpo_style_batch(b))
    theirs_loss.backward()
    theirs_grads = _grads(model)

    torch.testing.assert_close(ours_loss.detach(), theirs_loss.detach(), atol=1e-5, rtol=1e-5)
    assert abs(float(rc.mean()) - float(metrics["rewards/chosen"])) < 1e-5
    assert abs(float(rr.mean()) - float(metrics["rewards/rejected"])) < 1e-5
    assert abs(float(lp.avg[:B].mean()) - float(metrics["logps/chosen"])) < 1e-5
    _assert_grads_equal(ours_grads, theirs_grads)


def test_simpo_loss_and_gradients_equal_trl_cpo(tiny_model_dir, tmp_path):
    from trl.experimental.cpo import CPOConfig, CPOTrainer

    model, tok = _policy(tiny_model_dir)
    b = _batch(tok)
    beta, gamma, B = 2.0, 0.5, b.n_pairs
    lp = sequence_logps(model, b)
    losses, rc, rr = simpo_losses(lp.avg[:B], lp.avg[B:], beta=beta, gamma=gamma)
    ours_loss = losses.mean()
    ours_loss.backward()
    ours_grads = _grads(model)

    args = CPOConfig(output_dir=str(tmp_path / "trl"), beta=beta, loss_type="simpo", simpo_gamma=gamma, cpo_alpha=0.0, report_to=[],
                     max_length=64, use_cpu=True, bf16=False, save_strategy="no")
    trainer = CPOTrainer(model=model, args=args, train_dataset=_dataset(), processing_class=tok)
    theirs_loss, metrics = trainer.get_batch_loss_metrics(model, _orpo_style_batch(b))
    theirs_loss.backward()
    theirs_grads = _grads(model)

    torch.testing.assert_close(ours_loss.detach(), theirs_loss.detach(), atol=1e-5, rtol=1e-5)
    assert abs(float(rc.mean()) - float(metrics["rewards/chosen"])) < 1e-5
    _assert_grads_equal(ours_grads, theirs_grads)


def _separate_forward_logps(model, b):
    """The plain computation: each side on its own through the full model, full-vocabulary log-softmax."""
    sums, nll = [], torch.zeros(())
    for i in range(b.input_ids.shape[0]):
        n = int(b.attention_mask[i].sum())
        ids = b.input_ids[i : i + 1, :n]
        logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), -1).gather(1, ids[0, 1:, None]).squeeze(1)
        sums.append(logp[b.labels[i, 1:n] != -100].sum())
        if i < b.n_pairs:
            nll = nll - logp.sum()
    return torch.stack(sums), nll


@pytest.mark.parametrize("softcap", [None, 3.0])
def test_shared_prompt_rows_and_fused_head_equal_separate_forwards(tiny_model_dir, softcap):
    """One body pass with each prompt once (pairs sharing rows, a 4D mask with the sliding window) and the fused head
    give every side's log-probs, ORPO's NLL and every LoRA gradient of the plain per-side full-logits computation."""
    from harness.train.preference import shared_rows

    model, tok = _policy(tiny_model_dir)
    model.get_base_model().config.final_logit_softcapping = softcap
    rows = [
        {"prompt": "Which code does the catalogue list for item 41?", "chosen": "Code Z287, on the top shelf.",
         "rejected": "Code Q124 I believe."},
        {"prompt": "Code 2?", "chosen": "Z2.", "rejected": "Q5, maybe."},
        {"prompt": "Code 3?", "chosen": "Code Z3", "rejected": "Code Q9"},  # the answers share a prefix too
    ]
    pairs = tokenize_pairs(read_pairs(write_jsonl(Path(tok.name_or_path) / "shared.jsonl", rows)).examples, tok, 96, use_chat_template=False)
    assert len(pairs.examples) == 3
    b = pair_batch(pairs.examples, tok.pad_token_id)
    assert b.input_ids.shape[1] > 32  # longer than the sliding window
    lay = shared_rows(b, full_chosen=True)
    assert lay.input_ids.shape[0] < b.n_pairs  # the two short pairs share a row
    weights = torch.linspace(0.5, 1.5, 2 * b.n_pairs)

    theirs_sums, theirs_nll = _separate_forward_logps(model, b)
    ((theirs_sums * weights).sum() + 0.1 * theirs_nll).backward()
    theirs_grads = _grads(model)
    head = model.get_base_model().get_output_embeddings()
    for trained_head in (False, True):  # fused head; the checkpointed log-softmax any other head takes
        head.weight.requires_grad_(trained_head)
        lp = sequence_logps(model, b, full_chosen=True, chunk=7)
        ((lp.sums * weights).sum() + 0.1 * lp.nll_sum).backward()
        ours_grads = {k: v for k, v in _grads(model).items() if "lora_" in k}
        head.weight.requires_grad_(False)
        torch.testing.assert_close(lp.sums.detach(), theirs_sums.detach(), atol=1e-5, rtol=1e-6)
        torch.testing.assert_close(lp.nll_sum.detach(), theirs_nll.detach(), atol=1e-4, rtol=1e-6)
        assert lp.nll_count == int(b.attention_mask[: b.n_pairs, 1:].sum())
        _assert_grads_equal(ours_grads, theirs_grads)
    with torch.no_grad():
        torch.testing.assert_close(sequence_logps(model, b).sums, theirs_sums.detach(), atol=1e-5, rtol=1e-6)


# ---------------------------------------------------------------- training: reference cache, resume, manifest


def _adapter(entry):
    from safetensors.torch import load_file

    return load_file(str(entry.path / "adapter_model.safetensors"))


def test_dpo_reference_is_computed_once_and_resume_is_exact(tiny_model_dir, tmp_path, monkeypatch):
    import harness.train.preference as P

    computed: list[str] = []
    real_put = P.RefCache.put
    monkeypatch.setattr(P.RefCache, "put", lambda self, key, c, r: (computed.append(key), real_put(self, key, c, r))[1])
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    full = train(make_config(tmp_path / "a", tiny_model_dir, lora__dropout=0.1))
    m = full.entry.manifest["objective"]
    assert m["name"] == "dpo" and m["beta"] == 0.1 and m["reference"]["computed_pairs"] == len(ROWS) and m["reference"]["cached_pairs"] == 0
    assert m["reference"]["model"] == "base (adapter disabled)"
    assert len(computed) == len(set(computed)) == len(ROWS)  # one reference pass over every pair (train and held out)
    computed.clear()

    # a repeated run with the same reference and pairs reads every reference log-prob from the cache
    cfg_b = make_config(tmp_path / "b", tiny_model_dir, lora__dropout=0.1, preference__ref_cache=str(tmp_path / "a" / "refcache"))

    def stop_after_3(ev):
        if ev.step == 3:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        train(cfg_b, on_step=stop_after_3)
    resumed = train(cfg_b, resume=True)
    assert computed == [], "a repeated or resumed run recomputes no reference log-prob"
    assert resumed.entry.manifest["objective"]["reference"] | {"seconds": 0} == {**m["reference"], "seconds": 0, "computed_pairs": 0, "cached_pairs": len(ROWS)}
    a, b = _adapter(full.entry), _adapter(resumed.entry)
    assert a.keys() == b.keys() and a
    for k in a:
        assert torch.equal(a[k], b[k]), k
    mf = [json.loads(x) for x in (full.entry.path / "metrics.jsonl").read_text().splitlines()]
    mr = [json.loads(x) for x in (resumed.entry.path / "metrics.jsonl").read_text().splitlines()]
    assert [x["loss"] for x in mf] == [x["loss"] for x in mr] and [x["step"] for x in mr] == [1, 2, 3, 4]
    for key in ("loss", "rewards/chosen", "rewards/rejected", "rewards/accuracies", "rewards/margins", "logps/chosen", "logps/rejected"):
        assert all(key in x for x in mf), key
        assert all(np_finite(x[key]) for x in mf)


def test_an_interrupted_reference_pass_keeps_what_it_computed(tiny_model_dir, tmp_path, monkeypatch):
    """The reference pass over every pair can take minutes on the real model: it logs how far it is and saves its cache
    as it goes, so a kill during the pass loses at most one interval's pairs and the rerun computes only the rest."""
    import harness.train.reference as P  # the reference pass and its cache

    monkeypatch.setattr(P, "REF_PROGRESS_S", 0.0)
    real = P.sequence_logps
    calls = {"n": 0}

    def dies_on_the_third_batch(model, b, *a, **k):
        if not model.training:  # the no-grad reference pass (training steps run in train mode)
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
        return real(model, b, *a, **k)

    monkeypatch.setattr(P, "sequence_logps", dies_on_the_third_batch)
    cfg = make_config(tmp_path, tiny_model_dir)
    lines: list[str] = []
    with pytest.raises(KeyboardInterrupt):
        train(cfg, log=lines.append)
    assert any(x.startswith("reference log-probs: 4/") and "saved" in x for x in lines), lines
    assert any(x.startswith("reference log-probs: 8/") for x in lines), lines
    monkeypatch.setattr(P, "sequence_logps", real)
    lines.clear()
    done = train(cfg, log=lines.append)
    assert f"reference log-probs: computing {len(ROWS) - 8} pairs (8 cached)" in lines, lines
    ref = done.entry.manifest["objective"]["reference"]
    assert ref["computed_pairs"] == len(ROWS) - 8 and ref["cached_pairs"] == 8


def np_finite(x) -> bool:
    return x == x and abs(x) != float("inf")


def test_dpo_reference_values_are_the_base_models_log_probs(tiny_model_dir, tmp_path):
    from harness.models import LoadSpec, load_model, resolve_model

    cfg = make_config(tmp_path, tiny_model_dir, max_steps=1, eval_every=0, save_every=0)
    train(cfg)
    cache = json.loads(next((tmp_path / "refcache").glob("*.json")).read_text())["logps"]
    model, tok, _ = load_model(resolve_model(str(tiny_model_dir)), LoadSpec("fp32", None, "cpu"))
    pairs = tokenize_pairs(read_pairs(tmp_path / "pairs.jsonl").examples[:4], tok, 64)
    b = pair_batch(pairs.examples, tok.pad_token_id)
    with torch.no_grad():
        s = sequence_logps(model, b).sums
    for j, p in enumerate(pairs.examples):
        assert cache[p.key()] == pytest.approx([float(s[j]), float(s[4 + j])], abs=1e-4)


@pytest.mark.parametrize("objective", ["orpo", "simpo"])
def test_orpo_and_simpo_train_and_register(tiny_model_dir, tmp_path, objective):
    res = train(make_config(tmp_path, tiny_model_dir, objective=objective, precision="nf4"))
    m = res.entry.manifest
    assert m["objective"]["name"] == objective and m["objective"]["reference"] is None
    lines = [json.loads(x) for x in (res.entry.path / "metrics.jsonl").read_text().splitlines()]
    assert len(lines) == 4 and "eval_rewards/margins" in lines[-1] and all(np_finite(x["loss"]) for x in lines)
    assert not (tmp_path / "refcache").exists(), "ORPO/SimPO need no reference"


def test_init_from_starts_from_the_adapter_and_uses_it_as_reference(tiny_model_dir, tmp_path):
    from harness.train.preference import reference_identity  # noqa: F401  (the identity includes the lineage)

    sft_rows = [{"prompt": r["prompt"], "completion": r["chosen"]} for r in ROWS]
    sft = validate(TrainConfig, {"name": "sft", "model": str(tiny_model_dir), "precision": "fp32", "data": {"path": str(write_jsonl(tmp_path / "sft.jsonl", sft_rows))},
                                 "max_length": 64, "max_steps": 2, "registry": str(tmp_path / "registry"), "output_dir": str(tmp_path / "run-sft")}, "t.yaml")
    sft_entry = train(sft).entry
    res = train(make_config(tmp_path, tiny_model_dir, init_from="sft@1", max_steps=2, lora__dropout=0.0))
    m = res.entry.manifest["objective"]
    assert m["init_from"]["ref"] == "sft@1" and m["reference"]["model"] == "base + init_from adapter"
    # at step 0 the policy is the reference (without dropout): the first step's rewards are 0
    first = json.loads((res.entry.path / "metrics.jsonl").read_text().splitlines()[0])
    assert abs(first["rewards/chosen"]) < 1e-5 and abs(first["rewards/margins"]) < 1e-5
    # the reference really is base + the SFT adapter: its cached log-probs differ from the base's (a run without init_from)
    base_id = train(make_config(tmp_path, tiny_model_dir, max_steps=1, output_dir=str(tmp_path / "r-base"))).entry.manifest["objective"]["reference"]["identity"]
    assert base_id != m["reference"]["identity"]
    caches = {json.loads(f.read_text())["identity"]: json.loads(f.read_text())["logps"] for f in (tmp_path / "refcache").glob("*.json")}
    with_sft, base = caches[m["reference"]["identity"]], caches[base_id]
    assert with_sft.keys() == base.keys() and all(abs(with_sft[k][0] - base[k][0]) > 1e-3 for k in base)
    assert sft_entry.path.exists()


# ---------------------------------------------------------------- bad input


def test_bad_preference_input_is_one_clear_error_or_a_counted_drop(tiny_model_dir, tmp_path):
    # beta <= 0
    for beta in (0, -1):
        with pytest.raises(Exception, match="beta must be"):
            make_config(tmp_path, tiny_model_dir, preference__beta=beta)
    # mixed SFT and preference rows
    with pytest.raises(LafError, match="mixed SFT and preference rows"):
        train(make_config(tmp_path, tiny_model_dir, rows=ROWS[:5] + [{"prompt": "Q?", "completion": "A."}]))
    # a preference file under objective: sft
    with pytest.raises(LafError, match="objective is sft"):
        train(make_config(tmp_path, tiny_model_dir, objective="sft"))
    # identical / empty sides and a prompt that fills max_length are counted drops, the rest trains
    bad = [{"prompt": "Q1?", "chosen": "Same.", "rejected": "Same."}, {"prompt": "Q2?", "chosen": "", "rejected": "No."},
           {"prompt": "word " * 200, "chosen": "Yes.", "rejected": "No."}]
    res = train(make_config(tmp_path, tiny_model_dir, rows=ROWS + bad, max_steps=1, eval_every=0, save_every=0, output_dir=str(tmp_path / "r2")))
    assert res.dropped == {"identical chosen and rejected answers": 1, "empty chosen answer": 1, "chosen: no response tokens left after truncation": 1}
    assert res.entry.manifest["data"]["dropped"] == 3
    # nothing usable at all
    with pytest.raises(LafError, match="no preference pair is usable"):
        train(make_config(tmp_path, tiny_model_dir, rows=bad, output_dir=str(tmp_path / "r3")))
    # missing prompt
    with pytest.raises(LafError, match=r"line 1: missing field 'prompt'"):
        train(make_config(tmp_path, tiny_model_dir, rows=[{"chosen": "a", "rejected": "b"}], output_dir=str(tmp_path / "r4")))


def test_init_from_an_adapter_of_another_base_is_refused(tiny_model_dir, tmp_path):
    from tests.tiny import build_tiny_model

    other = build_tiny_model(tmp_path / "other", seed=3)
    sft = validate(TrainConfig, {"name": "sft", "model": str(other), "precision": "fp32", "data": {"path": str(write_jsonl(tmp_path / "sft.jsonl", [{"prompt": "Q?", "completion": "A."}] * 4))},
                                 "max_length": 64, "max_steps": 1, "registry": str(tmp_path / "registry"), "output_dir": str(tmp_path / "run-sft")}, "t.yaml")
    train(sft)
    with pytest.raises(LafError, match="trained on another base model"):
        train(make_config(tmp_path, tiny_model_dir, init_from="sft@1"))


def test_non_finite_reference_log_probs_are_an_error(tiny_model_dir, tmp_path, monkeypatch):
    import harness.train.reference as P  # the reference pass

    real = P.sequence_logps

    def poisoned(model, b, **kw):
        out = real(model, b, **kw)
        if not torch.is_grad_enabled():
            out.sums[0] = float("nan")
        return out

    monkeypatch.setattr(P, "sequence_logps", poisoned)
    with pytest.raises(LafError, match="non-finite log-probability for the pair at line"):
        train(make_config(tmp_path, tiny_model_dir))


# ---------------------------------------------------------------- data: every format, conversational form, laf data check


def test_every_format_and_the_conversational_form_read_to_the_same_pairs(tmp_path):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = ROWS[:4]
    ref = read_pairs(write_jsonl(tmp_path / "a.jsonl", rows)).examples
    (tmp_path / "a.json").write_text(json.dumps(rows))
    import csv

    with open(tmp_path / "a.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["prompt", "chosen", "rejected"])
        w.writeheader()
        w.writerows(rows)
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "a.parquet")
    datasets.Dataset.from_list(rows).save_to_disk(str(tmp_path / "ds"))
    conv = [{"prompt": [{"role": "user", "content": r["prompt"]}], "chosen": [{"role": "assistant", "content": r["chosen"]}],
             "rejected": {"role": "assistant", "content": r["rejected"]}} for r in rows]
    write_jsonl(tmp_path / "conv.jsonl", conv)
    for name in ("a.json", "a.csv", "a.parquet", "ds", "conv.jsonl"):
        got = read_pairs(tmp_path / name).examples
        assert [(p.prompt, p.chosen, p.rejected) for p in got] == [(p.prompt, p.chosen, p.rejected) for p in ref], name


def test_data_check_reports_preference_problems(tiny_model_dir, tmp_path):
    rows = ROWS[:3] + [ROWS[0], {"prompt": "Q?", "chosen": "X.", "rejected": "X."}, {"prompt": "  ", "chosen": "a", "rejected": "b"},
                       {"prompt": "word " * 200, "chosen": "Yes.", "rejected": "No."}]
    data = write_jsonl(tmp_path / "p.jsonl", rows)
    code, out, err = run_cli("data", "check", str(data), "--model", str(tiny_model_dir), "--max-length", "64", "--out", str(tmp_path / "chk"), "--json")
    assert code == 0, err
    m = json.loads(out)
    c = m["counts"]
    assert (c["examples"], c["kept"], c["identical"], c["empty_prompt"], c["exact_duplicate"], c["no_completion_tokens"], c["truncated"]) == (7, 3, 1, 1, 1, 1, 1)
    mixed = write_jsonl(tmp_path / "mixed.jsonl", ROWS[:2] + [{"instruction": "Do.", "output": "Done."}])
    assert_clean_error(run_cli("data", "check", str(mixed), "--model", "none", "--out", str(tmp_path / "chk2")), "mixed SFT and preference rows")


# ---------------------------------------------------------------- the preference suite type


def test_preference_suite_scores_pairs_with_per_item_records(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.evaluate import EvalSpec, load_run, run_eval
    from harness.prompt import plain_prompt
    from harness.suites import load_suite

    doc = run_eval(EvalSpec(suites=["domain/tempo-t4-pref"], model=str(tiny_model_dir), precision="fp32", out=str(tmp_path / "o"), limit=10, batch_size=4, no_cache=True)).to_dict()
    records = load_run(tmp_path / "o")[1]
    docs = load_suite("domain/tempo-t4-pref").load_docs()
    assert len(records) == 10
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()

    def ll(context: str, cont: str) -> float:  # lm-eval's split: encode(context + cont) minus encode(context)
        whole, ctx = tok(context + cont)["input_ids"], tok(context)["input_ids"]
        ids = torch.tensor([whole])
        with torch.no_grad():
            logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
        return float(sum(logp[i - 1, whole[i]] for i in range(len(ctx), len(whole))))

    accs, margins = [], []
    for r in records:
        d = docs[r.doc_id]
        c, j = ll(plain_prompt(d["prompt"]), d["chosen"]), ll(plain_prompt(d["prompt"]), d["rejected"])
        assert r.metrics["margin"] == pytest.approx(c - j, abs=1e-3)
        assert r.metrics["pref_acc"] == float(c > j)
        n_c, n_r = len(d["chosen"].encode()), len(d["rejected"].encode())
        assert r.metrics["pref_acc_norm"] == float(c / n_c > j / n_r)
        accs.append(r.metrics["pref_acc"])
        margins.append(r.metrics["margin"])
    res = doc["results"]["base"]["domain/tempo-t4-pref"]
    assert res["pref_acc"]["value"] == pytest.approx(sum(accs) / 10) and res["margin"]["value"] == pytest.approx(sum(margins) / 10)


def test_quickstart_preference_files_are_valid_and_held_out(tmp_path):
    root = Path(__file__).resolve().parents[1]
    train_pairs = read_pairs(root / "examples" / "quickstart" / "preference.jsonl").examples
    held = read_pairs(root / "harness" / "suites_builtin" / "domain" / "tempo-t4-pref.jsonl").examples
    assert len(train_pairs) >= 200 and len(held) >= 100
    assert not {p.prompt for p in train_pairs} & {p.prompt for p in held}, "held-out pairs use prompts no training pair uses"
    kinds = [json.loads(x)["kind"] for x in (root / "examples" / "quickstart" / "preference.jsonl").read_text().splitlines()]
    assert sum(k.startswith("abstain_") for k in kinds) >= 40 and sum(k.startswith("wrong_") for k in kinds) >= 150


# ---------------------------------------------------------------- the example configs run (tiny model)


def test_quickstart_orpo_and_dpo_examples_run_on_the_tiny_model(tiny_model_dir, tmp_path, monkeypatch):
    from harness.pipeline import run_pipeline

    root = Path(__file__).resolve().parents[1]
    monkeypatch.chdir(tmp_path)
    reg = str(tmp_path / "registry")
    # the quickstart's SFT adapter, as `laf run examples/quickstart.yaml` registers it (r 8, alpha 16)
    sft_rows = [json.loads(x) for x in (root / "examples" / "quickstart" / "train.jsonl").read_text().splitlines()[:40]]
    sft = validate(TrainConfig, {"name": "quickstart", "model": str(tiny_model_dir), "precision": "nf4", "data": {"path": str(write_jsonl(tmp_path / "sft.jsonl", sft_rows))},
                                 "max_length": 96, "max_steps": 2, "registry": reg, "output_dir": str(tmp_path / "run-sft")}, "t.yaml")
    train(sft)
    common = [f"model={tiny_model_dir}", f"registry={reg}", f"out_root={tmp_path / 'reports'}", "train.max_steps=2", "train.eval_every=1", "train.batch_size=4",
              "eval.batch_size=4", f"eval.cache={tmp_path / 'c.sqlite'}", "eval.suites=[{suite: domain/tempo-t4-pref, limit: 30}, {suite: hallucination/abstention, limit: 30}]",
              "gate.policy.rules=[{suite: domain/tempo-t4-pref, metric: pref_acc, max_drop: 1.0}]", "gate.policy.min_items=10", f"train.preference.ref_cache={tmp_path / 'ref'}"]
    orpo = run_pipeline(root / "examples" / "quickstart-orpo.yaml", common, log=lambda m: None)
    dpo = run_pipeline(root / "examples" / "quickstart-dpo.yaml", common, log=lambda m: None)
    for summary, name, objective in ((orpo, "quickstart-orpo", "orpo"), (dpo, "quickstart-dpo", "dpo")):
        manifest = json.loads((tmp_path / "registry" / name / "1" / "manifest.json").read_text())
        assert manifest["objective"]["name"] == objective
        res = json.loads((Path(summary["run_dir"]) / "eval" / "results.json").read_text())
        assert "domain/tempo-t4-pref" in json.dumps(res)
    dm = json.loads((tmp_path / "registry" / "quickstart-dpo" / "1" / "manifest.json").read_text())["objective"]
    assert dm["init_from"]["ref"] == "quickstart@1" and dm["reference"]["model"] == "base + init_from adapter"
    # the DPO run tells the whole story: SFT, ORPO, DPO and SLERP(SFT, DPO), each scored and gated against the base
    assert dpo["adapters"] == ["quickstart-dpo@1", "quickstart@1", "quickstart-orpo@1", "quickstart-dpo-slerp@1"]
    assert [v["model"] for v in dpo["verdicts"]] == dpo["adapters"]
    merged = json.loads((tmp_path / "registry" / "quickstart-dpo-slerp" / "1" / "manifest.json").read_text())
    assert [p["ref"] for p in merged["lineage"]["parents"]] == ["quickstart@1", "quickstart-dpo@1"] and merged["lineage"]["method"] == "slerp"


# ---------------------------------------------------------------- forgetting control with a preference objective


def test_kl_anchor_on_chosen_completions_equals_the_formula_on_full_logits(tiny_model_dir):
    """The preference step's anchor: KL(p_base || p_adapted) summed over the chosen completion tokens, as
    F.kl_div on full-vocabulary logits of the same PeftModel with and without its adapter (values and gradients)."""
    from harness.train.loss import preserve_loss_sums
    from harness.train.preserve import chosen_rows

    model, tok = _policy(tiny_model_dir)
    b = _batch(tok, 3)
    n = b.n_pairs
    ids, mask, labels = b.input_ids[:n], b.attention_mask[:n], b.labels[:n]
    logq = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float()[:, :-1], -1)
    with torch.no_grad(), model.disable_adapter():
        logp = torch.log_softmax(model(input_ids=ids, attention_mask=mask).logits.float()[:, :-1], -1)
    keep = labels[:, 1:] != -100
    kl_ref = F.kl_div(logq[keep], logp[keep], log_target=True, reduction="sum")
    kl_ref.backward()
    g_ref = _grads(model)
    _, kl, count = preserve_loss_sums(model, chosen_rows(b), "all", chunk=3)
    kl.backward()
    g = _grads(model)
    assert count == int(keep.sum()) == chosen_rows(b).supervised > 0
    assert float(kl_ref.detach()) > 1e-4  # the perturbed adapter moved the distribution: not 0 == 0
    torch.testing.assert_close(kl, kl_ref, rtol=1e-4, atol=1e-5)
    _assert_grads_equal(g, g_ref)


def test_preference_replay_draws_the_ratio_of_pair_tokens_per_step_reproducibly():
    from harness.data.tokenize import TokenizedExample
    from harness.train.preserve import PreferenceReplay

    pool = [TokenizedExample(list(range(5, 5 + 7 + i % 5)), list(range(5, 5 + 7 + i % 5)), -(i + 1), replay=True) for i in range(40)]
    pr = PreferenceReplay(pool, 0.25, seed=3, batch_size=4, max_length=32, pad_id=0)
    b3 = pr.batches(3, pair_tokens=300)
    got = sum(b.tokens for b in b3)
    assert 100 <= got < 100 + 12  # ratio / (1 - ratio) x 300 = 100 replay tokens, overshooting by less than one row
    assert all(b.replay is not None and b.replay_tokens == b.tokens for b in b3)  # every real token is replay
    again = pr.batches(3, pair_tokens=300)
    assert [b.input_ids.tolist() for b in again] == [b.input_ids.tolist() for b in b3]  # a resumed step draws the same rows
    assert [b.input_ids.tolist() for b in pr.batches(4, 300)] != [b.input_ids.tolist() for b in b3]
    assert PreferenceReplay(pool, 0.0, 3, 4, 32, 0).batches(3, 300) == [] and PreferenceReplay([], 0.5, 3, 4, 32, 0).batches(3, 300) == []


@pytest.mark.parametrize("objective", ["dpo", "orpo"])
def test_preference_objectives_train_with_replay_and_a_kl_anchor(tiny_model_dir, tmp_path, isolated_cache, objective):
    """DPO and ORPO with preserve: replay rows join every step (their NLL is logged), the KL anchor is logged and
    grows from 0 (the adapter starts equal to the base), the manifest records it, and the adapter's identity changes."""
    pres = {"replay": {"source": "self", "ratio": 0.3, "count": 8, "max_new_tokens": 12}, "kl": {"weight": 0.5, "on": "all"}}
    res = train(make_config(tmp_path, tiny_model_dir, objective=objective, max_steps=3, eval_every=0, save_every=0, preserve=pres))
    rows = [json.loads(x) for x in (res.run_dir / "metrics.jsonl").read_text().splitlines()]
    assert len(rows) == 3
    assert all(r["replay_tokens"] > 0 and np_finite(r["replay_nll"]) and r["kl_tokens"] > r["replay_tokens"] for r in rows)
    assert rows[0]["kl"] == pytest.approx(0.0, abs=1e-6) and rows[-1]["kl"] > 0  # LoRA starts at B = 0: adapted == base
    m = res.entry.manifest
    assert m["preserve"]["kl"] == {"weight": 0.5, "on": "all"} and m["preserve"]["replay_data"]["kept"] > 0
    (tmp_path / "plain").mkdir()
    plain_cfg = make_config(tmp_path / "plain", tiny_model_dir, objective=objective, max_steps=3, eval_every=0, save_every=0)
    assert plain_cfg.math_dict() != make_config(tmp_path, tiny_model_dir, objective=objective, max_steps=3, preserve=pres).math_dict()
    plain = train(plain_cfg)
    assert plain.entry.manifest.get("preserve") is None and plain.entry.manifest["files"] != m["files"]
    assert "kl" not in json.loads((plain.run_dir / "metrics.jsonl").read_text().splitlines()[0])
