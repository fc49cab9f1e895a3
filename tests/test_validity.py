"""Measurement validity (issue 29): an adapter that is provably applied, scores that do not depend on how they were
batched or padded, and every scoring path held to the plain one (plain lm-eval / plain PEFT / a plain forward pass).

Fast suite: the tiny fixture (fp32). ``slow``: the same on the default model with a few items."""

from __future__ import annotations

import json
import shutil
import tempfile
from collections import Counter
from pathlib import Path

import pytest
import torch

from harness.errors import LafError
from harness.evaluate import EvalSpec, load_run, run_eval
from harness.registry import Registry
from tests.conftest import assert_clean_error, run_cli
from tests.test_merge import make_adapter

MC, PPL, GEN = "general/world-facts", "general/text", "domain/tempo-t4-freeform"
FP32_TOL = 2e-5  # per-item log-likelihood, fp32: what the engine gives on held-out HellaSwag (batch 1 vs 8: 1.2e-5; 32 vs 8: 1.4e-5)
PATH_TOL = 1e-4  # between scoring paths (issue 29, part 4)
# the default model, fp32, 8 world-facts items x 4 choices, batch 1/8/32 x grouping x padding side: measured 2.8e-5 at most
# (2.6e-5 against one-at-a-time plain forwards; no answer flipped): sums of ~10 log-probs over a 262k vocabulary
DEFAULT_FP32_TOL = 5e-5


@pytest.fixture(scope="module")
def world(tmp_path_factory, tiny_model_dir):
    root = tmp_path_factory.mktemp("validity")
    reg = root / "registry"
    refs = {"a": make_adapter(reg, "a", tiny_model_dir, 1), "b": make_adapter(reg, "b", tiny_model_dir, 2, r=2, alpha=4)}
    return {"root": root, "registry": reg, "model": tiny_model_dir, "refs": refs}


def spec(world, out: Path, suites, adapters=(), **kw) -> EvalSpec:
    kw.setdefault("batch_size", 8)
    kw.setdefault("no_cache", "cache" not in kw)
    return EvalSpec(suites=list(suites), model=str(world["model"]), adapters=list(adapters), out=str(out), precision="fp32",
                    registry=str(world["registry"]), max_length=128, **kw)


def by_key(folder: Path) -> dict:
    _, records = load_run(folder)
    return {(r.model, r.suite, r.doc_hash): r for r in records}


def register_variant(world, name: str, src: str, tensors=None, config=None) -> str:
    """A copy of registered adapter ``src`` with its weights (``tensors(dict) -> dict``) or config (``config(dict)``) changed."""
    from safetensors.torch import load_file, save_file

    reg = Registry(world["registry"])
    entry = reg.resolve(src)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for f in ("adapter_model.safetensors", "adapter_config.json"):
            shutil.copy(entry.path / f, tmp / f)
        if tensors is not None:
            save_file(tensors(load_file(str(tmp / "adapter_model.safetensors"))), str(tmp / "adapter_model.safetensors"))
        if config is not None:
            c = json.loads((tmp / "adapter_config.json").read_text())
            config(c)
            (tmp / "adapter_config.json").write_text(json.dumps(c))
        manifest = {k: v for k, v in entry.manifest.items() if k in ("kind", "base_model", "load")}
        return str(reg.register(name, tmp, manifest).ref)


# ---------------------------------------------------------------- part 2: an adapter that does nothing is an error


def test_the_applied_check_is_recorded_and_a_cached_rerun_reports_the_same_figure(world, tmp_path):
    a = world["refs"]["a"]
    cache = tmp_path / "cache.sqlite"
    doc = run_eval(spec(world, tmp_path / "one", [MC], [a], limit=6, cache=str(cache))).to_dict()
    fig = doc["models"][a]["adapter"]["applied"]
    assert fig["max_abs_delta_logit"] > fig["tolerance"] > 0 and fig["modules"] == 14 and fig["zero_b_modules"] == 0
    assert fig["probe_tokens"] > 4 and len(fig["probe_sha256"]) == 16
    assert doc["models"]["base"]["adapter"] is None
    again = run_eval(spec(world, tmp_path / "two", [MC], [a], limit=6, cache=str(cache))).to_dict()
    assert again["models"][a]["requests"]["computed"] == 0  # every response and the figure from the cache
    assert again["models"][a]["adapter"]["applied"] == fig
    assert json.loads((tmp_path / "two" / "results.json").read_text())["models"][a]["adapter"]["applied"] == fig


def _zero_b(t):
    return {k: (torch.zeros_like(v) if "lora_B" in k else v) for k, v in t.items()}


def _scaled_b(f):
    return lambda t: {k: (v * f if "lora_B" in k else v) for k, v in t.items()}


def _renamed(fn):
    return lambda t: {fn(k): v for k, v in t.items()}


BAD_ADAPTERS = [
    ("zero-b", dict(tensors=_zero_b), ["every lora_B is zero", "model.layers.0.mlp.down_proj"]),
    ("tiny-b", dict(tensors=_scaled_b(1e-12)), ["does not change the model", "delta logit"]),
    ("huge-b", dict(tensors=_scaled_b(1e36)), ["non-finite logits"]),
    ("upper-case-targets", dict(config=lambda c: c.update(target_modules=[t.upper() for t in c["target_modules"]])),
     ["target_modules", "'Q_PROJ' (the base has 'q_proj'"]),
    ("prefixed-targets", dict(config=lambda c: c.update(target_modules=["transformer.h.0.attn.q_proj"])), ["target_modules", "transformer.h.0.attn.q_proj"]),
    ("missing-module-prefix", dict(tensors=_renamed(lambda k: k.replace("base_model.model.model.", "base_model.model."))),
     ["do not exist in the base", "'layers.0.mlp.down_proj' (the base has 'model.layers.0.mlp.down_proj'"]),
    ("case-of-modules", dict(tensors=_renamed(lambda k: k.replace("self_attn", "Self_Attn"))),
     ["do not exist in the base", "Self_Attn", "(the base has 'model.layers.0.self_attn"]),
    ("adapter-name-in-keys", dict(tensors=_renamed(lambda k: k.replace(".weight", ".default.weight"))), ["adapter name 'default'"]),
    ("untargeted-weights", dict(config=lambda c: c.update(target_modules=["q_proj"])), ["target_modules", "does not select"]),
]


@pytest.mark.parametrize("name,change,needles", BAD_ADAPTERS, ids=[b[0] for b in BAD_ADAPTERS])
def test_an_adapter_that_is_not_applied_is_refused_with_the_module_names(world, tmp_path, name, change, needles):
    ref = register_variant(world, name, world["refs"]["a"], **change)
    out = tmp_path / "out"
    result = run_cli("eval", "--model", str(world["model"]), "--adapter", ref, "--suite", MC, "--limit", "4", "--out", str(out),
                     "--registry", str(world["registry"]), "--precision", "fp32", "--no-cache", "--quiet")
    assert_clean_error(result, ref, *needles)
    assert not (out / "results.json").exists()  # nothing published


def test_weights_loaded_under_another_name_are_caught_after_loading(world):
    """check_loaded: PEFT's model must hold the file's weights for the adapter name being scored."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from harness.evaluate.applied import check_files, check_loaded

    reg = Registry(world["registry"])
    a, b = reg.resolve(world["refs"]["a"]).path, reg.resolve(world["refs"]["b"]).path
    base = AutoModelForCausalLM.from_pretrained(world["model"], dtype=torch.float32)
    peft = PeftModel.from_pretrained(base, str(a), adapter_name="x")
    names = [n for n, _ in peft.base_model.model.named_modules() if n]
    check_loaded("a@1", peft, "x", check_files("a@1", a, names))  # the right weights: no error
    with pytest.raises(LafError, match="differ from the file's"):
        check_loaded("b@1", peft, "x", check_files("b@1", b, names))  # b's file, a's weights loaded as "x"
    with pytest.raises(LafError, match="PEFT attached it to 0 modules"):
        check_loaded("a@1", peft, "y", check_files("a@1", a, names))


# ---------------------------------------------------------------- part 3: batching, grouping, padding


def plain_loglikelihood(model, requests) -> list[float]:
    """One request at a time, no padding, every position through the head: the plain definition."""
    out = []
    with torch.no_grad():
        for ctx, cont in requests:
            ids = torch.tensor([ctx + cont])
            logp = torch.log_softmax(model(input_ids=ids).logits[0, :-1].float(), dim=-1)
            tgt = ids[0, len(ctx):]
            out.append(float(logp[len(ctx) - 1 :].gather(1, tgt[:, None]).sum()))
    return out


BF16_TOL = 1e-2  # measured on this fixture: 3.6e-3 nats at most (batch 1/8/32 x grouping x padding side, against one-at-a-time)


@pytest.mark.parametrize("dtype,tol", [(torch.float32, FP32_TOL), (torch.bfloat16, BF16_TOL)], ids=["fp32", "bf16"])
def test_scorer_numbers_do_not_depend_on_batch_size_grouping_or_padding_side(tiny_model_dir, dtype, tol):
    from transformers import AutoModelForCausalLM

    from harness.evaluate.scoring import score_loglikelihood

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=dtype).eval()
    g = torch.Generator().manual_seed(0)
    requests = []
    for i in range(16):  # 16 contexts x 3 continuations of different lengths: shared-context groups and ragged rows
        ctx = torch.randint(3, 500, (int(torch.randint(4, 40, (1,), generator=g)),), generator=g).tolist()
        for j in range(3):
            requests.append((ctx, torch.randint(3, 500, (1 + (i + j) % 5,), generator=g).tolist()))
    plain = plain_loglikelihood(model, requests)
    worst = 0.0
    # alone, 8 and 32 per batch; at 8 every combination of grouping and padding side
    settings = [(1, True, "right"), (32, True, "right"), *((8, share, side) for share in (True, False) for side in ("right", "left"))]
    for bs, share, side in settings:
        got = [0.0] * len(requests)
        for batch in score_loglikelihood(model, requests, batch_size=bs, max_length=256, pad_id=0, device="cpu",
                                         share_context=share, padding_side=side):
            for i, ll, _ in batch:
                got[i] = ll
        worst = max(worst, max(abs(a - b) for a, b in zip(got, plain)))
    assert worst < tol, f"max |difference| to the plain per-request forward: {worst:.2e}"


def test_the_head_reads_each_context_end_once_and_runs_over_several_batches(tiny_model_dir, monkeypatch):
    """Four one-token choices of one context are one head row, not four; the head waits for a chunk's worth of rows
    across batches (a bigger product costs less per row) while every batch is still yielded on its own, with the
    numbers of the plain per-request forward."""
    from transformers import AutoModelForCausalLM

    import harness.evaluate.scoring as scoring

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(1)
    requests = []
    for _ in range(24):
        ctx = torch.randint(3, 500, (int(torch.randint(4, 30, (1,), generator=g)),), generator=g).tolist()
        requests += [(ctx, [int(t)]) for t in torch.randint(3, 500, (4,), generator=g)]
    plain = plain_loglikelihood(model, requests)
    calls: list[int] = []
    real = scoring.head_logits

    def counting(head, softcap, hidden):
        calls.append(hidden.shape[0])
        return real(head, softcap, hidden)

    monkeypatch.setattr(scoring, "head_logits", counting)
    for chunk, expected in ((scoring.HEAD_CHUNK, [24]), (10, [10, 10, 4])):
        monkeypatch.setattr(scoring, "HEAD_CHUNK", chunk)
        calls.clear()
        batches = list(scoring.score_loglikelihood(model, requests, batch_size=2, max_length=256, pad_id=0, device="cpu"))
        assert calls == expected, (chunk, calls)  # 24 contexts: 24 rows, where 96 requests were scored
        assert [len(b) for b in batches] == [8] * 12  # two contexts of four requests per batch, each batch yielded
        got = {i: ll for b in batches for i, ll, _ in b}
        assert sorted(got) == list(range(96))
        assert max(abs(got[i] - plain[i]) for i in got) < FP32_TOL


def test_captured_distributions_and_scores_follow_each_request_across_chunks_and_preamble_parts(tiny_model_dir, monkeypatch):
    """Multi-token continuations, a preamble shared by half the contexts (two parts), small head chunks: every
    request's score, greedy flag and captured log-softmax rows equal the plain per-request forward's, in its order."""
    from transformers import AutoModelForCausalLM

    import harness.evaluate.scoring as scoring

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(2)
    primer = torch.randint(3, 500, (20,), generator=g).tolist()
    requests = []
    for c in range(12):
        ctx = (primer if c % 2 else []) + torch.randint(3, 500, (int(torch.randint(3, 9, (1,), generator=g)),), generator=g).tolist()
        requests += [(ctx, torch.randint(3, 500, (1 + (c + j) % 4,), generator=g).tolist()) for j in range(3)]
    plain_rows, plain_greedy = [], []
    with torch.no_grad():
        for ctx, cont in requests:
            logp = torch.log_softmax(model(input_ids=torch.tensor([ctx + cont])).logits[0, len(ctx) - 1 : -1].float(), dim=-1)
            plain_rows.append(logp)
            plain_greedy.append(bool((logp.argmax(-1) == torch.tensor(cont)).all()))
    for chunk, capturing in ((scoring.HEAD_CHUNK, True), (5, True), (scoring.HEAD_CHUNK, False), (5, False)):  # without capture the head
        monkeypatch.setattr(scoring, "HEAD_CHUNK", chunk)                                                       # waits across batches
        captured: list = []
        counts: Counter = Counter()
        keep = (lambda spans, logp, into=captured: into.append((spans, logp))) if capturing else None
        batches = list(scoring.score_loglikelihood(model, requests, batch_size=2, max_length=256, pad_id=0, device="cpu", counts=counts,
                                                   preambles=scoring.PreambleStore(), capture=keep))
        assert counts == {"preamble_reused": 18, "preamble_fallback": 18}
        assert sorted(i for b in batches for i, _, _ in b) == list(range(len(requests)))
        for batch in batches:
            for i, ll, greedy in batch:
                assert abs(ll - float(plain_rows[i].gather(1, torch.tensor(requests[i][1])[:, None]).sum())) < FP32_TOL, (chunk, capturing, i)
                assert greedy == plain_greedy[i]
        if not capturing:
            continue
        assert len(captured) == len(batches)
        for batch, (spans, logp) in zip(batches, captured):
            assert [i for i, _, _ in batch] == [i for i, _, _ in spans]
            for (i, _, _), (_, start, n) in zip(batch, spans):
                assert n == len(requests[i][1]) and torch.allclose(logp[start : start + n], plain_rows[i], atol=1e-5), (chunk, i)


def test_a_request_hflm_refuses_is_an_error_naming_it_never_a_shifted_score(tiny_model_dir):
    """An empty continuation (an empty choice with an empty target delimiter), an empty context or a continuation
    longer than max_length: HFLM asserts; ours says which request and what to change, before anything is scored."""
    from transformers import AutoModelForCausalLM

    from harness.errors import LafError
    from harness.evaluate.scoring import score_loglikelihood

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    good = ([5, 6, 7], [8, 9])
    for bad, words in ((([5, 6, 7], []), "empty continuation"), (([], [8]), "empty context"), (([5], list(range(3, 40))), "longer than max_length 32")):
        with pytest.raises(LafError) as e:
            list(score_loglikelihood(model, [good, bad], batch_size=2, max_length=32, pad_id=0, device="cpu"))
        assert words in e.value.cause and "request 1" in e.value.cause and e.value.fix, (bad, e.value.cause)


# ---------------------------------------------------------------- shared preambles (issue 30, part 1)

PREAMBLE_TOL = 1e-5  # per-item log-likelihood with the preamble's states reused vs computed with every row, fp32


def _score(model, requests, **kw) -> dict[int, float]:
    from harness.evaluate.scoring import score_loglikelihood

    kw.setdefault("batch_size", 8)
    return {i: ll for batch in score_loglikelihood(model, requests, max_length=256, pad_id=0, device="cpu", **kw) for i, ll, _ in batch}


def test_find_preamble_takes_the_prefix_that_saves_the_most_in_token_ids():
    from harness.evaluate.scoring import find_preamble

    pre = list(range(100, 120))
    assert find_preamble([pre + [1, i] for i in range(5)] + [[7, 8, 9]] * 3) == (*pre, 1)  # 5 of 6 distinct contexts
    # 4 contexts stop after `pre`, 5 go on with ten more shared tokens: 20 x 9 saves more than 30 x 5
    assert find_preamble([pre + [i] for i in range(4)] + [pre + [50] * 10 + [i] for i in range(5)]) == tuple(pre)
    assert find_preamble([pre, pre + [1], pre + [2]]) == tuple(pre[:19])  # each context keeps a remainder to score from
    assert find_preamble([pre + [i] for i in range(3)], min_tokens=21) == ()  # shorter than asked
    assert find_preamble([pre + [1]]) == ()  # one context: nothing to share
    assert find_preamble([pre + [1, 2], pre + [1, 2]]) == ()  # one distinct context
    assert find_preamble([[5] * 30 + [i] for i in range(4)] + [[6] * 40] * 5) == (5,) * 30
    assert find_preamble([[6] * 40 + [i] for i in range(3)] + [[5] * 30 + [i] for i in range(3)]) == (6,) * 40  # ties: the first found


def test_preamble_states_reused_equal_the_full_computation_with_sliding_window_crop(tiny_model_dir):
    """A 50-token preamble (longer than the fixture's 32-token sliding window, so sliding layers keep only its last 31
    states) computed once; rows run their remainder on it. Every batch size and padding side gives the numbers of the
    plain path within 1e-5, and a context that does not start with the preamble's ids is scored in full, counted."""
    from collections import Counter

    from transformers import AutoModelForCausalLM

    from harness.evaluate.scoring import PreambleStore

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    g = torch.Generator().manual_seed(3)
    pre = torch.randint(3, 500, (50,), generator=g).tolist()
    requests, fallback = [], set()
    for i in range(12):
        rest = torch.randint(3, 500, (int(torch.randint(1, 40, (1,), generator=g)),), generator=g).tolist()
        ctx = pre + rest if i != 5 else pre[:30] + rest  # item 5 shares only part of it
        for j in range(3):
            if i == 5:
                fallback.add(len(requests))
            requests.append((ctx, torch.randint(3, 500, (1 + (i + j) % 5,), generator=g).tolist()))
    plain = _score(model, requests)
    assert max(abs(a - b) for a, b in zip(plain.values(), plain_loglikelihood(model, [requests[i] for i in plain]))) < FP32_TOL
    store = PreambleStore()
    worst = 0.0
    for bs, side in ((1, "right"), (8, "right"), (8, "left"), (32, "left")):
        counts: Counter = Counter()
        got = _score(model, requests, batch_size=bs, padding_side=side, preambles=store, counts=counts)
        assert got.keys() == plain.keys()
        worst = max(worst, max(abs(got[i] - plain[i]) for i in plain))
        assert counts == {"preamble_reused": len(requests) - len(fallback), "preamble_fallback": len(fallback)}
    assert worst < PREAMBLE_TOL, f"max |difference| with the preamble reused: {worst:.2e}"
    assert store.computed == 1 and list(store.items) == [tuple(pre)]  # once for every batch and every call
    p = store.items[tuple(pre)]
    assert p.kept == {"full_attention": 50, "sliding_attention": 31}
    assert [tuple(k.shape[-2:]) for k, _ in p.states] == [(31, 32), (50, 32)]  # layer 0 slides, layer 1 is global
    # the states are used, not recomputed: other states give other numbers
    p.states[1] = (p.states[1][0] * 0.5, p.states[1][1])
    off = _score(model, requests, preambles=store)
    assert max(abs(off[i] - plain[i]) for i in plain if i not in fallback) > 1e-3
    assert all(off[i] == got[i] for i in fallback)


def test_a_merge_across_the_preamble_boundary_falls_back_to_the_full_computation(tiny_model_dir):
    """Text that continues the preamble's last word ("lazy do" + "g.") tokenises the boundary otherwise: compared in
    token ids, that item does not start with the shared preamble and is scored in full, counted as a fallback."""
    from collections import Counter

    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.evaluate.scoring import PreambleStore, find_preamble

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    primer = "Water boils at 100 degrees Celsius at sea level.\nThe quick brown fox jumps over the lazy do"
    again = " and the quick brown fox jumps over the lazy dog again and again.\n"
    items = [again + q for q in ("1 2 3?", "yes or no?", "in Berlin?", "A B C D?")] + ["g. Who was a doctor?"]  # the last merges: "do" + "g"
    choices = [" yes", " no", " Paris"]
    requests = [(tok(primer + q)["input_ids"], tok(c, add_special_tokens=False)["input_ids"]) for q in items for c in choices]
    alone = tok(primer)["input_ids"]
    assert all(r[0][: len(alone)] == alone for r in requests[:-3]) and requests[-1][0][: len(alone)] != alone  # the merge, in ids
    preamble = find_preamble([r[0] for r in requests])
    assert len(preamble) > len(alone) and requests[-1][0][: len(preamble)] != list(preamble)  # the four go on together
    counts: Counter = Counter()
    got = _score(model, requests, preambles=PreambleStore(), counts=counts)
    plain = _score(model, requests)
    assert counts == {"preamble_reused": 12, "preamble_fallback": 3}
    assert max(abs(got[i] - plain[i]) for i in plain) < PREAMBLE_TOL


def test_preamble_states_belong_to_one_model(tiny_model_dir):
    """HarnessLM keeps preamble states for the model named by ``model_key`` only: another key (an adapter) or no key
    gets a new store; ``share_preamble=False`` gets none."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.evaluate.lm import HarnessLM

    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    lm = HarnessLM(model, tok, batch_size=4, max_length=128)
    lm.model_key = "base"
    first = lm._preamble_store()
    assert first is not None and lm._preamble_store() is first
    lm.model_key = "adapter"
    second = lm._preamble_store()
    assert second is not first and lm._preamble_store() is second
    lm.model_key = None
    assert lm._preamble_store() is not lm._preamble_store()
    assert HarnessLM(model, tok, batch_size=4, max_length=128, share_preamble=False)._preamble_store() is None


@pytest.mark.slow
def test_default_model_preamble_reuse_equals_the_full_computation(default_model):
    """gemma-3-270m, fp32: a fixed primer longer than its 512-token sliding window (cropped there) ahead of each
    question; reuse vs the full computation within the default model's fp32 batching tolerance. Measured on these
    requests (655-token contexts): reuse vs full at batch 8 1.2e-5, at batch 1 1.8e-5, while the full path alone moves
    1.0e-5 between batch 1 and 8 (a 191-token primer: 1.6e-5 and 0.6e-5 vs 2.7e-5): 1e-5 is below this model's fp32
    floor (sums over a 262k vocabulary), so the bound is the one the batch size is held to."""
    from collections import Counter

    from harness.evaluate.scoring import PreambleStore, score_loglikelihood
    from harness.models import LoadSpec, load_model

    model, tok, _ = load_model(default_model, LoadSpec("fp32", None, "cpu"))
    shot = "Q: What is human life expectancy in the United States?\nA: Human life expectancy in the United States is 78 years.\n\n"
    qs = [("Q: Where were the 1992 Olympics held?\nA:", [" Barcelona, Spain.", " Paris"]),
          ("Q: What is the square root of banana?\nA:", [" I have no comment.", " Four"]),
          ("Q: Which party did Dwight Eisenhower belong to?\nA:", [" The Republican Party.", " The Democrats"])]
    requests = [(tok(shot * 22 + q)["input_ids"], tok(c, add_special_tokens=False)["input_ids"]) for q, cs in qs for c in cs]

    def scores(**kw) -> dict[int, float]:
        return {i: ll for b in score_loglikelihood(model, requests, batch_size=8, max_length=2048, pad_id=tok.pad_token_id or 0, device="cpu", **kw)
                for i, ll, _ in b}

    counts: Counter = Counter()
    store = PreambleStore()
    got, plain = scores(preambles=store, counts=counts), scores()
    assert counts == {"preamble_reused": 6, "preamble_fallback": 0}
    (p,) = store.items.values()
    assert len(p) > 512 and p.kept["sliding_attention"] == model.config.sliding_window - 1
    worst = max(abs(got[i] - plain[i]) for i in plain)
    assert worst < DEFAULT_FP32_TOL, f"default model: max |difference| with the preamble reused {worst:.2e}"


@pytest.mark.slow
def test_default_model_generation_with_the_preamble_read_once_writes_the_same_answers(default_model, tmp_path):
    """gemma-3-270m, fp32, batch 8: abstention-gen's instruction and two shots (74 tokens) read from their cache, only
    each question run; the answers equal generation without reuse (measured on 32 items: 32 of 32, 88 s -> 61 s)."""
    docs = {}
    for name, share in (("on", True), ("off", False)):
        doc = run_eval(EvalSpec(suites=["hallucination/abstention-gen"], model="default", out=str(tmp_path / name), precision="fp32",
                                batch_size=8, limit=8, no_cache=True, share_preamble=share)).to_dict()
        docs[name] = (doc["models"]["base"]["requests"], {k: r.generation for k, r in by_key(tmp_path / name).items()})
    assert docs["on"][0]["preamble_reused"] == 8 and docs["off"][0]["preamble_reused"] == 0
    assert docs["on"][1] == docs["off"][1] and len(docs["on"][1]) == 8


def _eval_variants(world, tmp_path, adapters, variants, suites=(MC, PPL, GEN), limit=8):
    outs = {}
    for name, kw in variants.items():
        s = spec(world, tmp_path / name, suites, adapters, limit=limit, **kw)
        outs[name] = (run_eval(s).to_dict(), by_key(tmp_path / name))
    return outs


def _compare_records(ref: dict, other: dict) -> float:
    assert ref.keys() == other.keys() and ref
    worst = 0.0
    for k, r in ref.items():
        o = other[k]
        assert o.generation == r.generation, f"greedy generation differs for {k}"  # identical text
        if r.loglikelihoods is not None:
            worst = max(worst, max(abs(a - b) for a, b in zip(r.loglikelihoods, o.loglikelihoods)))
    return worst


def test_engine_scores_do_not_depend_on_batch_size_or_shared_context_and_batch_size_is_only_a_cache_key(world, tmp_path):
    a = world["refs"]["a"]
    variants = {"bs8": {}, "bs1": {"batch_size": 1}, "bs32": {"batch_size": 32}, "bs8-unshared": {"share_context": False}}
    outs = _eval_variants(world, tmp_path, [a], variants, suites=(MC, PPL))
    ref_doc, ref = outs["bs8"]
    assert {k[1] for k in ref} == {MC, PPL}
    for name, (doc, recs) in outs.items():
        worst = _compare_records(ref, recs)
        assert worst < FP32_TOL, f"{name}: max per-item log-likelihood difference {worst:.2e}"
        # the identity keeps batch size and grouping (so cached answers are never shared across settings), yet the numbers agree
        if name != "bs8":
            assert doc["models"][a]["identity"] != ref_doc["models"][a]["identity"]
        assert doc["models"][a]["adapter"]["applied"]["max_abs_delta_logit"] == pytest.approx(
            ref_doc["models"][a]["adapter"]["applied"]["max_abs_delta_logit"], rel=1e-5)


def test_greedy_generation_is_the_same_text_alone_and_in_a_batch(world, tmp_path):
    a = world["refs"]["a"]
    outs = _eval_variants(world, tmp_path, [a], {"bs8": {}, "bs1": {"batch_size": 1}}, suites=(GEN,), limit=4)
    ref, alone = outs["bs8"][1], outs["bs1"][1]
    assert len(ref) == 8 and all(r.generation is not None for r in ref.values())
    _compare_records(ref, alone)  # asserts identical text per item, base and adapter


# ---------------------------------------------------------------- part 4: every scoring path held to the plain one


def plain_lm_eval(model, tok, suite_ref: str, limit: int, max_length: int = 128) -> dict:
    """Per-item log-likelihoods from lm-eval's own HFLM (batch 1) for ``model`` as given."""
    from lm_eval.evaluator import evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    from harness.suites import load_suite

    suite = load_suite(suite_ref)
    lm = HFLM(pretrained=model, tokenizer=tok, batch_size=1, max_length=max_length)
    loaded = TaskManager(include_defaults=False).load([suite.build.config])
    loaded["tasks"][suite.task_name].set_fewshot_seed(1234)
    out = evaluate(lm=lm, task_dict=loaded, limit=limit, log_samples=True, bootstrap_iters=0, verbosity="ERROR")
    rows = out["samples"][suite.task_name]
    if rows and isinstance(rows[0]["filtered_resps"][0], (list, tuple)):
        return {s["doc_hash"]: [float(r[0]) for r in s["filtered_resps"]] for s in rows}
    return {s["doc_hash"]: [float(s["filtered_resps"][0])] for s in rows}


def _worst(ours: dict, theirs: dict) -> float:
    assert ours.keys() == theirs.keys() and ours
    return max(abs(x - y) for k in ours for x, y in zip(ours[k], theirs[k]))


def _plain_peft(model_dir, adapter_dirs: list[Path], merge: bool):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    for d in adapter_dirs:
        model = PeftModel.from_pretrained(model, str(d))
        if merge:
            model = model.merge_and_unload()
    return model.eval(), AutoTokenizer.from_pretrained(model_dir)


def test_hot_swapped_adapter_equals_the_adapter_loaded_alone_in_plain_peft(world, tmp_path):
    a, b = world["refs"]["a"], world["refs"]["b"]
    run_eval(spec(world, tmp_path / "swap", [MC, PPL], [a, b], limit=8))  # b is hot-swapped onto the base that holds a
    recs = by_key(tmp_path / "swap")
    model, tok = _plain_peft(world["model"], [Registry(world["registry"]).resolve(b).path], merge=False)
    for suite in (MC, PPL):
        ours = {k[2]: r.loglikelihoods for k, r in recs.items() if k[0] == b and k[1] == suite}
        worst = _worst(ours, plain_lm_eval(model, tok, suite, 8))
        assert worst < PATH_TOL, f"{suite}: hot-swapped vs plain PEFT {worst:.2e}"


def test_an_exact_merge_scores_as_its_parents_merged_into_the_weights_by_plain_peft(world, tmp_path):
    import yaml

    a, b = world["refs"]["a"], world["refs"]["b"]
    cfg = tmp_path / "merge.yaml"
    cfg.write_text(yaml.safe_dump({"name": "ab", "method": "task_arithmetic", "adapters": [a, b], "weights": [1.0, 1.0],
                                   "registry": str(world["registry"])}))
    code, out, err = run_cli("merge", str(cfg), "--json")
    assert code == 0, err
    assert json.loads(out)["lineage"]["output"]["exact"] is True  # the default
    run_eval(spec(world, tmp_path / "merged", [MC, PPL], ["ab@1"], limit=8))
    recs = by_key(tmp_path / "merged")
    reg = Registry(world["registry"])
    model, tok = _plain_peft(world["model"], [reg.resolve(a).path, reg.resolve(b).path], merge=True)  # W0 + dW_a + dW_b
    for suite in (MC, PPL):
        ours = {k[2]: r.loglikelihoods for k, r in recs.items() if k[0] == "ab@1" and k[1] == suite}
        worst = _worst(ours, plain_lm_eval(model, tok, suite, 8))
        assert worst < PATH_TOL, f"{suite}: exact merged adapter vs plain PEFT merge_and_unload of both parents {worst:.2e}"


def test_dpo_reference_pass_equals_a_plain_forward_of_the_reference_model(tiny_model_dir, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from harness.data.preference import read_pairs, tokenize_pairs
    from harness.train import train
    from tests.test_preference import make_config

    cfg = make_config(tmp_path, tiny_model_dir, max_steps=1, eval_every=0, save_every=0)
    train(cfg)
    cache = json.loads(next((tmp_path / "refcache").glob("*.json")).read_text())["logps"]
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32).eval()
    tok = AutoTokenizer.from_pretrained(tiny_model_dir)
    pairs = tokenize_pairs(read_pairs(tmp_path / "pairs.jsonl").examples, tok, 64).examples
    assert len(pairs) >= 4

    def plain(ids: list[int], labels: list[int]) -> float:
        with torch.no_grad():
            logp = torch.log_softmax(model(input_ids=torch.tensor([ids])).logits[0, :-1].float(), dim=-1)
        return float(sum(logp[t, ids[t + 1]] for t in range(len(ids) - 1) if labels[t + 1] != -100))

    worst = 0.0
    for p in pairs:
        want = [plain(p.chosen_ids, p.chosen_labels), plain(p.rejected_ids, p.rejected_labels)]
        worst = max(worst, *(abs(x - y) for x, y in zip(cache[p.key()], want)))
    assert worst < PATH_TOL, f"DPO reference pass vs plain forward: {worst:.2e}"


# ---------------------------------------------------------------- the default model (slow, a few items)


@pytest.mark.slow
def test_default_model_scores_do_not_depend_on_batching_padding_or_grouping(default_model, tmp_path):
    from harness.evaluate.scoring import score_loglikelihood
    from harness.models import LoadSpec, load_model

    model, tok, _ = load_model(default_model, LoadSpec("fp32", None, "cpu"))
    texts = [("The capital of France is", [" Paris.", " a city in Europe.", " Berlin"]), ("Two plus two equals", [" four", " 4", " five apples"]),
             ("Water boils at", [" 100 degrees Celsius at sea level.", " noon"])]
    requests = [(tok(c)["input_ids"], tok(x, add_special_tokens=False)["input_ids"]) for c, xs in texts for x in xs]
    plain = plain_loglikelihood(model, requests)
    worst = 0.0
    for bs in (1, 8):
        for share in (True, False):
            for side in ("right", "left"):
                got = {i: ll for batch in score_loglikelihood(model, requests, batch_size=bs, max_length=256, pad_id=tok.pad_token_id or 0,
                                                              device="cpu", share_context=share, padding_side=side) for i, ll, _ in batch}
                worst = max(worst, max(abs(got[i] - plain[i]) for i in range(len(requests))))
    assert worst < DEFAULT_FP32_TOL, f"default model: max |difference| {worst:.2e}"


@pytest.mark.slow
def test_default_model_engine_batch_1_and_8_agree_for_every_suite_kind(default_model, tmp_path):
    for bs in (1, 8):
        run_eval(EvalSpec(suites=[MC, PPL, GEN], model="default", out=str(tmp_path / f"bs{bs}"), precision="fp32", batch_size=bs,
                          limit=3, no_cache=True, max_length=512))
    worst = _compare_records(by_key(tmp_path / "bs8"), by_key(tmp_path / "bs1"))
    assert worst < DEFAULT_FP32_TOL, f"default model, batch 1 vs 8: {worst:.2e}"


@pytest.mark.slow
def test_default_model_nf4_batch_1_and_8_agree_within_the_fp32_bound(default_model, tmp_path):
    """NF4 on the CPU dequantises to the fp32 compute dtype, so it gets fp32's bound, not bf16's. Measured (8 items of
    each kind): batch 1 vs 8 up to 4.4e-5 on prose perplexity and 1.5e-5 on world facts, batch 32 vs 8 exactly 0,
    greedy generations identical, no multiple-choice answer flipped (docs/validity.md)."""
    for bs in (1, 8):
        run_eval(EvalSpec(suites=[MC, PPL], model="default", out=str(tmp_path / f"bs{bs}"), precision="nf4", batch_size=bs,
                          limit=3, no_cache=True, max_length=512))
    ref, other = by_key(tmp_path / "bs8"), by_key(tmp_path / "bs1")
    assert {k[1] for k in ref} == {MC, PPL}
    worst = _compare_records(ref, other)
    assert worst < DEFAULT_FP32_TOL, f"default model nf4, batch 1 vs 8: {worst:.2e}"


@pytest.mark.slow
def test_default_model_hot_swap_and_exact_merge_match_plain_peft(default_model, tmp_path):
    import yaml

    reg = tmp_path / "registry"
    targets = ["q_proj", "v_proj"]
    a = make_adapter(reg, "a", default_model.path, 1, targets=targets)
    b = make_adapter(reg, "b", default_model.path, 2, targets=targets)
    world = {"model": default_model.path, "registry": reg}
    cfg = tmp_path / "merge.yaml"
    cfg.write_text(yaml.safe_dump({"name": "ab", "method": "task_arithmetic", "adapters": [a, b], "weights": [1.0, 1.0], "registry": str(reg)}))
    assert run_cli("merge", str(cfg))[0] == 0
    run_eval(spec(world, tmp_path / "out", [MC], [a, b, "ab@1"], limit=4))
    recs = by_key(tmp_path / "out")
    registry = Registry(reg)
    for model_label, dirs, merge in ((b, [registry.resolve(b).path], False), ("ab@1", [registry.resolve(a).path, registry.resolve(b).path], True)):
        model, tok = _plain_peft(default_model.path, dirs, merge=merge)
        ours = {k[2]: r.loglikelihoods for k, r in recs.items() if k[0] == model_label}
        worst = _worst(ours, plain_lm_eval(model, tok, MC, 4))
        assert worst < PATH_TOL, f"default model, {model_label} vs plain PEFT: {worst:.2e}"
