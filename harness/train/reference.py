"""The DPO reference: its identity, the pass that computes its log-probs, and the content-keyed cache that keeps them.

The reference is the starting model: the base with the adapter switched off, or with ``init_from`` the base plus
that adapter (the policy starts from its weights, so the reference is the policy before the first step). Its
log-probs are computed once, before training, and stored in a cache keyed by the reference identity and the
tokenised pair, so a resumed or repeated run reads them instead of running the reference again. A long pass logs
how far it is and saves the cache every ``REF_PROGRESS_S`` seconds, so a kill loses at most that interval's pairs.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch

from ..data.preference import TokenizedPair
from ..errors import LafError
from ..io import atomic_write_json, sha256_json
from .config import TrainConfig
from .pairs import pair_batch, sequence_logps

REF_PROGRESS_S = 30.0  # the reference pass logs its progress and saves its cache at most this often


class RefCache:
    """Reference log-probs by pair content, one JSON file per reference identity (written atomically)."""

    def __init__(self, root: Path, identity: str):
        self.path = Path(root) / f"{identity[:40]}.json"
        self.values: dict[str, list[float]] = {}
        self.dirty = False
        if self.path.exists():
            try:
                data = json.loads(self.path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                data = {}
            if isinstance(data, dict) and data.get("identity") == identity and isinstance(data.get("logps"), dict):
                for k, v in data["logps"].items():
                    if isinstance(v, list) and len(v) == 2 and all(isinstance(x, (int, float)) and torch.isfinite(torch.tensor(float(x))) for x in v):
                        self.values[k] = [float(v[0]), float(v[1])]
        self.identity = identity

    def get(self, key: str) -> list[float] | None:
        return self.values.get(key)

    def put(self, key: str, chosen: float, rejected: float) -> None:
        self.values[key] = [chosen, rejected]
        self.dirty = True

    def save(self) -> None:
        if self.dirty:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_json(self.path, {"identity": self.identity, "logps": self.values})
            self.dirty = False


def reference_identity(base_fingerprint: str, load: dict, cfg: TrainConfig, init_from: dict | None) -> str:
    """What the reference model is: the base, how it is loaded, the adapter it carries, the template."""
    return sha256_json({"base": base_fingerprint, "load": load, "init_from": init_from, "chat_template": cfg.chat_template,
                        "max_length": cfg.max_length, "mixed_precision": cfg.mixed_precision})



@dataclass
class RefStats:
    """How the reference log-probs were obtained (the manifest records it)."""

    computed: int = 0
    cached: int = 0
    seconds: float = 0.0


def reference_logps(model, pairs: dict[str, TokenizedPair], cache: RefCache, *, batch_size: int, pad_id: int, device: str,
                    autocast: Callable, adapter_off: bool, log: Callable[[str], None]) -> tuple[dict[str, list[float]], RefStats]:
    """``[chosen, rejected]`` reference log-probs for every pair (by key): from ``cache``, else one no-grad pass of
    the reference (``adapter_off``: the base with the adapter disabled; else the model as it is, init_from loaded)."""
    stats = RefStats()
    todo = [p for k, p in pairs.items() if cache.get(k) is None]
    stats.cached = len(pairs) - len(todo)
    if todo:
        t0 = last = time.perf_counter()
        log(f"reference log-probs: computing {len(todo)} pairs ({stats.cached} cached)")
        was_training = model.training
        model.eval()
        ctx = model.disable_adapter() if adapter_off else contextlib.nullcontext()
        with torch.no_grad(), ctx, autocast():
            for i in range(0, len(todo), batch_size):
                chunk = todo[i : i + batch_size]
                b = pair_batch(chunk, pad_id).to(device)
                s = sequence_logps(model, b).sums.float().cpu()
                if not torch.isfinite(s).all():
                    bad = chunk[int((~torch.isfinite(s)).nonzero()[0]) % len(chunk)]
                    raise LafError(
                        f"the reference model gives a non-finite log-probability for the pair at line {bad.line}",
                        "check the base model loads correctly (precision, compute_dtype) and the pair's text",
                    )
                n = len(chunk)
                for j, p in enumerate(chunk):
                    cache.put(p.key(), float(s[j]), float(s[n + j]))
                done = i + n
                if done < len(todo) and time.perf_counter() - last >= REF_PROGRESS_S:
                    # a long pass says how far it is, and a kill loses at most this interval's pairs
                    cache.save()
                    last = time.perf_counter()
                    log(f"reference log-probs: {done}/{len(todo)} pairs ({done / (last - t0):.1f} pairs/s, saved)")
        if was_training:
            model.train()
        cache.save()
        stats.computed = len(todo)
        stats.seconds = time.perf_counter() - t0
    return {k: cache.get(k) for k in pairs}, stats  # type: ignore[misc]
