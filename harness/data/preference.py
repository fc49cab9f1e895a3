"""Preference pairs in: ``{prompt, chosen, rejected}`` as strings or in conversational form.

Conversational form: ``prompt`` is a list of ``{role, content}`` messages
(system/user/assistant turns, ending with a user turn), ``chosen`` and
``rejected`` are each one assistant message (a ``{role, content}`` object or
a one-element list of it, as TRL's conversational datasets write them).

Every file format the trainer reads works (JSONL, JSON, CSV, Parquet, a
``datasets`` folder): rows come from :func:`harness.data.formats._iter_raw`.
A file that mixes preference rows with SFT rows is an error, never a silent
half-training. Tokenisation goes through :func:`harness.data.tokenize.tokenize_example`,
so both sides see exactly the template, EOS and masking SFT training uses,
and the prompt's tokens are the same for both sides.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LafError
from ..io import sha256_json
from .formats import FILE_FORMATS, ROLES, Example, Problem, _iter_raw, _snippet, check_readable_data_path, detect_file_format, detect_schema
from .tokenize import IGNORE, Dropped, Tokenized, tokenize_example

PREFERENCE_KEYS = ("prompt", "chosen", "rejected")
PREFERENCE_HELP = (
    "preference rows need {prompt, chosen, rejected}: strings, or prompt as [{role, content}] messages and "
    "chosen/rejected as assistant messages"
)


@dataclass(frozen=True)
class PreferencePair:
    """One pair in canonical form: the prompt's messages and the two assistant answers."""

    prompt: tuple[tuple[str, str], ...]
    chosen: str
    rejected: str
    line: int

    def side(self, which: str) -> Example:
        return Example(self.prompt + (("assistant", self.chosen if which == "chosen" else self.rejected),), self.line)

    def to_canonical(self) -> dict:
        return {"prompt": [{"role": r, "content": c} for r, c in self.prompt], "chosen": self.chosen, "rejected": self.rejected}

    @property
    def id(self) -> str:
        return sha256_json(self.to_canonical())[:16]


@dataclass
class PreferenceRead:
    path: Path
    file_format: str
    schema: str = "preference"
    examples: list[PreferencePair] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    raw_count: int = 0


def is_preference_record(record) -> bool:
    return isinstance(record, dict) and ("chosen" in record or "rejected" in record)


def _message(obj, where: str) -> tuple[str, str]:
    if not isinstance(obj, dict) or "role" not in obj or "content" not in obj:
        raise ValueError(f"{where} must be a {{role, content}} message")
    if obj["role"] not in ROLES or not isinstance(obj["content"], str):
        raise ValueError(f"{where} needs a role in {', '.join(ROLES)} and string content")
    return obj["role"], obj["content"]


def _answer(value, key: str) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list) and len(value) == 1:
        value = value[0]
    if isinstance(value, dict):
        role, content = _message(value, f"field '{key}'")
        if role != "assistant":
            raise ValueError(f"field '{key}' must be an assistant message, got role '{role}'")
        return content
    raise ValueError(f"field '{key}' must be a string or one assistant message")


def to_pair(record, line: int) -> PreferencePair:
    """Canonicalise one preference record; raises ValueError with a readable reason."""
    if not isinstance(record, dict):
        raise ValueError(f"a record must be an object, got {type(record).__name__}")
    missing = [k for k in PREFERENCE_KEYS if record.get(k) is None]
    if missing:
        raise ValueError(f"missing field{'s' if len(missing) > 1 else ''} {', '.join(repr(k) for k in missing)}")
    prompt = record["prompt"]
    if isinstance(prompt, str):
        msgs: tuple[tuple[str, str], ...] = (("user", prompt),)
    elif isinstance(prompt, list) and prompt:
        msgs = tuple(_message(m, f"prompt[{j}]") for j, m in enumerate(prompt))
        if msgs[-1][0] != "user":
            raise ValueError("the prompt's last message must be from the user")
    else:
        raise ValueError("field 'prompt' must be a string or a non-empty list of messages")
    if isinstance(record.get("system"), str) and record["system"].strip() and msgs[0][0] != "system":
        msgs = (("system", record["system"]),) + msgs
    return PreferencePair(msgs, _answer(record["chosen"], "chosen"), _answer(record["rejected"], "rejected"), line)


def peek_is_preference(path: str | Path, file_format: str = "auto") -> bool:
    """Whether the first record of a data file is a preference row (``laf data check`` picks its checks by it)."""
    path = Path(path)
    if not path.exists() or (not path.is_dir() and not path.is_file()):
        return False  # the reader that follows names the problem
    fmt = detect_file_format(path) if file_format == "auto" else file_format
    if fmt not in FILE_FORMATS or (path.is_file() and path.stat().st_size == 0):
        return False
    for _line, rec in _iter_raw(path, fmt):
        if isinstance(rec, Problem):
            continue
        return is_preference_record(rec)
    return False


def read_pairs(path: str | Path, *, file_format: str = "auto", strict: bool = True) -> PreferenceRead:
    """Read a preference file; mixed SFT/preference rows are an error (with the line)."""
    path = Path(path)
    check_readable_data_path(path)
    fmt = detect_file_format(path) if file_format == "auto" else file_format
    if fmt not in FILE_FORMATS:
        raise LafError(f"cannot tell the format of {path}", f"use one of .jsonl .json .csv .parquet or a datasets folder, or set format: ({', '.join(FILE_FORMATS)})")
    if path.is_file() and path.stat().st_size == 0:
        raise LafError(f"data file {path} is empty", "add preference pairs to it")
    result = PreferenceRead(path, fmt)
    where = "line" if fmt in ("jsonl", "csv") else "record"
    for line, rec in _iter_raw(path, fmt):
        result.raw_count += 1
        if isinstance(rec, Problem):
            if strict:
                raise LafError(f"{path}, line {rec.line}: {rec.message}: {rec.snippet}", f"fix that line; is the file really {fmt}?")
            result.problems.append(rec)
            continue
        if isinstance(rec, dict) and not is_preference_record(rec) and detect_schema(rec) is not None:
            raise LafError(
                f"{path}, {where} {line}: an SFT row ({detect_schema(rec)}) in a preference file: mixed SFT and preference rows",
                "keep preference pairs and SFT examples in separate files (objective: sft trains on the latter)",
            )
        try:
            result.examples.append(to_pair(rec, line))
        except ValueError as e:
            if strict:
                raise LafError(f"{path}, {where} {line}: {e}", PREFERENCE_HELP) from None
            result.problems.append(Problem(line, "schema", str(e), _snippet(rec)))
    if not result.examples:
        raise LafError(f"data file {path} holds no preference pairs", PREFERENCE_HELP)
    return result


# ---------------------------------------------------------------- tokenisation


@dataclass
class TokenizedPair:
    """``prompt + chosen`` and ``prompt + rejected`` token ids with labels on the completion only."""

    chosen_ids: list[int]
    chosen_labels: list[int]
    rejected_ids: list[int]
    rejected_labels: list[int]
    prompt_len: int  # tokens shared by both sides (the prompt, after truncation)
    line: int

    @property
    def tokens(self) -> int:
        return len(self.chosen_ids) + len(self.rejected_ids)

    def key(self) -> str:
        """Content key of the tokenised pair (the reference cache keys on it)."""
        return sha256_json([self.chosen_ids, self.chosen_labels, self.rejected_ids, self.rejected_labels])


TokenizedPairs = Tokenized[TokenizedPair]  # preference pairs: the same result as SFT's (harness.data.tokenize)


def pair_problem(pair: PreferencePair) -> str | None:
    """Why a pair cannot be trained on before tokenisation (``None`` when it can)."""
    if not "".join(c for r, c in pair.prompt if r != "assistant").strip():
        return "empty prompt"
    if not pair.chosen.strip():
        return "empty chosen answer"
    if not pair.rejected.strip():
        return "empty rejected answer"
    if pair.chosen.strip() == pair.rejected.strip():
        return "identical chosen and rejected answers (no preference to learn)"
    return None


def tokenize_pair(pair: PreferencePair, tokenizer, max_length: int, use_chat_template: bool | None = None):
    """Return ``(TokenizedPair | None, reason | None, truncated)`` under the SFT template and masking."""
    reason = pair_problem(pair)
    if reason:
        return None, reason, False
    sides = {}
    truncated = False
    for which in ("chosen", "rejected"):
        tok, why, trunc = tokenize_example(pair.side(which), tokenizer, max_length, use_chat_template)
        truncated |= trunc
        if tok is None:
            return None, f"{which}: {why}", truncated
        sides[which] = tok
    c, r = sides["chosen"], sides["rejected"]
    prompt_len = next(i for i, x in enumerate(c.labels) if x != IGNORE)
    r_prompt = next(i for i, x in enumerate(r.labels) if x != IGNORE)
    if r_prompt != prompt_len or c.input_ids[:prompt_len] != r.input_ids[:prompt_len]:
        return None, "chosen and rejected tokenise to different prompts (set chat_template: false)", truncated
    if c.input_ids == r.input_ids:
        return None, "identical chosen and rejected after truncation (max_length cuts off where they differ)", truncated
    return TokenizedPair(c.input_ids, c.labels, r.input_ids, r.labels, prompt_len, pair.line), None, truncated


def tokenize_pairs(pairs: list[PreferencePair], tokenizer, max_length: int, use_chat_template: bool | None = None) -> TokenizedPairs:
    out = TokenizedPairs()
    for p in pairs:
        tok, reason, truncated = tokenize_pair(p, tokenizer, max_length, use_chat_template)
        out.truncated += int(truncated)
        if tok is None:
            out.dropped.append(Dropped(p.line, reason or "unknown"))
        else:
            out.examples.append(tok)
    return out


# ---------------------------------------------------------------- laf data check on a preference file


def check_pairs(path: str | Path, *, file_format: str = "auto", strict: bool = False, model: str | None = "default", max_length: int = 512,
                use_chat_template: bool | None = None, examples_per_rule: int = 5) -> tuple[dict, list[PreferencePair]]:
    """Validate a preference file the way training will see it; return ``(report, kept pairs)``.

    Rules: malformed rows, empty prompt / chosen / rejected, identical chosen and rejected, exact duplicate pairs,
    and (with a tokenizer) truncation of either side under the training template and a prompt that leaves no
    completion token within ``max_length``. Mixed SFT and preference rows are an error (from :func:`read_pairs`).
    """
    read = read_pairs(path, file_format=file_format, strict=strict)
    findings: dict[str, list[dict]] = {r: [] for r in ("malformed", "empty_prompt", "empty_chosen", "empty_rejected", "identical", "exact_duplicate", "no_completion_tokens", "truncated")}
    drop: dict[int, str] = {}

    def note(rule: str, i: int | None, detail: str, line: int | None = None, drops: bool = True) -> None:
        findings[rule].append({"line": line if line is not None else read.examples[i].line, "detail": detail})  # type: ignore[index]
        if drops and i is not None and i not in drop:
            drop[i] = rule

    for p in read.problems:
        note("malformed", None, p.message, p.line)
    seen: dict[str, int] = {}
    for i, pair in enumerate(read.examples):
        why = pair_problem(pair)
        if why:
            rule = {"empty prompt": "empty_prompt", "empty chosen answer": "empty_chosen", "empty rejected answer": "empty_rejected"}.get(why, "identical")
            note(rule, i, why)
            continue
        k = sha256_json(pair.to_canonical())
        if k in seen:
            note("exact_duplicate", i, f"same pair as line {read.examples[seen[k]].line}")
        seen.setdefault(k, i)
    lengths: list[int] = []
    if model:
        from ..models import load_tokenizer, resolve_model

        tok = load_tokenizer(resolve_model(model))
        for i, pair in enumerate(read.examples):
            if i in drop:
                continue
            full, reason, truncated = tokenize_pair(pair, tok, 10**9, use_chat_template)
            if full is None:
                note("no_completion_tokens", i, reason or "")
                continue
            lengths.append(max(len(full.chosen_ids), len(full.rejected_ids)))
            if truncated or max(len(full.chosen_ids), len(full.rejected_ids)) > max_length:
                cut, reason, _ = tokenize_pair(pair, tok, max_length, use_chat_template)
                longest = max(len(full.chosen_ids), len(full.rejected_ids))
                note("truncated", i, f"{longest} tokens > max_length {max_length}", drops=False)
                if cut is None:
                    note("no_completion_tokens", i, reason or "")
    kept = [p for i, p in enumerate(read.examples) if i not in drop]
    srt = sorted(lengths)
    report = {
        "kind": "preference",
        "counts": {"input_rows": read.raw_count, "examples": len(read.examples), "kept": len(kept), **{r: len(v) for r, v in findings.items()}},
        "dropped": dict(Counter(drop.values())),
        "examples": {r: v[:examples_per_rule] for r, v in findings.items() if v},
        "tokens": {"model": model, "max_length": max_length, "count": len(srt), "max": srt[-1] if srt else 0,
                   **{f"p{q}": srt[min(len(srt) - 1, int(round(q / 100 * (len(srt) - 1))))] if srt else 0 for q in (50, 90, 99)},
                   "truncated": len(findings["truncated"]), "truncated_share": round(len(findings["truncated"]) / max(1, len(srt)), 4)} if model else None,
        "input": {"path": str(path), "format": read.file_format, "data_schema": "preference"},
        "fingerprints": {"input_content_sha256": sha256_json([p.to_canonical() for p in read.examples]),
                         "output_content_sha256": sha256_json([p.to_canonical() for p in kept])},
    }
    return report, kept
