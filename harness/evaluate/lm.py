"""The lm-eval models we evaluate through.

lm-eval builds the requests and computes the metrics, so scores mean what
lm-eval's mean. :class:`CachedLM` is what lm-eval sees: it answers each request
from our content-keyed cache (keyed by model identity and the request's
strings, so a fully cached run never loads a model or a tokenizer) and hands
the misses to :class:`HarnessLM`, which is created only when first needed.
:class:`HarnessLM` keeps HFLM's tokenisation and generation and replaces its
log-likelihood path with the shared-context scorer (``scoring.py``); every
finished batch is committed to the cache at once. A preamble shared by a call's
contexts is computed once per model: :class:`HarnessLM` keeps its states for the
model named by ``model_key`` (the engine sets the model identity at every switch)
and drops them when the key changes, so an adapter never sees the base's states.

This module imports torch and lm-eval: the engine imports it only when a
(model, suite) is not already in the cache's stored suite results.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from typing import Callable

import torch
from lm_eval.api.model import LM
from lm_eval.models.huggingface import HFLM

from ..errors import LafError
from ..models.heads import body_and_head
from .cache import RequestStats, request_key
from .scoring import PreambleStore, UnscorableRequest, decoder_cache_kwarg, generation_with_preamble, score_loglikelihood

ProgressFn = Callable[[int, int, int], None]  # (done, total, cache_hits)
BatchFn = Callable[[list[tuple[int, object]]], None]  # [(index in the call's request list, result)]


class HarnessLM(HFLM):
    """HFLM with our log-likelihood scorer; reports each finished batch through ``on_batch``."""

    def __init__(self, model, tokenizer, *, batch_size: int, max_length: int, share_context: bool = True,
                 share_preamble: bool = True):
        super().__init__(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length)
        self.share_context = share_context
        self.share_preamble = share_preamble
        self.on_batch: BatchFn | None = None
        # whose preamble states the store holds: the model identity, set by whoever switches models (the engine's
        # pool). None = unknown, so nothing is kept beyond one call.
        self.model_key: str | None = None
        self._preambles: tuple[str | None, PreambleStore] | None = None
        self.preamble_counts: Counter = Counter()
        # how many requests each one of the next log-likelihood call answers (CachedLM computes a repeated request
        # once): the preamble counts then count every request answered, as the run's stats do
        self.request_weights: list[int] | None = None

    def _preamble_store(self) -> PreambleStore | None:
        if not self.share_preamble:
            return None
        if self.model_key is None or self._preambles is None or self._preambles[0] != self.model_key:
            self._preambles = (self.model_key, PreambleStore())
        return self._preambles[1]

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        return super().loglikelihood(requests, disable_tqdm=True)  # progress is ours

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        results: list = [None] * len(requests)
        pairs = [(list(ctx), list(cont)) for _, ctx, cont in requests]
        for batch in score_loglikelihood(
            self.model,
            pairs,
            batch_size=self.batch_size,
            max_length=self.max_length,
            pad_id=self.tokenizer.pad_token_id or 0,
            device=self.device,
            share_context=self.share_context,
            preambles=self._preamble_store(),
            counts=self.preamble_counts,
            weights=self.request_weights,
        ):
            done = []
            for i, ll, greedy in batch:
                results[i] = (ll, greedy)
                done.append((i, (ll, greedy)))
            if self.on_batch:
                self.on_batch(done)
        return results

    def _model_generate(self, context, max_length, stop, **generation_kwargs):
        """HFLM's generation; a greedy batch whose contexts share a preamble reads it from the preamble's cache
        (computed once per model) and runs only the rest (:func:`generation_with_preamble`)."""
        store = self._preamble_store()
        mask = generation_kwargs.get("attention_mask")
        if store is not None and self.share_context and mask is not None:
            plan = generation_with_preamble(self.model, context, mask, max_length, store, self.preamble_counts, self.tokenizer.pad_token_id or 0,
                                            generation_kwargs)
            if plan is not None:
                context, generation_kwargs["attention_mask"], cache = plan
                generation_kwargs[decoder_cache_kwarg(body_and_head(self.model)[0])] = cache
        return super()._model_generate(context, max_length, stop, **generation_kwargs)

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        """HFLM's rolling windows, all scored in one call (length-sorted batches across documents)."""
        from lm_eval import utils

        windows, owner = [], []
        for i, req in enumerate(requests):
            (string,) = req.args
            for ctx, cont in map(
                utils.make_disjoint_window,
                utils.get_rolling_token_windows(
                    token_list=self.tok_encode(string), prefix_token=self.prefix_token_id, max_seq_len=self.max_length, context_len=1
                ),
            ):
                windows.append((None, ctx, cont))
                owner.append(i)
        totals = [0.0] * len(requests)
        on_batch, self.on_batch = self.on_batch, None
        try:
            for i, (ll, _) in zip(owner, self._loglikelihood_tokens(windows)):
                totals[i] += ll
        finally:
            self.on_batch = on_batch
        return totals


class CachedLM(LM):
    """What lm-eval talks to: cache first, then the (lazily created) HarnessLM."""

    def __init__(self, cache, backend: Callable[[], HarnessLM], batch_size: int):
        super().__init__()
        self.cache = cache
        self._backend_factory = backend
        self.batch_size = batch_size
        self.identity: str | None = None
        self.stats = RequestStats()
        self.progress: ProgressFn | None = None
        self.suite: str | None = None  # the suite being scored, set by the engine (errors name it)

    # -- plumbing

    def _start(self, kind: str, requests, args_of) -> tuple[list[str], list, list[int]]:
        if not self.identity:
            raise RuntimeError("CachedLM.identity must be set before scoring")
        keys = [request_key(self.identity, kind, args_of(r, i)) for i, r in enumerate(requests)]
        rejected = getattr(self.cache, "bad_rows", 0)
        found = self.cache.get_many(keys)
        self.stats.cache_rejected += getattr(self.cache, "bad_rows", 0) - rejected
        results = [found.get(k) for k in keys]
        todo = [i for i, r in enumerate(results) if r is None]
        hits = len(requests) - len(todo)
        self.stats.requests += len(requests)
        self.stats.cache_hits += hits
        self._done, self._total, self._hits = hits, len(requests), hits
        self._report()
        return keys, results, todo

    def _report(self) -> None:
        if self.progress:
            self.progress(self._done, self._total, self._hits)

    def _commit(self, kind: str, keys, results, todo, batch: list[tuple[int, object]], copies: dict[str, list[int]] | None = None) -> None:
        """A finished batch into the results and the cache. ``copies``: the key -> every request it answers (from
        :meth:`_distinct`), so a repeated request takes its first's value."""
        rows, answered = [], 0
        for j, value in batch:
            i = todo[j]
            for k in copies[keys[i]] if copies is not None else (i,):
                results[k] = value
                answered += 1
            rows.append((keys[i], kind, value))
        self.cache.put_many(rows)
        self.stats.computed += answered
        self.stats.forward_batches += 1
        self._done += answered
        self._report()

    @staticmethod
    def _distinct(keys, todo) -> tuple[list[int], dict[str, list[int]]]:
        """The first request of each key among ``todo``, and every request each key answers. A request repeated in
        one call (a choice that both MC1 and MC2 score: 120 of TruthfulQA's first 280) is computed once, and every
        copy takes that value: a fresh run, a run without cache and a cached re-run give the same records bit for bit."""
        copies: dict[str, list[int]] = {}
        for i in todo:
            copies.setdefault(keys[i], []).append(i)
        return [same[0] for same in copies.values()], copies

    def _take_preamble_counts(self, lm: HarnessLM) -> None:
        """The backend's preamble counts of the call just made, into this run's stats."""
        self.stats.preamble_reused += lm.preamble_counts.pop("preamble_reused", 0)
        self.stats.preamble_fallback += lm.preamble_counts.pop("preamble_fallback", 0)

    # -- the three request types

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        keys, results, todo = self._start("loglikelihood", requests, lambda r, i: list(r.args))
        if todo:
            todo, copies = self._distinct(keys, todo)
            lm = self._backend_factory()
            lm.on_batch = lambda batch: self._commit("loglikelihood", keys, results, todo, [(j, list(v)) for j, v in batch], copies)
            lm.request_weights = [len(copies[keys[i]]) for i in todo]
            try:
                lm.loglikelihood([requests[i] for i in todo])
            except UnscorableRequest as e:
                req = requests[todo[e.index]]
                raise LafError(f"suite {self.suite or req.task_name}, item {req.doc_id}: a request has {e.what}; lm-eval's HFLM refuses it too",
                               e.fix) from None
            finally:
                lm.on_batch = lm.request_weights = None
                self._take_preamble_counts(lm)
        return [(float(r[0]), bool(r[1])) for r in results]

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        keys, results, todo = self._start("loglikelihood_rolling", requests, lambda r, i: list(r.args))
        if todo:
            todo, copies = self._distinct(keys, todo)
            lm = self._backend_factory()
            for start in range(0, len(todo), self.batch_size):
                chunk = list(range(start, min(start + self.batch_size, len(todo))))
                values = lm.loglikelihood_rolling([requests[todo[j]] for j in chunk])
                self._take_preamble_counts(lm)
                self._commit("loglikelihood_rolling", keys, results, todo, list(zip(chunk, values)), copies)
        return [float(r) for r in results]

    def generate_until(self, requests, disable_tqdm: bool = False):
        seen: Counter = Counter()

        def args_of(req, i):
            context, gen_kwargs = req.args
            args = [context, {k: gen_kwargs[k] for k in sorted(gen_kwargs)}]
            sampling = bool(gen_kwargs.get("do_sample")) or float(gen_kwargs.get("temperature", 0) or 0) > 0
            occurrence = 0
            if sampling:  # repeated sampled requests are distinct draws, not one cached answer
                occurrence = seen[repr(args)]
                seen[repr(args)] += 1
            return args + [occurrence]

        keys, results, todo = self._start("generate_until", requests, args_of)
        if todo:
            lm = self._backend_factory()
            for start in range(0, len(todo), self.batch_size):
                chunk = list(range(start, min(start + self.batch_size, len(todo))))
                # sampled generations are reproducible: the seed comes from the requests' keys
                torch.manual_seed(int(hashlib.sha256("".join(keys[todo[j]] for j in chunk).encode()).hexdigest()[:8], 16))
                outs = HFLM.generate_until(lm, [requests[todo[j]] for j in chunk], disable_tqdm=True)
                self._take_preamble_counts(lm)
                self._commit("generate_until", keys, results, todo, list(zip(chunk, outs)))
        return results
