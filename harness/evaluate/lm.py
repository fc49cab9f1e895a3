"""The lm-eval model we evaluate through: HFLM's tokenisation and task plumbing, our scoring and cache.

lm-eval builds the requests and computes the metrics, so scores mean what
lm-eval's mean; we answer the requests: from the content-keyed cache when we
can, else with the shared-context scorer (``scoring.py``) or HFLM's own
generation, committing each batch to the cache as it finishes.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import torch
from lm_eval.models.huggingface import HFLM

from .cache import request_key
from .scoring import score_loglikelihood


@dataclass
class RequestStats:
    requests: int = 0
    cache_hits: int = 0
    computed: int = 0
    forward_batches: int = 0

    def add(self, other: "RequestStats") -> None:
        self.requests += other.requests
        self.cache_hits += other.cache_hits
        self.computed += other.computed
        self.forward_batches += other.forward_batches


ProgressFn = Callable[[int, int, int], None]  # (done, total, cache_hits)


class HarnessLM(HFLM):
    def __init__(self, model, tokenizer, *, batch_size: int, max_length: int, cache, share_context: bool = True):
        super().__init__(pretrained=model, tokenizer=tokenizer, batch_size=batch_size, max_length=max_length)
        self.cache = cache
        self.share_context = share_context
        self.identity: str | None = None
        self.stats = RequestStats()
        self.progress: ProgressFn | None = None

    # -- helpers

    def _report(self, done: int, total: int, hits: int) -> None:
        if self.progress:
            self.progress(done, total, hits)

    def _require_identity(self) -> str:
        if not self.identity:
            raise RuntimeError("HarnessLM.identity must be set before scoring")
        return self.identity

    # -- log-likelihood (also serves loglikelihood_rolling, which HFLM routes here)

    def loglikelihood(self, requests, disable_tqdm: bool = False):
        return super().loglikelihood(requests, disable_tqdm=True)  # progress is ours

    def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
        """HFLM's rolling windows, scored in one call (one progress bar, length-sorted batches)."""
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
        for i, (ll, _) in zip(owner, self._loglikelihood_tokens(windows)):
            totals[i] += ll
        return totals

    def _loglikelihood_tokens(self, requests, disable_tqdm: bool = False, override_bs: int | None = None):
        identity = self._require_identity()
        keys = [request_key(identity, "loglikelihood", [list(ctx), list(cont)]) for _, ctx, cont in requests]
        found = self.cache.get_many(keys)
        results: list = [None] * len(requests)
        todo = []
        for i, k in enumerate(keys):
            if k in found:
                results[i] = (float(found[k][0]), bool(found[k][1]))
            else:
                todo.append(i)
        hits = len(requests) - len(todo)
        self.stats.requests += len(requests)
        self.stats.cache_hits += hits
        done = hits
        self._report(done, len(requests), hits)
        if todo:
            pairs = [(list(requests[i][1]), list(requests[i][2])) for i in todo]
            for batch in score_loglikelihood(
                self.model,
                pairs,
                batch_size=self.batch_size,
                max_length=self.max_length,
                pad_id=self.tokenizer.pad_token_id or 0,
                device=self.device,
                share_context=self.share_context,
            ):
                rows = []
                for j, ll, greedy in batch:
                    i = todo[j]
                    results[i] = (ll, greedy)
                    rows.append((keys[i], "loglikelihood", [ll, greedy]))
                self.cache.put_many(rows)
                self.stats.computed += len(batch)
                self.stats.forward_batches += 1
                done += len(batch)
                self._report(done, len(requests), hits)
        return results

    # -- generation

    def generate_until(self, requests, disable_tqdm: bool = False):
        identity = self._require_identity()
        seen: Counter = Counter()
        keys = []
        for req in requests:
            context, gen_kwargs = req.args
            args = [context, {k: v for k, v in sorted(gen_kwargs.items())}]
            sampling = bool(gen_kwargs.get("do_sample")) or float(gen_kwargs.get("temperature", 0) or 0) > 0
            occurrence = 0
            if sampling:  # repeated sampled requests are distinct draws, not one cached answer
                occurrence = seen[repr(args)]
                seen[repr(args)] += 1
            keys.append(request_key(identity, "generate_until", args + [occurrence]))
        found = self.cache.get_many(keys)
        results: list = [found.get(k) for k in keys]
        todo = [i for i, r in enumerate(results) if r is None]
        hits = len(requests) - len(todo)
        self.stats.requests += len(requests)
        self.stats.cache_hits += hits
        done = hits
        self._report(done, len(requests), hits)
        bs = int(self.batch_size)
        for start in range(0, len(todo), bs):
            chunk = todo[start : start + bs]
            # sampled generations are reproducible: the seed comes from the requests' keys
            torch.manual_seed(int(hashlib.sha256("".join(keys[i] for i in chunk).encode()).hexdigest()[:8], 16))
            outs = super().generate_until([requests[i] for i in chunk], disable_tqdm=True)
            self.cache.put_many([(keys[i], "generate_until", o) for i, o in zip(chunk, outs)])
            for i, o in zip(chunk, outs):
                results[i] = o
            self.stats.computed += len(chunk)
            self.stats.forward_batches += 1
            done += len(chunk)
            self._report(done, len(requests), hits)
        return results
