"""Fast log-likelihood scoring: the context's forward pass shared across continuations.

lm-eval scores every (context, continuation) pair as its own row and projects
the LM head at every position. A multiple-choice item repeats one context
for each choice, and only the continuation positions matter. Here requests
with the same context become one packed row::

    tokens     c0 c1 .. cC-1 | a1 a2 | b1 | d1 d2 d3      (each tail = continuation[:-1])
    positions  0  1  .. C-1  | C C+1 | C  | C  C+1 C+2

with a 4D mask in which each tail sees the context and its own earlier
tokens, never another tail (and, for sliding-window layers, only keys within
the window, measured in positions). The head runs only on the positions that
predict continuation tokens. Truncation follows lm-eval exactly: the input is
``(context + continuation)[-(max_length + 1):][:-1]``. Per-item
log-likelihoods match plain lm-eval within 1e-4 in fp32 (tests/test_eval.py).

A preamble shared by many items (TruthfulQA's six-question primer, a fixed
few-shot block, a system prompt) is found in token ids (:func:`find_preamble`:
the longest prefix that at least half of the distinct contexts start with),
its key/value states are computed once per model (:class:`PreambleStore`, kept
by the caller per model identity, never across models) and each row that starts
with it runs only its remainder, with positions continuing after the preamble
and the mask covering preamble + row; sliding-window layers keep only the
preamble's last ``sliding_window - 1`` states, all a row position can see. A
context whose ids do not start with the preamble's (a merge across the boundary
tokenises it otherwise) is scored in full and counted (``preamble_fallback``).
Per-item log-likelihoods with and without the preamble agree within 1e-5 in
fp32 (tests/test_validity.py).
"""

from __future__ import annotations

import copy
import inspect
import math
from bisect import bisect_left
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable, Iterator

import torch

from ..errors import LafError
from ..models.heads import body_and_head, head_logits

HEAD_CHUNK = 256
MIN_PREAMBLE = 16  # tokens: a shorter shared prefix saves less than its states cost to copy into each batch
PREAMBLE_SHARE = 0.5  # a preamble is a prefix of at least this share of the distinct contexts (and of two)

# opt-in hook: called once per batch with [(request index, first row, n positions)] and the
# [positions, vocab] float32 log-softmax at every scored position (harness.evaluate.parity)
CaptureFn = Callable[[list[tuple[int, int, int]], torch.Tensor], None]


@dataclass
class _Member:
    index: int  # position in the caller's request list
    tail: list[int]  # continuation[:-1]
    targets: list[int]  # continuation


@dataclass
class _Row:
    context: list[int]
    members: list[_Member]

    @property
    def length(self) -> int:
        return len(self.context) + sum(len(m.tail) for m in self.members)

    @property
    def n_targets(self) -> int:
        return sum(len(m.targets) for m in self.members)


def _split(ctx: list[int], cont: list[int], max_length: int) -> tuple[list[int], list[int]]:
    """lm-eval's left truncation, then the shared context and this request's tail."""
    inp = (ctx + cont)[-(max_length + 1):][:-1]
    n_ctx = len(inp) - (len(cont) - 1)
    return inp[:n_ctx], inp[n_ctx:]


def plan_rows(requests: list[tuple[list[int], list[int]]], max_length: int, row_budget: int, share_context: bool,
              skip: int = 0) -> list[_Row]:
    """Rows of requests grouped by context, longest first. ``skip``: the tokens of each context already computed
    (a shared preamble's), left out of the row budget and the length order."""
    groups: dict[tuple, list[_Member]] = {}
    order: list[tuple] = []
    for i, (ctx, cont) in enumerate(requests):
        context, tail = _split(ctx, cont, max_length)
        key = tuple(context) if share_context else (i, *context)
        if key not in groups:
            groups[key] = []
            order.append(key)
        groups[key].append(_Member(i, tail, list(cont)))
    rows: list[_Row] = []
    for key in order:
        context = list(key) if share_context else list(key[1:])
        current = _Row(context, [])
        for m in groups[key]:
            if current.members and current.length - skip + len(m.tail) > max(row_budget, len(context) - skip + len(m.tail)):
                rows.append(current)
                current = _Row(context, [])
            current.members.append(m)
        rows.append(current)
    # longest first (as lm-eval): stable batches, any out-of-memory shows at once
    rows.sort(key=lambda r: -r.length)
    return rows


def find_preamble(contexts: list[list[int]], min_tokens: int = MIN_PREAMBLE) -> tuple[int, ...]:
    """The token prefix that saves the most: along the path of the most common next token, the length P (shared by
    n distinct contexts, at least half of them and at least two, each going on after it) with the largest P x n;
    ``()`` when that is shorter than ``min_tokens``. Token ids, not text: a context whose tokenisation merges across
    the preamble's end does not start with these ids. Deterministic in the order of ``contexts``."""
    distinct = list(dict.fromkeys(tuple(c) for c in contexts))
    need = max(2, math.ceil(PREAMBLE_SHARE * len(distinct)))
    alive, prefix = distinct, []
    best, best_len = 0, 0
    while True:
        t = len(prefix)
        counts = Counter(c[t] for c in alive if len(c) > t + 1)  # the remainder after the preamble is never empty
        if not counts:
            break
        token, n = counts.most_common(1)[0]
        if n < need:
            break
        alive = [c for c in alive if len(c) > t + 1 and c[t] == token]
        prefix.append(token)
        if len(prefix) * n > best:  # a longer prefix that fewer contexts share can save less
            best, best_len = len(prefix) * n, len(prefix)
    return tuple(prefix[:best_len]) if best_len >= min_tokens else ()


def _layer_types(model) -> tuple[list[str] | None, int | None]:
    config = (model.get_base_model() if hasattr(model, "get_base_model") else model).config
    layer_types = getattr(config, "layer_types", None)
    window = getattr(config, "sliding_window", None)
    if layer_types and window and "sliding_attention" in layer_types:
        return list(layer_types), int(window)
    return None, None


class _PrefixCache:
    """The decoder's past key/values for one forward: each layer's preamble states (expanded over the batch), then
    the batch's own. With no states it records what each layer computes (the preamble's own forward). Duck-typed
    to the ``update`` every attention layer calls, so it needs no cache class of a given transformers version."""

    def __init__(self, states: list[tuple[torch.Tensor, torch.Tensor]] | None = None):
        self.states = states
        self.recorded: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def update(self, key_states, value_states, layer_idx, *args, **kwargs):
        if self.states is None:
            self.recorded[layer_idx] = (key_states, value_states)
            return key_states, value_states
        k, v = self.states[layer_idx]
        B = key_states.shape[0]
        return (torch.cat([k.expand(B, -1, -1, -1), key_states], dim=-2), torch.cat([v.expand(B, -1, -1, -1), value_states], dim=-2))

    def get_seq_length(self, layer_idx: int = 0) -> int:
        return 0 if self.states is None else int(self.states[layer_idx][0].shape[-2])


def decoder_cache_kwarg(body) -> str:
    """transformers 5 names the decoder's cache argument ``cache`` (``past_key_values`` is deprecated), 4.x the other."""
    return "cache" if "cache" in inspect.signature(body.forward).parameters else "past_key_values"


@dataclass
class Preamble:
    """A shared preamble's token ids and, per layer, the key/value states rows see (sliding layers: the last
    ``sliding_window - 1``)."""

    tokens: tuple[int, ...]
    states: list[tuple[torch.Tensor, torch.Tensor]]
    kept: dict[str, int]  # layer type -> how many preamble states that type keeps

    def __len__(self) -> int:
        return len(self.tokens)


def compute_preamble(model, tokens: tuple[int, ...], device) -> Preamble:
    """One forward of the preamble alone (batch 1, positions 0..P-1, the scorer's own masks); its states cropped
    per layer type. Under no_grad."""
    P = len(tokens)
    body, _, _ = body_and_head(model)
    ids = torch.tensor([list(tokens)], dtype=torch.long, device=device)
    pos = torch.arange(P, device=device)[None]
    seg = torch.zeros((1, P), dtype=torch.long, device=device)
    rec = _PrefixCache()
    with torch.no_grad():
        body(input_ids=ids, attention_mask=_masks(model, seg, pos), position_ids=pos, use_cache=False, **{decoder_cache_kwarg(body): rec})
    layer_types, window = _layer_types(model)
    kept = {"full_attention": P}
    if layer_types and window:
        kept["sliding_attention"] = min(P, window - 1)
    states = []
    for i in range(len(rec.recorded)):
        k, v = rec.recorded[i]
        n = kept[layer_types[i]] if layer_types else P
        states.append((k[:, :, P - n :].detach().clone(), v[:, :, P - n :].detach().clone()))
    return Preamble(tuple(tokens), states, kept)


@dataclass
class PreambleStore:
    """Preamble states of ONE model (the caller keeps one store per model identity and drops it when the model
    changes: an adapter changes every state). Holds at most ``limit`` preambles, the most recently used: the
    scorer's (:class:`Preamble`) and, apart, generation's (the model's own cache object after the preamble)."""

    limit: int = 4
    items: dict[tuple[int, ...], Preamble] = field(default_factory=dict)
    generation: dict[tuple[int, ...], object] = field(default_factory=dict)
    computed: int = 0

    def _keep(self, items: dict, tokens: tuple[int, ...], make):
        found = items.pop(tokens, None)
        if found is None:
            found = make()
            self.computed += 1
        items[tokens] = found  # most recent last
        while len(items) > self.limit:
            items.pop(next(iter(items)))
        return found

    def get(self, model, tokens: tuple[int, ...], device) -> Preamble:
        return self._keep(self.items, tokens, lambda: compute_preamble(model, tokens, device))

    def get_generation_cache(self, model, tokens: tuple[int, ...], device):
        """The decoder cache after the preamble alone (batch 1, positions 0..P-1): what ``generate`` holds after
        reading it. The caller copies it before use (generation appends to it)."""

        def make():
            with torch.no_grad():
                out = model(input_ids=torch.tensor([list(tokens)], dtype=torch.long, device=device), use_cache=True)
            return out["cache"] if "cache" in out.keys() else out["past_key_values"]  # transformers 5 / 4.x

        return self._keep(self.generation, tokens, make)


def _reusable_cache(cache, max_length: int) -> bool:
    """The preamble's cache is one generation can continue from in the ``preamble | padding | rest`` layout: every
    layer a plain dynamic one, or a sliding-window one the whole sequence stays inside (the window counts cache
    slots, and the padding now sits within them). Chunked, quantised, static, linear or recurrent layers: no."""
    from transformers.cache_utils import DynamicLayer, DynamicSlidingWindowLayer

    layers = getattr(cache, "layers", None)
    if not layers:
        return False
    for layer in layers:
        if type(layer) is DynamicSlidingWindowLayer:
            if max_length >= layer.sliding_window:
                return False
        elif type(layer) is not DynamicLayer:
            return False
    return True


def _plain_greedy(model, generation_kwargs: dict) -> bool:
    """One greedy sequence per row, no rule that reads across the row (what the re-laid batch keeps exact)."""
    config = getattr(model, "generation_config", None)

    def setting(name, default=None):
        value = generation_kwargs.get(name)
        return value if value is not None else getattr(config, name, default)

    return ((setting("num_beams", 1) or 1) == 1 and (setting("num_return_sequences", 1) or 1) == 1 and not setting("no_repeat_ngram_size")
            and setting("cache_implementation") is None and not setting("do_sample")  # without do_sample, temperature is unused
            and "cache" not in generation_kwargs and "past_key_values" not in generation_kwargs)


def generation_with_preamble(model, context: torch.Tensor, mask: torch.Tensor, max_length: int, store: PreambleStore,
                             counts: Counter | None, pad_id: int, generation_kwargs: dict | None = None):
    """A left-padded generation batch rearranged to reuse a shared preamble's cache: ``(input_ids, attention_mask,
    cache)``, or ``None`` to generate as usual.

    Each row becomes ``preamble | padding | the rest`` (same width, so the caller's slicing of the continuation is
    unchanged): ``generate`` derives positions from the mask's running sum, so the rest continues at position P
    exactly as in the left-padded row, and skips the P cached tokens. ``None`` for sampled, beam or n-gram-blocking
    generation (:func:`_plain_greedy`) and when the batch shares no preamble; ``None`` and counted as fallbacks (the
    batch is generated in full) when a row does not start with it or the model's cache cannot be continued in this
    layout (:func:`_reusable_cache`: a sliding window the sequence could reach, chunked or recurrent layers)."""
    if not _plain_greedy(model, generation_kwargs or {}):
        return None
    B, W = context.shape
    rows = [context[b][mask[b].bool()].tolist() for b in range(B)]
    preamble = find_preamble(rows)
    P = len(preamble)
    if not P:
        return None
    starts = [len(r) > P and tuple(r[:P]) == preamble for r in rows]
    cached = store.get_generation_cache(model, preamble, context.device) if all(starts) else None
    if cached is None or not _reusable_cache(cached, max_length):
        if counts is not None:
            counts["preamble_fallback"] += B
        return None
    ids = torch.full_like(context, pad_id)
    new_mask = torch.zeros_like(mask)
    for b, r in enumerate(rows):
        rest = r[P:]
        ids[b, :P] = torch.tensor(preamble, dtype=ids.dtype)
        ids[b, W - len(rest):] = torch.tensor(rest, dtype=ids.dtype)
        new_mask[b, :P] = 1
        new_mask[b, W - len(rest):] = 1
    cache = copy.deepcopy(cached)
    cache.batch_repeat_interleave(B)
    if counts is not None:
        counts["preamble_reused"] += B
    return ids, new_mask, cache


def _masks(model, seg: torch.Tensor, pos: torch.Tensor, preamble: Preamble | None = None):
    """Boolean [B, 1, L, K + L] masks (True = attend), K = the preamble states a layer type keeps (0 without one);
    a dict per layer type for hybrid models. Preamble keys sit at positions P-K..P-1 and belong to the context."""
    layer_types, window = _layer_types(model)

    def build(kept: int, sliding: bool) -> torch.Tensor:
        q_seg, q_pos = seg[:, :, None], pos[:, :, None]
        k_seg, k_pos = seg, pos
        if kept:
            P = len(preamble) if preamble is not None else 0
            B = seg.shape[0]
            k_seg = torch.cat([torch.zeros((B, kept), dtype=seg.dtype, device=seg.device), seg], dim=1)
            k_pos = torch.cat([torch.arange(P - kept, P, dtype=pos.dtype, device=pos.device).expand(B, kept), pos], dim=1)
        k_seg, k_pos = k_seg[:, None, :], k_pos[:, None, :]
        same_or_ctx = (k_seg == 0) | (k_seg == q_seg)
        allowed = (k_pos <= q_pos) & same_or_ctx & (k_seg >= 0) & (q_seg >= 0)
        L = seg.shape[1]
        eye = torch.zeros((L, kept + L), dtype=torch.bool, device=seg.device)
        eye[:, kept:] = torch.eye(L, dtype=torch.bool, device=seg.device)  # each query's own key
        eye = eye[None]
        if sliding:
            return allowed & ((q_pos - k_pos) < window) | (eye & (q_seg < 0))
        return allowed | (eye & (q_seg < 0))  # padding attends to itself only (no empty softmax rows)

    kept = preamble.kept if preamble is not None else {}
    full = build(kept.get("full_attention", 0), False)
    if layer_types and window:
        return {"full_attention": full[:, None], "sliding_attention": build(kept.get("sliding_attention", 0), True)[:, None]}
    return full[:, None]


class UnscorableRequest(LafError):
    """A request HFLM refuses too (empty context or continuation, a continuation past max_length); ``index`` is its
    place in the scorer's request list, for the caller to name the suite and item."""

    def __init__(self, index: int, what: str, fix: str):
        self.index, self.what = index, what
        super().__init__(f"request {index} to score has {what}; lm-eval's HFLM refuses it too", fix)


@dataclass
class _Body:
    """One batch through the body: the hidden states at its distinct scored positions, and for each request the rows
    it reads there and the tokens they predict."""

    hidden: torch.Tensor  # [distinct positions, d]
    where: list[tuple[int, list[int], list[int]]]  # (request index, rows of ``hidden``, targets)


def _body_rows(model, rows: list[_Row], pad_id: int, device, padding_side: str = "right", preamble: Preamble | None = None) -> _Body:
    """One padded batch through the body. ``padding_side`` moves the padding before (left) or after (right) each
    row; positions and the mask are explicit, so the numbers do not depend on it (tests/test_validity.py holds
    that). With ``preamble`` every row's context starts with its tokens: only the rest is run, on its states."""
    skip = len(preamble) if preamble is not None else 0
    width = max(r.length for r in rows) - skip
    B = len(rows)
    ids = torch.full((B, width), pad_id, dtype=torch.long)
    seg = torch.full((B, width), -1, dtype=torch.long)
    pos = torch.zeros((B, width), dtype=torch.long)
    where: list[tuple[int, list[int], list[int]]] = []  # (request index, flat positions, targets)
    for b, row in enumerate(rows):
        o = width - (row.length - skip) if padding_side == "left" else 0  # where the row starts
        C = len(row.context)
        ids[b, o : o + C - skip] = torch.tensor(row.context[skip:])
        seg[b, o : o + C - skip] = 0
        pos[b, o : o + C - skip] = torch.arange(skip, C)
        at = o + C - skip
        for j, m in enumerate(row.members, 1):
            n = len(m.tail)
            assert n + 1 == len(m.targets), "a scored position for every target"  # score_loglikelihood refuses the rest
            if n:
                ids[b, at : at + n] = torch.tensor(m.tail)
                seg[b, at : at + n] = j
                pos[b, at : at + n] = torch.arange(C, C + n)
            flat = [b * width + o + C - skip - 1] + [b * width + at + t for t in range(n)]
            where.append((m.index, flat, m.targets))
            at += n
        if o:
            pos[b, :o] = torch.arange(o)
        pos[b, at:] = torch.arange(width - at)
    ids, seg, pos = ids.to(device), seg.to(device), pos.to(device)
    body = body_and_head(model)[0]
    past = {} if preamble is None else {decoder_cache_kwarg(body): _PrefixCache(preamble.states)}
    hidden = body(input_ids=ids, attention_mask=_masks(model, seg, pos, preamble), position_ids=pos, use_cache=False, **past).last_hidden_state
    # A row's context ends at one position, which predicts the first token of every member: the head (a product with
    # the whole vocabulary, most of the cost of a short continuation) reads each distinct position once.
    slot: dict[int, int] = {}
    for _, ps, _ in where:
        for p in ps:
            slot.setdefault(p, len(slot))
    kept = hidden.reshape(B * width, -1)[torch.tensor(list(slot), device=hidden.device)]
    return _Body(kept, [(index, [slot[p] for p in ps], targets) for index, ps, targets in where])


def _head_scores(model, done: list[_Body], capture: CaptureFn | None = None) -> Iterator[list[tuple[int, float, bool]]]:
    """The head over the distinct positions of several batches at once (a product with the whole vocabulary costs
    less per row in bigger chunks: 3.4 ms per row at 44 rows, 2.8 at 256, on the 2-core machine), then each batch's
    ``(request index, log-likelihood, is_greedy)`` in turn; ``capture`` gets a batch's log-softmax just before it."""
    _, head, softcap = body_and_head(model)
    hidden = torch.cat([d.hidden for d in done]) if len(done) > 1 else done[0].hidden
    entries: list[tuple[int, int]] = []  # (row of ``hidden``, target) at every scored position, batch by batch
    offset = 0
    for d in done:
        entries += [(offset + r, t) for _, rows, targets in d.where for r, t in zip(rows, targets)]
        offset += d.hidden.shape[0]
    order = sorted(range(len(entries)), key=lambda k: entries[k][0])  # grouped by row, for the chunks below
    row_sorted = [entries[k][0] for k in order]
    rows_of = torch.tensor(row_sorted, device=hidden.device)
    targets = torch.tensor([entries[k][1] for k in order], device=hidden.device)
    n = hidden.shape[0]
    chunk = -(-n // -(-n // HEAD_CHUNK))  # equal chunks of at most HEAD_CHUNK rows
    lps, greedy, kept = [], [], []
    for i in range(0, n, chunk):
        logp = torch.log_softmax(head_logits(head, softcap, hidden[i : i + chunk]), dim=-1)
        a, b = bisect_left(row_sorted, i), bisect_left(row_sorted, i + chunk)
        local, tgt = rows_of[a:b] - i, targets[a:b]
        if capture is not None:
            kept.append(logp[local].float().cpu())
        lps.append(logp[local, tgt])
        greedy.append(logp.argmax(-1)[local] == tgt)
    back = torch.empty(len(entries), dtype=torch.long)
    back[torch.tensor(order, dtype=torch.long)] = torch.arange(len(entries))  # sorted -> batch by batch, request by request
    lp = torch.cat(lps).double().cpu()[back]
    gr = torch.cat(greedy).cpu()[back]
    logp_sorted = torch.cat(kept) if capture is not None else None
    del kept
    k = 0
    for d in done:
        batch, spans, first = [], [], k
        for index, rows, _ in d.where:
            m = len(rows)
            batch.append((index, float(lp[k : k + m].sum()), bool(gr[k : k + m].all())))
            spans.append((index, k - first, m))
            k += m
        if capture is not None and logp_sorted is not None:
            capture(spans, logp_sorted.index_select(0, back[first:k]))
        yield batch


def score_loglikelihood(
    model,
    requests: list[tuple[list[int], list[int]]],
    *,
    batch_size: int,
    max_length: int,
    pad_id: int,
    device,
    share_context: bool = True,
    row_budget: int = 512,
    capture: CaptureFn | None = None,
    padding_side: str = "right",
    preambles: PreambleStore | None = None,
    counts: Counter | None = None,
    weights: list[int] | None = None,
) -> Iterator[list[tuple[int, float, bool]]]:
    """Yield, batch by batch, ``(request index, log-likelihood, is_greedy)`` for every request.

    ``capture`` (opt-in, off in evaluation) receives each batch's full next-token log-softmax at the scored
    positions before the batch is yielded. The batches depend only on the requests and the settings, so two
    models scored in lockstep (``zip`` of two generators) see the same batches: that is how ``laf parity``
    compares their distributions without storing them.

    ``preambles``: the current model's store of shared-preamble states; with it, a preamble shared by the
    requests' contexts (:func:`find_preamble`) is computed once and its rows run only their remainder, batched
    apart from the rows that do not start with it (scored in full). ``counts`` gets ``preamble_reused`` and
    ``preamble_fallback`` (requests, when there is a preamble) added; ``weights``: how many requests each one stands
    for (a repeated request is computed once), 1 each without it."""
    if weights is not None and len(weights) != len(requests):
        raise ValueError(f"{len(weights)} weights for {len(requests)} requests")
    for i, (ctx, cont) in enumerate(requests):  # what HFLM asserts, as an error that names the cause
        if not ctx or not cont or len(cont) > max_length:
            raise UnscorableRequest(i, "an empty context" if not ctx else "an empty continuation (an answer with no tokens)" if not cont
                                    else f"a continuation of {len(cont)} tokens, longer than max_length {max_length}",
                                    "give every answer choice some text (check the suite's doc_to_choice and target_delimiter)" if ctx and not cont
                                    else "raise --max-length or shorten the choices" if ctx else "give every item a prompt")
    preamble: tuple[int, ...] = ()
    if preambles is not None and share_context:
        preamble = find_preamble([_split(ctx, cont, max_length)[0] for ctx, cont in requests])
    P = len(preamble)
    if P:
        def starts(req: tuple[list[int], list[int]]) -> bool:
            context = _split(req[0], req[1], max_length)[0]
            return len(context) > P and tuple(context[:P]) == preamble

        on = [i for i, r in enumerate(requests) if starts(r)]
        on_set = set(on)
        off = [i for i in range(len(requests)) if i not in on_set]
        if counts is not None:
            counts["preamble_reused"] += len(on) if weights is None else sum(weights[i] for i in on)
            counts["preamble_fallback"] += len(off) if weights is None else sum(weights[i] for i in off)
        parts = [(on, P), (off, 0)]
    else:
        parts = [(list(range(len(requests))), 0)]
    waiting: list[_Body] = []  # batches through the body whose head waits for a fuller chunk
    with torch.no_grad():
        for part, skip in parts:
            if not part:
                continue
            rows = plan_rows([requests[i] for i in part], max_length, row_budget, share_context, skip)
            for row in rows:  # back to the caller's request indices
                for m in row.members:
                    m.index = part[m.index]
            states = preambles.get(model, preamble, device) if skip and preambles is not None else None
            for i in range(0, len(rows), batch_size):
                waiting.append(_body_rows(model, rows[i : i + batch_size], pad_id, device, padding_side, states))
                if capture is not None or sum(d.hidden.shape[0] for d in waiting) >= HEAD_CHUNK:  # with capture, one batch's log-softmax at a time
                    yield from _head_scores(model, waiting, capture)
                    waiting = []
        if waiting:
            yield from _head_scores(model, waiting, capture)
