"""``laf data check|clean``: validate, normalise, deduplicate and check training data against eval suites.

    read (every format, bad rows counted with line numbers) -> normalise (NFC, whitespace)
    -> validate (empty fields, token lengths under the base tokenizer, truncation, zero supervised tokens)
    -> exact duplicates -> near duplicates (MinHash LSH, verified Jaccard) -> contamination (13-grams vs suites)
    -> curation.json (+ the cleaned data for `clean`, never over the input)
"""

from __future__ import annotations

import json
import os
import reprlib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from ..config import load_yaml
from ..env import now_iso
from ..errors import LafError
from ..io import atomic_write_json, atomic_write_text, hash_path, sha256_file, sha256_json
from .contamination import contamination, item_pieces
from .dedupe import near_duplicates
from .formats import Example, read_examples
from .normalize import dedupe_key, normalize_example, normalize_text
from .preference import check_pairs, peek_is_preference

DROP_RULES = ("malformed", "encoding", "schema", "empty_prompt", "empty_response", "no_supervised_tokens", "exact_duplicate", "near_duplicate", "contaminated")


@dataclass
class CurationSettings:
    schema: str = "auto"
    file_format: str = "auto"
    strict: bool = False
    model: str | None = "default"  # tokenizer for length checks; None skips them
    max_length: int = 512
    near_duplicate_threshold: float = 0.8
    shingle_size: int = 5
    shingle_unit: str = "char"
    ngram: int = 13
    against: list[str] = field(default_factory=list)
    data_dir: str | None = None
    drop_contaminated: bool = True
    examples_per_rule: int = 5

    def check(self) -> None:
        """Every number in range (a library caller gets the same refusal as the CLI): ``LafError`` naming the
        setting and its allowed range. Out of range, these silently dropped most data (threshold 0, shingle or
        n-gram size 0 mark everything a duplicate or contaminated; max_length 1 truncates every example)."""
        import math

        checks = [
            ("max_length", self.max_length, 8, 1 << 20),
            ("shingle_size", self.shingle_size, 1, 64),
            ("ngram", self.ngram, 4, 1000),
            ("examples_per_rule", self.examples_per_rule, 0, 10_000),
        ]
        for key, v, lo, hi in checks:
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise LafError(f"curation setting {key} = {str(v)[:40]} is out of range (allowed: {lo}..{hi})", f"set {key} within {lo}..{hi}")
        t = self.near_duplicate_threshold
        if isinstance(t, bool) or not isinstance(t, (int, float)) or not math.isfinite(t) or not 0 < t <= 1:
            raise LafError(f"curation setting near_duplicate_threshold = {str(t)[:40]} is out of range (allowed: (0, 1])", "set a Jaccard threshold above 0 and at most 1, e.g. 0.8")


@dataclass
class CurationResult:
    manifest: dict
    kept: list[Example]


def suites_from_against(refs: list[str]) -> list[str]:
    """``--against`` takes suite names, suite files, or a YAML that lists suites (a run config or `suites: [...]`)."""
    out: list[str] = []
    for ref in refs:
        p = Path(ref)
        if p.suffix in (".yaml", ".yml") and p.exists():
            data = load_yaml(p)  # the bounded loader every user YAML goes through
            ev = data.get("eval") if isinstance(data, dict) else None
            listed = (data.get("suites") if isinstance(data, dict) else None) or (ev.get("suites") if isinstance(ev, dict) else None)
            if isinstance(listed, list):
                out += [_suite_entry(s, p, i) for i, s in enumerate(listed)]
                continue
            if isinstance(data, dict) and ("suites" in data or isinstance(ev, dict)):
                raise LafError(f"{p}: `suites` is not a list of suites", "write suites: [NAME, ...] or suites: [{suite: NAME}, ...]")
        out.append(ref)
    return out


def _suite_entry(entry: object, path: Path, i: int) -> str:
    """One listed suite: a name, or a mapping with a ``suite`` name (as in a run config)."""
    name = entry.get("suite") if isinstance(entry, dict) else entry
    if not isinstance(name, str) or not name.strip() or len(name) > 1000:
        raise LafError(f"{path}: suites[{i}] names no suite (got {reprlib.repr(entry)})", "write each entry as a suite name or {suite: NAME}")
    return name


def _token_checks(examples: list[Example], model: str, max_length: int):
    from ..models import load_tokenizer, resolve_model
    from .tokenize import tokenize_example

    tok = load_tokenizer(resolve_model(model))
    lengths, truncated, zero = [], [], []
    for i, ex in enumerate(examples):
        t, reason, was_truncated = tokenize_example(ex, tok, 10**9)
        n = len(t.input_ids) if t else 0
        lengths.append(n)
        if n > max_length:
            truncated.append(i)
            t2, reason2, _ = tokenize_example(ex, tok, max_length)
            if t2 is None and "truncation" in (reason2 or ""):
                zero.append((i, reason2))
    return lengths, truncated, zero


def _percentile(sorted_vals: list[int], q: float) -> int:
    if not sorted_vals:
        return 0
    return sorted_vals[min(len(sorted_vals) - 1, int(round(q * (len(sorted_vals) - 1))))]


def contamination_check(texts: list[str], lines: list[int], s: CurationSettings, log, note) -> dict | None:
    """Check training texts against the suites in ``s.against`` (``note(i, detail)`` per contaminated example)."""
    suite_refs = suites_from_against(s.against)
    if not suite_refs:
        return None
    from ..suites import load_suite

    items, per_suite, skipped = [], {}, []
    for ref in suite_refs:
        suite = load_suite(ref, s.data_dir)
        if suite.spec.lm_eval:
            skipped.append(f"{suite.name} (hub task: not checked)")
            continue
        docs = suite.load_docs()
        per_suite[suite.name] = {"items": len(docs), "contaminated_items": 0, "share": 0.0, "max_token_share": 0.0}
        items += [(suite.name, j, item_pieces(d)) for j, d in enumerate(docs)]
    log(f"checking {len(texts)} examples against {len(items)} eval items ({s.ngram}-grams)")
    hits = contamination(list(enumerate(texts)), items, s.ngram)
    pairs = []
    bad_examples: dict[int, list[str]] = {}
    for h in hits:
        ps = per_suite[h.suite]
        ps["contaminated_items"] += 1
        ps["max_token_share"] = round(max(ps["max_token_share"], h.share), 4)
        for i in h.training_lines:
            bad_examples.setdefault(i, []).append(f"{h.suite}#{h.item}")
            pairs.append({"suite": h.suite, "item": h.item, "training_line": lines[i], "item_token_share": round(h.share, 4)})
    for ps in per_suite.values():
        ps["share"] = round(ps["contaminated_items"] / ps["items"], 4) if ps["items"] else 0.0
    for i, where in sorted(bad_examples.items()):
        note(i, f"shares a {s.ngram}-gram with {', '.join(where[:5])}" + (" ..." if len(where) > 5 else ""))
    total_items = sum(p["items"] for p in per_suite.values())
    return {
        "ngram": s.ngram, "suites": per_suite, "skipped": skipped, "pairs": pairs[:500], "pairs_total": len(pairs),
        "contaminated_items": len(hits), "contaminated_item_share": round(len(hits) / total_items, 6) if total_items else 0.0,
        "contaminated_training_examples": len(bad_examples),
    }


def replay_contamination(texts: list[str], against: list[str] | None, ngram: int = 13, data_dir: str | None = None) -> tuple[list[int], dict]:
    """The replay texts that share no ``ngram``-gram with an item of the suites ``against`` (default: every suite found,
    built-in and yours; hub-only suites are listed as not checked): ``(indices kept, contamination report)``."""
    unavailable = []
    if against is None:  # every suite whose data is on this machine; a benchmark whose data is only on the hub is listed
        from ..suites import available_suites, load_suite

        against = []
        saved = os.environ.get("LAF_OFFLINE")
        os.environ["LAF_OFFLINE"] = "1"  # never download a data set just to check replay text against it
        try:
            for name in sorted(available_suites()):
                try:
                    suite = load_suite(name, data_dir)
                    if not suite.spec.lm_eval:
                        suite.load_docs()
                    against.append(name)
                except LafError:
                    unavailable.append(name)
        finally:
            if saved is None:
                os.environ.pop("LAF_OFFLINE", None)
            else:
                os.environ["LAF_OFFLINE"] = saved
    s = CurationSettings(against=list(against), ngram=ngram, data_dir=data_dir)
    bad: set[int] = set()
    report = contamination_check(texts, list(range(1, len(texts) + 1)), s, lambda m: None, lambda i, detail: bad.add(i))
    if report is not None:
        report = {k: v for k, v in report.items() if k != "pairs"}
        report["against"] = list(against)
        report["not_checked_no_data"] = unavailable
    return [i for i in range(len(texts)) if i not in bad], report or {"against": [], "note": "no suite to check against"}


def curate(path: str | Path, s: CurationSettings, log=lambda m: None) -> CurationResult:
    """Read the training data at ``path`` (any format, a file or a ``datasets`` folder) and curate it under ``s``:
    normalise, validate (token lengths under the base tokenizer), drop exact and near duplicates and items that
    overlap the suites in ``s.against``. Returns the curation manifest and the kept examples; writes nothing."""
    path = Path(path)
    s.check()
    if peek_is_preference(path, s.file_format):  # {prompt, chosen, rejected} pairs: the checks preference training needs
        report, pairs = check_pairs(path, file_format=s.file_format, strict=s.strict, model=s.model, max_length=s.max_length,
                                    examples_per_rule=s.examples_per_rule)
        texts = ["\n".join(c for _, c in p.prompt) + "\n" + p.chosen + "\n" + p.rejected for p in pairs]
        bad: dict[int, str] = {}
        report["contamination"] = contamination_check(texts, [p.line for p in pairs], s, log, lambda i, d: bad.setdefault(i, d))
        report["counts"]["contaminated"] = len(bad)
        if bad:
            report.setdefault("examples", {})["contaminated"] = [{"line": pairs[i].line, "detail": d} for i, d in list(bad.items())[: s.examples_per_rule]]
        if s.drop_contaminated and bad:
            pairs = [p for i, p in enumerate(pairs) if i not in bad]
            report["counts"]["kept"] = len(pairs)
            report["dropped"]["contaminated"] = len(bad)
            report["fingerprints"]["output_content_sha256"] = sha256_json([p.to_canonical() for p in pairs])
        report.update({"schema": "laf.curation/1", "created": now_iso(), "settings": dict(s.__dict__)})
        return CurationResult(report, pairs)  # type: ignore[arg-type]
    read = read_examples(path, schema=s.schema, file_format=s.file_format, strict=s.strict)
    examples = [normalize_example(e) for e in read.examples]
    changed = sum(1 for a, b in zip(read.examples, examples) if a.messages != b.messages)
    drop: dict[int, str] = {}
    findings: dict[str, list[dict]] = {r: [] for r in DROP_RULES}
    findings["truncated"] = []

    def note(rule: str, i: int | None, detail: str, line: int | None = None, snippet: str = "") -> None:
        findings[rule].append({"line": line if line is not None else examples[i].line, "detail": detail, "text": snippet or (examples[i].text[:200] if i is not None else "")})
        if i is not None and rule in DROP_RULES and i not in drop and (rule != "contaminated" or s.drop_contaminated):
            drop[i] = rule

    for p in read.problems:
        note(p.rule if p.rule in findings else "malformed", None, p.message, p.line, p.snippet)

    # -- empty fields
    for i, ex in enumerate(examples):
        if not ex.prompt_text.strip():
            note("empty_prompt", i, "the prompt (instruction / user turns) is empty or whitespace")
        if not ex.response_text.strip():
            note("empty_response", i, "the response is empty or whitespace")

    # -- token lengths under the base tokenizer (the trainer's own formatting and masking)
    token_stats = None
    if s.model:
        log("measuring token lengths")
        lengths, truncated, zero = _token_checks(examples, s.model, s.max_length)
        for i in truncated:
            findings["truncated"].append({"line": examples[i].line, "detail": f"{lengths[i]} tokens > max_length {s.max_length}", "text": examples[i].text[:200]})
        for i, reason in zero:
            note("no_supervised_tokens", i, reason)
        srt = sorted(lengths)
        token_stats = {
            "model": s.model, "max_length": s.max_length, "count": len(srt), "mean": round(sum(srt) / max(1, len(srt)), 1),
            "p50": _percentile(srt, 0.5), "p90": _percentile(srt, 0.9), "p99": _percentile(srt, 0.99), "max": srt[-1] if srt else 0,
            "truncated": len(truncated), "truncated_share": round(len(truncated) / max(1, len(srt)), 4),
        }

    # -- exact duplicates (normalised, case-folded)
    first: dict[str, int] = {}
    exact_groups: dict[int, list[int]] = {}
    for i, ex in enumerate(examples):
        if i in drop:
            continue
        k = dedupe_key(ex)
        if k in first:
            exact_groups.setdefault(first[k], []).append(i)
            note("exact_duplicate", i, f"same text as line {examples[first[k]].line}")
        else:
            first[k] = i

    # -- near duplicates among the rest
    log("finding near duplicates")
    texts = [normalize_text(e.text).casefold() for e in examples]
    clusters = near_duplicates(texts, s.near_duplicate_threshold, s.shingle_size, s.shingle_unit, exclude=set(drop))
    for c in clusters:
        for m in c.members:
            note("near_duplicate", m, f"Jaccard {c.similarity[m]:.2f} with line {examples[c.keep].line}")

    # -- contamination against the evaluation suites
    cont_doc = contamination_check([e.text for e in examples], [e.line for e in examples], s, log, lambda i, d: note("contaminated", i, d))

    kept = [e for i, e in enumerate(examples) if i not in drop]
    counts = {"input_rows": read.raw_count, "examples": len(examples), "kept": len(kept), "normalised": changed}
    counts.update({r: len(v) for r, v in findings.items()})
    manifest = {
        "schema": "laf.curation/1",
        "created": now_iso(),
        "input": {"path": str(path), "format": read.file_format, "data_schema": read.schema},
        "settings": {k: v for k, v in s.__dict__.items()},
        "counts": counts,
        "dropped": dict(Counter(drop.values())),
        "examples": {r: v[: s.examples_per_rule] for r, v in findings.items() if v},
        "exact_duplicate_groups": [{"keep": examples[k].line, "drop": [examples[i].line for i in v]} for k, v in list(exact_groups.items())[:200]],
        "near_duplicate_clusters": [{"keep": examples[c.keep].line, "drop": [examples[m].line for m in c.members], "jaccard": {str(examples[m].line): c.similarity[m] for m in c.members}} for c in clusters[:200]],
        "tokens": token_stats,
        "contamination": cont_doc,
        "fingerprints": {
            "input_sha256": hash_path(path),
            "input_content_sha256": sha256_json([e.to_canonical() for e in read.examples]),
            "output_content_sha256": sha256_json([e.to_canonical() for e in kept]),
        },
    }
    return CurationResult(manifest, kept)


def _same_or_inside(out: Path, input_path: Path) -> bool:
    out, input_path = out.resolve(), input_path.resolve()
    if out == input_path or (input_path.is_dir() and input_path in out.parents):
        return True
    try:
        return out.exists() and os.path.samefile(out, input_path)  # a hard link or another name of the input
    except OSError:
        return False


def check_outputs(input_path: Path, outputs: list[Path]) -> None:
    """Refuse before any work when an output (curation.json, the cleaned file) would replace the input or land
    inside an input folder: `laf data` never touches its input."""
    for out in outputs:
        if _same_or_inside(Path(out), Path(input_path)):
            raise LafError(f"refusing to write {out}: it would overwrite or go inside the input {input_path}",
                           "choose another --out folder (or -o file) than the input's")


def write_clean(result: CurationResult, input_path: Path, out: Path) -> Path:
    check_outputs(input_path, [out])
    text = "".join(json.dumps(e.to_canonical(), ensure_ascii=False) + "\n" for e in result.kept)
    atomic_write_text(out, text)
    result.manifest["output"] = {"path": str(out), "format": "jsonl", "data_schema": "chat", "sha256": sha256_file(out), "examples": len(result.kept)}
    return out


def write_manifest(result: CurationResult, path: Path, input_path: Path | None = None) -> Path:
    if input_path is not None:
        check_outputs(input_path, [path])
    return atomic_write_json(path, result.manifest)
