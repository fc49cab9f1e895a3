"""Forgetting control data (``preserve:``): replay sequences and self-distilled targets, made once and cached.

* **Replay** (``preserve.replay``): general-purpose sequences mixed into the training stream at ``ratio`` of its
  tokens, with loss on every replay token. ``source: self`` has the base model write them: continuations sampled
  from the base on the package's pool of neutral openings (``replay_openings.txt``), one file in the cache per
  (base fingerprint, precision, pool, sampling settings, count), so the second run costs nothing (self-generated
  replay: Marek et al. 2026). ``source: PATH`` reads the user's own text or instruction file.
  Every replay text goes through the contamination check the training data gets (13-grams against every eval
  suite): a text sharing one with an eval item is dropped and counted, and replay that is all contaminated is an
  error, so the general-text suite stays a held-out measure.
* **Self-distilled targets** (``preserve.self_distill``): the base rewrites each training response in its own words
  given the original as context (Yang et al., ACL 2024); a rewrite that loses the original's facts (a number, a
  name, a model code, or most of its content words) falls back to the original, counted.

Generation runs on the base before the adapter is attached, with the torch RNG seeded per batch and restored
after, so a run with the same inputs makes the same texts and training's own randomness is untouched.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import torch

from ..data.formats import Example
from ..data.tokenize import MAX_CHARS_PER_TOKEN, TokenizedExample
from ..env import cache_dir
from ..errors import LafError
from ..io import atomic_write_json, sha256_file, sha256_json
from .config import ReplaySettings, TrainConfig

if TYPE_CHECKING:
    from .batching import Batch

OPENINGS = Path(__file__).with_name("replay_openings.txt")
GEN_VERSION = 1  # bump when the generation procedure changes: old cache files are then never read
GEN_BATCH = 64  # a 4-bit base dequantises its weights at every decoding step: large batches amortise it
MAX_REPLAY_BYTES = 64 << 20  # a replay file is general text, not a corpus: read at most this much
MAX_CACHE_BYTES = 256 << 20
ReplayFilter = Callable[[list[str]], tuple[list[int], dict]]  # texts -> (indices kept, contamination report)


@dataclass
class PreserveData:
    """What the preserve stage made: replay examples (tokenized), the facts for the manifest, and the digest of the
    replay texts (part of the resume identity)."""

    replay: list[TokenizedExample] = field(default_factory=list)
    info: dict = field(default_factory=dict)
    digest: str | None = None


def openings() -> list[str]:
    return [ln.strip() for ln in OPENINGS.read_text(encoding="utf-8").splitlines() if ln.strip() and not ln.startswith("#")]


class _StopWhenCut:
    """A ``StoppingCriteria``: a row is finished once ``cut(text)`` says its text so far is final (``cut`` returns the
    index where the kept text ends, or ``None`` while more text could still be kept). Decoding the new tokens of a
    64-row batch costs well under a millisecond; a decoding step of the model costs about a second on a CPU."""

    def __init__(self, tok, prompt_len: int, cut: Callable[[str], int | None]):
        self.tok, self.prompt_len, self.cut = tok, prompt_len, cut

    def __call__(self, input_ids: torch.Tensor, scores, **kwargs) -> torch.Tensor:
        texts = self.tok.batch_decode(input_ids[:, self.prompt_len:], skip_special_tokens=True)
        return torch.tensor([self.cut(t) is not None for t in texts], dtype=torch.bool, device=input_ids.device)


@torch.no_grad()
def generate(model, tok, prompts: list[str], *, max_new_tokens: int, sample: bool, temperature: float = 1.0, top_p: float = 1.0,
             seed: int = 0, log: Callable[[str], None] = lambda m: None, what: str = "texts",
             stop_when: Callable[[str], int | None] | None = None) -> list[str]:
    """Continuations of ``prompts`` by ``model`` (left-padded batches of ``GEN_BATCH``), decoded without the prompt.

    Each batch seeds the torch RNG with ``seed`` and its index inside ``fork_rng``, so sampling is reproducible and the
    caller's RNG state is unchanged. ``stop_when(text)`` (optional) ends a row as soon as its text's kept part is
    final; a batch ends when every row has. The caller must cut the texts with the same rule: what follows the cut
    point is generated only until the whole batch stops, and is never meant to be used."""
    from transformers import StoppingCriteriaList

    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    side = tok.padding_side
    tok.padding_side = "left"
    out: list[str] = []
    t0 = last = time.perf_counter()
    try:
        for b in range(0, len(prompts), GEN_BATCH):
            chunk = prompts[b : b + GEN_BATCH]
            enc = tok(chunk, return_tensors="pt", padding=True, add_special_tokens=True).to(device)
            with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
                torch.manual_seed(seed * 1_000_003 + b)
                kw: dict = dict(do_sample=True, temperature=temperature, top_p=top_p, top_k=0) if sample else dict(do_sample=False)
                if stop_when is not None:
                    kw["stopping_criteria"] = StoppingCriteriaList([_StopWhenCut(tok, enc["input_ids"].shape[1], stop_when)])
                ids = model.generate(**enc, max_new_tokens=max_new_tokens, pad_token_id=tok.pad_token_id, **kw)
            out += tok.batch_decode(ids[:, enc["input_ids"].shape[1]:], skip_special_tokens=True)
            if time.perf_counter() - last > 30:
                last = time.perf_counter()
                log(f"generating {what}: {len(out)}/{len(prompts)} ({last - t0:.0f} s)")
    finally:
        tok.padding_side = side
        if was_training:
            model.train()
    return out


def _cache_path(kind: str, key: str) -> Path:
    return cache_dir() / kind / f"{key}.json"


def _read_cache(path: Path, key: str, n: int) -> list[str] | None:
    """The cached texts when the file is ours and whole (right key, ``n`` strings); else ``None`` (regenerated)."""
    try:
        if not path.is_file() or path.stat().st_size > MAX_CACHE_BYTES:
            return None
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    texts = doc.get("texts") if isinstance(doc, dict) and doc.get("key") == key else None
    if not isinstance(texts, list) or len(texts) != n or not all(isinstance(t, str) for t in texts):
        return None
    return texts


def _write_cache(path: Path, key: str, texts: list[str], meta: dict, log) -> None:
    try:
        atomic_write_json(path, {"key": key, **meta, "texts": texts})
    except (OSError, LafError) as e:  # a read-only cache costs a regeneration next time, never the run
        log(f"warning: could not cache {path.parent.name} texts in {path}: {getattr(e, 'strerror', None) or e}")


# ---------------------------------------------------------------- replay


def self_replay_texts(model, tok, s: ReplaySettings, base_fp: str, precision: str, log) -> tuple[list[str], dict]:
    """``s.count`` continuations sampled from the base on the openings pool (cycled), cached."""
    pool = openings()
    sampling = {"max_new_tokens": s.max_new_tokens, "temperature": s.temperature, "top_p": s.top_p, "seed": s.seed}
    key = sha256_json({"v": GEN_VERSION, "base": base_fp, "precision": precision, "pool": sha256_file(OPENINGS), "sampling": sampling, "count": s.count})
    path = _cache_path("replay", key)
    info = {"source": "self", "pool": {"file": OPENINGS.name, "openings": len(pool), "sha256": sha256_file(OPENINGS)}, "sampling": sampling,
            "count": s.count, "cache_key": key}
    cached = _read_cache(path, key, s.count)
    if cached is not None:
        log(f"replay: {s.count} self-generated sequences from the cache")
        return cached, {**info, "cached": True, "seconds": 0.0}
    prompts = [pool[i % len(pool)] for i in range(s.count)]
    log(f"replay: the base writes {s.count} sequences of up to {s.max_new_tokens} tokens (once; cached in {path.parent})")
    t0 = time.perf_counter()
    conts = generate(model, tok, prompts, max_new_tokens=s.max_new_tokens, sample=True, temperature=s.temperature, top_p=s.top_p, seed=s.seed,
                     log=log, what="replay")
    texts = [p + c for p, c in zip(prompts, conts)]
    secs = round(time.perf_counter() - t0, 2)
    _write_cache(path, key, texts, {"base": base_fp, "precision": precision, "sampling": sampling}, log)
    log(f"replay: {len(texts)} sequences written in {secs:.0f} s")
    return texts, {**info, "cached": False, "seconds": secs}


def file_replay_texts(path: Path) -> tuple[list[str], dict]:
    """The user's replay file: ``.txt``/``.md`` (paragraphs split by blank lines), JSON lines with a ``text`` field, or
    any instruction file ``laf train`` reads (prompt and response, both trained on)."""
    from ..data.formats import check_readable_data_path, read_examples

    check_readable_data_path(path)
    if not path.is_file():
        raise LafError(f"preserve.replay.source {path} is not a file", "give a .txt/.md text file, a JSONL file with a 'text' field, or an instruction file")
    size = path.stat().st_size
    if size == 0:
        raise LafError(f"preserve.replay.source {path} is empty", "put general-purpose text in it, or use source: self")
    if size > MAX_REPLAY_BYTES:
        raise LafError(f"preserve.replay.source {path} is {size >> 20} MiB; replay reads at most {MAX_REPLAY_BYTES >> 20} MiB",
                       "sample a smaller general-text file (replay needs a ratio of the training tokens, not a corpus)")
    info = {"source": str(path), "sha256": sha256_file(path)}
    if path.suffix.lower() in (".txt", ".md", ".text"):
        raw = path.read_bytes()
        if b"\x00" in raw[:8192]:
            raise LafError(f"preserve.replay.source {path} looks like a binary file, not text", "give a UTF-8 text file")
        text = raw.decode("utf-8", errors="replace")
        texts = [re.sub(r"\s+", " ", p).strip() for p in re.split(r"\n\s*\n", text)]
        return [t for t in texts if t], {**info, "format": "text"}
    if path.suffix.lower() == ".jsonl":
        texts, bad = [], 0
        with open(path, encoding="utf-8", errors="replace") as f:
            for ln in f:
                if not ln.strip():
                    continue
                try:
                    row = json.loads(ln)
                except ValueError:
                    bad += 1
                    continue
                if isinstance(row, dict) and isinstance(row.get("text"), str):
                    texts.append(row["text"])
                else:
                    texts = None  # not a text file: read it as instruction data below
                    break
        if texts is not None:
            if bad:
                raise LafError(f"preserve.replay.source {path}: {bad} line(s) are not JSON", "fix or remove them")
            return [t for t in texts if t.strip()], {**info, "format": "jsonl text"}
    read = read_examples(path, strict=True)
    return [ex.text for ex in read.examples if ex.text.strip()], {**info, "format": "instructions"}


def tokenize_replay(texts: list[str], tok, max_length: int) -> list[TokenizedExample]:
    """Replay texts as training rows with loss on every token (cut to ``max_length``); empty ones are skipped."""
    out = []
    for i, t in enumerate(texts):
        ids = tok(t[: max_length * MAX_CHARS_PER_TOKEN], add_special_tokens=True)["input_ids"][:max_length]
        if len(ids) >= 2:
            out.append(TokenizedExample(list(ids), list(ids), -(i + 1), replay=True))
    return out


def build_replay(cfg: TrainConfig, model, tok, base_fp: str, precision: str, config_dir: Path, replay_filter: ReplayFilter | None, log) -> PreserveData:
    """The replay rows of ``cfg.preserve.replay`` (nothing when it is off or its ratio is 0), contamination-checked."""
    s = cfg.preserve.replay
    if s is None or s.ratio == 0:
        return PreserveData()
    if s.source == "self":
        texts, info = self_replay_texts(model, tok, s, base_fp, precision, log)
    else:
        p = Path(s.source)
        texts, info = file_replay_texts(p if p.is_absolute() else config_dir / p)
        if not texts:
            raise LafError(f"preserve.replay.source {info['source']} holds no text", "put general-purpose text in it, or use source: self")
    if replay_filter is None:
        from ..data.curate import replay_contamination

        def replay_filter(t):  # noqa: E306  the suites a standalone `laf train` knows (preserve.replay.against, else every one)
            return replay_contamination(t, s.against, s.ngram)
    kept_idx, report = replay_filter(texts)
    dropped = len(texts) - len(kept_idx)
    if not kept_idx:
        raise LafError(f"every one of the {len(texts)} replay texts shares a {s.ngram}-gram with an evaluation item; replay would train on the test",
                       "use source: self, or a general-text file that does not quote the evaluation suites")
    kept = [texts[i] for i in kept_idx]
    if dropped:
        log(f"replay: dropped {dropped} of {len(texts)} texts that share a {s.ngram}-gram with an eval item")
    rows = tokenize_replay(kept, tok, cfg.max_length)
    if not rows:
        raise LafError("no replay text is long enough to train on (each needs 2 tokens or more)", "give longer replay texts")
    info = {**info, "ratio": s.ratio, "texts": len(texts), "kept": len(kept), "dropped_contaminated": dropped,
            "contamination": report, "tokens": sum(len(r.input_ids) for r in rows)}
    return PreserveData(rows, info, sha256_json(kept))


class ReplayMix:
    """Each epoch's training rows: the domain examples plus replay rows (a seeded draw, cycled when the pool is small)
    whose tokens make ``ratio`` of the total: replay tokens = ratio / (1 - ratio) x domain tokens."""

    def __init__(self, domain: list[TokenizedExample], replay: list[TokenizedExample], ratio: float, seed: int):
        self.domain, self.replay, self.ratio, self.seed = domain, replay, ratio, seed
        # preference pairs carry no replay (refused at config time) and have no single input_ids
        self.domain_tokens = sum(len(e.input_ids) for e in domain) if replay and ratio > 0 else 0

    def rows(self, epoch: int) -> list[TokenizedExample]:
        if not self.replay or self.ratio <= 0:
            return self.domain
        want = self.ratio / (1 - self.ratio) * self.domain_tokens
        return self.domain + draw_replay(self.replay, want, self.seed * 7_654_321 + epoch + 17)


def draw_replay(replay: list[TokenizedExample], want: float, seed: int) -> list[TokenizedExample]:
    """Replay rows in seeded random order, cycling through the pool when it is small, until they hold ``want`` tokens."""
    g = torch.Generator().manual_seed(seed)
    picked: list[TokenizedExample] = []
    got = 0
    while got < want:
        for i in torch.randperm(len(replay), generator=g).tolist():
            if got >= want:
                break
            picked.append(replay[i])
            got += len(replay[i].input_ids)
    return picked


class PreferenceReplay:
    """Replay for the preference objectives (DPO, ORPO, SimPO): pairs cannot be packed with plain sequences, so each
    optimizer step also trains on replay rows whose tokens are ``ratio / (1 - ratio)`` x the step's pair tokens (chosen
    and rejected), with their mean NLL added to the preference loss. The draw is seeded by (seed, step), so a resumed
    run rebuilds the same replay batches."""

    def __init__(self, replay: list[TokenizedExample], ratio: float, seed: int, batch_size: int, max_length: int, pad_id: int):
        self.replay, self.ratio, self.seed = replay, ratio, seed
        self.batch_size, self.max_length, self.pad_id = batch_size, max_length, pad_id

    def __bool__(self) -> bool:
        return bool(self.replay) and self.ratio > 0

    def batches(self, step: int, pair_tokens: int) -> list:
        from .batching import make_batches

        if not self:
            return []
        want = self.ratio / (1 - self.ratio) * pair_tokens
        picked = draw_replay(self.replay, want, self.seed * 7_654_321 + 1_000_003 * (step + 1) + 29)
        # replay rows are flagged (TokenizedExample.replay), so the packed batches mark their tokens for kl.on: replay
        return make_batches(picked, list(range(len(picked))), batch_size=self.batch_size, max_length=self.max_length, packing=True, pad_id=self.pad_id)


def chosen_rows(b) -> "Batch":
    """The chosen rows of a preference ``PairBatch`` as a padded SFT batch (labels on the chosen completion): the
    positions the KL anchor covers for a preference objective (``kl.on: train`` or ``all``)."""
    from .batching import Batch

    n = b.n_pairs
    mask = b.attention_mask[:n]
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    return Batch(b.input_ids[:n], b.labels[:n], pos, mask, n)


def anchored_count(batch: "Batch", on: str) -> int:
    """Positions the KL anchor covers in ``batch`` (``on``: replay, train or all supervised positions)."""
    keep = batch.labels[:, 1:] != -100
    if on == "all":
        return int(keep.sum())
    rep = batch.replay[:, 1:] if batch.replay is not None else torch.zeros_like(keep)
    return int((keep & rep).sum() if on == "replay" else (keep & ~rep).sum())


# ---------------------------------------------------------------- self-distilled targets

_FACT = re.compile(r"\b(?:\d[\w.,:/-]*|[A-Z][A-Za-z]*\d[\w-]*|[A-Z]{2,}[\w-]*)\b")
_WORD = re.compile(r"[a-z]{4,}")
MIN_CONTENT_RECALL = 0.5
DISTILL_PROMPT = "{prompt}\n\nReference answer: {response}\n\nThe same answer, rewritten in my own words:"


def facts_kept(original: str, rewrite: str) -> bool:
    """The rewrite keeps the original's facts: every number, model code and acronym appears in it, and at least half of
    the original's content words (4+ letters) do. A pretrained base that rambles, truncates or invents loses them."""
    if not rewrite.strip():
        return False
    rw_facts = set(_FACT.findall(rewrite))
    if not set(_FACT.findall(original)) <= rw_facts:
        return False
    words = set(_WORD.findall(original.lower()))
    if not words:
        return True
    return len(words & set(_WORD.findall(rewrite.lower()))) / len(words) >= MIN_CONTENT_RECALL


REWRITE_STOPS = ("\n\n", "Reference answer:", "Question:", "Instruction:")  # a base model keeps writing new items


def _clean_rewrite(text: str) -> str:
    text = text.strip()
    for stop in REWRITE_STOPS:
        j = text.find(stop)
        if j > 0:
            text = text[:j]
    return text.strip()


_LOOP = re.compile(r"(.{8,64}?)\1\1", re.S)  # a stretch of 8 to 64 characters said three times in a row: the base is looping


def _looped(rewrite: str) -> bool:
    return _LOOP.search(rewrite) is not None


def _rewrite_is_final(text: str) -> int | None:
    """Where generation of a rewrite can end without changing what is kept of it. Either a stop follows some content:
    ``_clean_rewrite`` cuts there, and more text can never change the rewrite (each stop's first occurrence past the
    start is already in it, and no stop string overlaps another). Or the text loops before any stop: the kept text
    will contain the loop however long it grows, and a looping rewrite is rejected (the original is kept), so the
    row's outcome is already decided. ``None`` while the rewrite could still change."""
    text = text.lstrip()
    hits = [j for j in (text.find(s) for s in REWRITE_STOPS) if j > 0]
    if hits:
        return min(hits)
    longest = max(map(len, REWRITE_STOPS))  # a stop that is still being written could start inside the last characters
    # the kept text starts with this part, stripped as _clean_rewrite strips (a loop of spaces at its end would not be kept)
    return len(text) if len(text) > longest and _looped(text[: len(text) - longest].rstrip()) else None


def self_distill(examples: list[Example], model, tok, cfg: TrainConfig, base_fp: str, precision: str, log) -> tuple[list[Example], dict]:
    """Each example's response rewritten by the base (greedy, cached); rewrites that lose facts keep the original."""
    max_new = cfg.preserve.distill_max_new_tokens
    prompts = [DISTILL_PROMPT.format(prompt=ex.prompt_text, response=ex.response_text) for ex in examples]
    key = sha256_json({"v": GEN_VERSION, "base": base_fp, "precision": precision, "prompts": sha256_json(prompts), "max_new_tokens": max_new})
    path = _cache_path("distill", key)
    cached = _read_cache(path, key, len(prompts))
    if cached is not None and any(len(t) > max_new * MAX_CHARS_PER_TOKEN for t in cached):
        cached = None  # longer than generation can write: not ours (and the loop check's time grows with the length)
    t0 = time.perf_counter()
    if cached is None:
        log(f"self-distill: the base rewrites {len(prompts)} responses (once; cached in {path.parent})")
        cached = [_clean_rewrite(t) for t in generate(model, tok, prompts, max_new_tokens=max_new, sample=False, log=log, what="rewrites",
                                                      stop_when=_rewrite_is_final)]
        _write_cache(path, key, cached, {"base": base_fp, "precision": precision}, log)
        log(f"self-distill: {len(cached)} rewrites in {time.perf_counter() - t0:.0f} s")
        from_cache = False
    else:
        log(f"self-distill: {len(prompts)} rewrites from the cache")
        from_cache = True
    out, fell_back, looped = [], 0, 0
    for ex, rw in zip(examples, cached):
        loops = _looped(rw)
        looped += loops
        if not loops and facts_kept(ex.response_text, rw):
            msgs = list(ex.messages)
            last = max(i for i, (r, _) in enumerate(msgs) if r == "assistant")
            msgs[last] = ("assistant", rw)
            out.append(Example(tuple(msgs), ex.line))
        else:
            out.append(ex)
            fell_back += 1
    if examples:
        log(f"self-distill: {len(examples) - fell_back} of {len(examples)} responses rewritten; {fell_back} kept the original "
            f"(a fact was lost, or the rewrite looped: {looped})")
    info = {"examples": len(examples), "rewritten": len(examples) - fell_back, "fell_back": fell_back, "looped": looped, "cached": from_cache,
            "seconds": round(time.perf_counter() - t0, 2), "max_new_tokens": max_new, "cache_key": key,
            "check": f"every number/model code/acronym kept, content-word recall >= {MIN_CONTENT_RECALL}, and no stretch of 8+ characters "
                     "said three times in a row"}
    return out, info

