"""Where a suite's documents come from, and how each source's format becomes the suite's schema.

A suite may name project data next to its file (``data.path``), a local copy
of a public benchmark (``data.local``, looked up under ``--data-dir`` /
``LAF_DATA_DIR``, then next to the suite file) and the hub (``data.hub``).
The first that is available wins, so one suite file runs offline from a
local copy and online from the hub without editing. Each source names a
``format``; its normalizer maps raw records to the schema the suite's task
config expects (for public benchmarks: the hub dataset's own fields, so the
task config is lm-eval's own).
"""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path
from typing import Callable

from ..env import offline
from ..errors import LafError
from ..io import read_jsonl

Normalizer = Callable[[list[dict], "SourceContext"], list[dict]]
NORMALIZERS: dict[str, Normalizer] = {}


class SourceContext:
    def __init__(self, file: Path | None, extra: dict):
        self.file = file
        self.extra = extra

    @property
    def where(self) -> str:
        return str(self.file) if self.file else f"hub dataset {self.extra.get('path')}"


class RowError(Exception):
    """A row a normalizer cannot read: the field and what is wrong with it (``normalize`` adds file and row)."""

    def __init__(self, field: str | None, problem: str):
        super().__init__(problem)
        self.field, self.problem = field, problem


def _get(r, key: str, types: type | tuple = str, what: str = "text"):
    """Field ``key`` of row ``r``, of the given type(s)."""
    if not isinstance(r, dict):
        raise RowError(None, f"is a JSON {type(r).__name__}, not an object")
    if key not in r or r[key] is None:
        raise RowError(key, "is missing")
    v = r[key]
    if not isinstance(v, types) or (isinstance(v, bool) and bool not in (types if isinstance(types, tuple) else (types,))):
        raise RowError(key, f"must be {what}, got {type(v).__name__} ({str(v)[:40]!r})")
    return v


def _whole(r, key: str) -> int:
    """A whole-number field (a gold index, a label), also written as digits in a string (CSV)."""
    v = _get(r, key, (int, float, str), "a whole number")
    if isinstance(v, str) and v.strip().lstrip("-").isdigit() and len(v) < 20:
        return int(v)
    if isinstance(v, float) and v.is_integer() and abs(v) < 2**53:
        return int(v)
    if isinstance(v, int):
        return v
    raise RowError(key, f"must be a whole number, got {str(v)[:40]!r}")


def _texts(r, key: str) -> list[str]:
    v = _get(r, key, (list, tuple), "a list of strings")
    if not v or not all(isinstance(x, str) for x in v):
        raise RowError(key, "must be a non-empty list of strings")
    return list(v)


def _in_range(key: str, i: int, n: int) -> int:
    if not 0 <= i < n:
        raise RowError(key, f"{i} is out of range for {n} choices")
    return i


def normalizer(name: str):
    def deco(fn):
        NORMALIZERS[name] = fn
        return fn

    return deco


def data_dir(override: str | Path | None = None) -> Path | None:
    """The folder of local benchmark copies: ``--data-dir`` (which must be a folder), else ``LAF_DATA_DIR``."""
    if override is not None and str(override) != "":
        path = Path(override).expanduser()
        if not path.is_dir():
            what = "does not exist" if not path.exists() else "is not a folder"
            raise LafError(f"--data-dir {path} {what}", "pass the folder that holds the local copies of the benchmarks")
        return path
    value = os.environ.get("LAF_DATA_DIR")
    return Path(value).expanduser() if value else None


# ---------------------------------------------------------------- raw readers


def read_records(path: Path) -> list[dict]:
    """The rows of a suite's data file (or of a folder of them). Bounded as the training data readers are
    (:mod:`harness.data.formats`): a JSONL line or CSV row at most ``DATA_LINE_BYTES``, a .json file at most
    ``DATA_JSON_BYTES``; pipes and devices are refused; every unreadable file is one error naming it."""
    from ..io import DATA_JSON_BYTES, DATA_LINE_BYTES, bounded_text_lines

    if not path.exists():
        raise LafError(f"data file not found: {path}", "check the suite's data path (relative to the suite file)")
    if path.is_dir():  # a folder of data files (e.g. BBQ's one JSONL per category), read in name order
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".jsonl", ".json", ".csv", ".parquet"))
        if not files:
            raise LafError(f"{path} holds no .jsonl/.json/.csv/.parquet files", "point at the data file or a folder of them")
        return [r for f in files for r in read_records(f)]
    if not path.is_file():  # /dev/zero never ends, a FIFO blocks: neither is "empty"
        raise LafError(f"data file {path} is not a regular file (a pipe, device or socket)", "save the data to a file and point the suite at it")
    if path.stat().st_size == 0:
        raise LafError(f"data file {path} is empty", "an empty probe or suite file is an error, not a score of zero: add items")
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".ndjson"):
            return read_jsonl(path, "fix that line")
        if suffix == ".json":
            size = path.stat().st_size
            if size > DATA_JSON_BYTES:
                raise LafError(f"{path} is {size:,} bytes; a .json data file is read whole and may hold at most {DATA_JSON_BYTES:,}",
                               "write the data as JSONL (one item per line)")
            data = json.loads(path.read_text(encoding="utf-8"))
            return data if isinstance(data, list) else [data]
        if suffix == ".csv":
            old_limit = csv.field_size_limit(DATA_LINE_BYTES)  # the documented row bound, not csv's 128 KiB
            try:
                with open(path, encoding="utf-8-sig", newline="") as f:
                    reader = csv.DictReader(bounded_text_lines(f, path))
                    try:
                        return list(reader)
                    except csv.Error as e:
                        raise LafError(f"{path}, line {reader.line_num}: not readable as CSV: {str(e)[:200]}",
                                       "fix that line (quoting, field size), or write the data as JSONL") from None
            finally:
                csv.field_size_limit(old_limit)
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            try:
                return pq.read_table(path).to_pylist()
            except Exception as e:  # pyarrow's ArrowInvalid, OSError, ... on a corrupt or foreign file
                raise LafError(f"{path} is not a readable Parquet file ({type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''})",
                               "re-export the data, or check the file's extension") from None
    except UnicodeDecodeError as e:
        raise LafError(f"{path} is not UTF-8 text", "re-save it as UTF-8") from e
    except json.JSONDecodeError as e:
        raise LafError(f"{path} is not valid JSON (line {e.lineno}): {e.msg}", "fix the file") from e
    except RecursionError:
        raise LafError(f"{path}: JSON nested too deeply to be suite data", "write flat items: {question, choices, gold} and the like") from None
    raise LafError(f"cannot read {path}: unknown extension", "use .jsonl, .json, .csv or .parquet")


def load_hub(spec: dict) -> list[dict]:
    if offline():
        raise LafError(
            f"this suite needs hub dataset '{spec['path']}' but the hub is offline",
            "point --data-dir (or LAF_DATA_DIR) at a local copy (see the suite's data.local), or run online",
        )
    import datasets

    try:
        ds = datasets.load_dataset(spec["path"], spec.get("name"), split=spec.get("split") or "test")
    except Exception as e:
        raise LafError(
            f"could not load hub dataset '{spec['path']}' ({spec.get('name')}, split {spec.get('split')}): {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}",
            "check the network, or use a local copy with --data-dir",
        ) from e
    return [dict(r) for r in ds]


def normalize(records: list[dict], fmt: str, ctx: SourceContext) -> list[dict]:
    """The rows in the suite's schema; a row a format cannot read is one error naming the file, the row and the field."""
    if fmt in ("auto", "plain", None):
        return records
    fn = NORMALIZERS.get(fmt)
    if fn is None:
        raise LafError(f"unknown data format '{fmt}'", f"use one of: plain, {', '.join(sorted(NORMALIZERS))}")
    if getattr(fn, "whole", False):
        return fn(records, ctx)
    out = []
    for i, r in enumerate(records):
        try:
            out.append(fn(r, ctx))
        except RowError as e:
            field = f"field '{e.field}' " if e.field else ""
            raise LafError(f"{ctx.where}, row {i + 1}: {field}{e.problem} (data format {fmt})",
                           f"is this really {fmt} data? give every row the fields that format needs, or set the suite's data format") from None
    return out


# ---------------------------------------------------------------- normalizers of public benchmarks
# Each maps one row (``normalize`` names the file and row of a RowError); ``whole=True`` ones take all rows.


def _letters(n: int) -> list[str]:
    return [chr(ord("A") + i) for i in range(n)]


@normalizer("arc_llmfoundry")
def _arc_llmfoundry(r, ctx):
    """{query: 'Question: ...', choices, gold} -> the hub's {question, choices: {text, label}, answerKey}."""
    q = _get(r, "query")
    q = q[len("Question: "):] if q.startswith("Question: ") else q
    choices = _texts(r, "choices")
    if len(choices) > 26:
        raise RowError("choices", f"has {len(choices)} choices; at most 26 (A-Z) are labelled")
    labels = _letters(len(choices))
    return {"question": q, "choices": {"text": choices, "label": labels}, "answerKey": labels[_in_range("gold", _whole(r, "gold"), len(choices))]}


@normalizer("boolq_llmfoundry")
def _boolq_llmfoundry(r, ctx):
    """{query: 'Passage: P\\nQuestion: Q?', choices: [no, yes], gold} -> {passage, question, label}.

    This copy's passages lack the hub's 'Title -- ' prefix, so prompts differ slightly from lm-eval's boolq."""
    passage, _, question = _get(r, "query").partition("\nQuestion: ")
    passage = passage[len("Passage: "):] if passage.startswith("Passage: ") else passage
    return {"passage": passage, "question": question.rstrip("?"), "label": _in_range("gold", _whole(r, "gold"), 2)}


@normalizer("boolq_hub")
def _boolq_hub(r, ctx):
    label = r.get("label") if isinstance(r, dict) else None
    label = int(label) if isinstance(label, bool) else _in_range("label", _whole(r, "label"), 2)
    return {"passage": _get(r, "passage"), "question": _get(r, "question"), "label": label}


def _piqa_raw(rows, ctx):
    """Official raw PIQA: valid.jsonl plus valid-labels.lst (one label per line, same folder)."""
    labels_file = ctx.file.with_name(ctx.extra.get("labels") or ctx.file.stem + "-labels.lst") if ctx.file else None
    if not labels_file or not labels_file.is_file():
        raise LafError(f"PIQA labels file not found next to {ctx.file}", "put valid-labels.lst beside valid.jsonl (or set data.local.labels)")
    words = labels_file.read_text(encoding="utf-8", errors="replace").split()
    bad = next((j for j, x in enumerate(words) if x not in ("0", "1")), None)
    if bad is not None:
        raise LafError(f"{labels_file}, label {bad + 1}: {words[bad][:40]!r} is not 0 or 1", "use the labels file that came with the questions")
    labels = [int(x) for x in words]
    if len(labels) != len(rows):
        raise LafError(f"{labels_file} has {len(labels)} labels for {len(rows)} questions", "use the matching labels file")
    out = []
    for i, (r, lab) in enumerate(zip(rows, labels)):
        try:
            out.append({"goal": _get(r, "goal"), "sol1": _get(r, "sol1"), "sol2": _get(r, "sol2"), "label": lab})
        except RowError as e:
            raise LafError(f"{ctx.where}, row {i + 1}: field '{e.field}' {e.problem} (data format piqa_raw)" if e.field else
                           f"{ctx.where}, row {i + 1}: {e.problem} (data format piqa_raw)", "give every row goal, sol1 and sol2") from None
    return out


_piqa_raw.whole = True  # type: ignore[attr-defined]
normalizer("piqa_raw")(_piqa_raw)


@normalizer("winogrande_hub")
def _winogrande_hub(r, ctx):
    """The hub's {sentence, option1, option2, answer} -> partial scoring: {contexts, continuation, gold}."""
    sentence = _get(r, "sentence")
    idx = sentence.find("_")
    if idx < 0:
        raise RowError("sentence", "has no '_' blank to fill")
    answer = str(_get(r, "answer", (str, int), "1 or 2"))
    if answer not in ("1", "2"):
        raise RowError("answer", f"must be 1 or 2, got {answer[:40]!r}")
    return {
        "contexts": [sentence[:idx] + _get(r, "option1"), sentence[:idx] + _get(r, "option2")],
        "continuation": sentence[idx + 1:].strip(),
        "gold": {"1": 0, "2": 1}[answer],
    }


@normalizer("winogrande_llmfoundry")
def _winogrande_llmfoundry(r, ctx):
    contexts = _texts(r, "context_options")
    return {"contexts": contexts, "continuation": _get(r, "continuation").strip(), "gold": _in_range("gold", _whole(r, "gold"), len(contexts))}


@normalizer("hellaswag_hub")
def _hellaswag_hub(r, ctx):
    """lm-eval's hellaswag process_docs: {query, choices, gold}."""
    import re

    def pre(text):
        text = text.strip().replace(" [title]", ". ")
        text = re.sub("\\[.*?\\]", "", text)
        return text.replace("  ", " ")

    endings = _texts(r, "endings")
    query = pre(_get(r, "activity_label") + ": " + _get(r, "ctx_a") + " " + _get(r, "ctx_b").capitalize())
    return {"query": query, "choices": [pre(e) for e in endings], "gold": _in_range("label", _whole(r, "label"), len(endings))}


@normalizer("mmlu_hub")
def _mmlu_hub(r, ctx):
    choices = _texts(r, "choices")
    subject = r.get("subject", "") if isinstance(r, dict) else ""
    return {"question": _get(r, "question"), "choices": choices, "answer": _in_range("answer", _whole(r, "answer"), len(choices)),
            "subject": subject if isinstance(subject, str) else str(subject)}


def _targets(r, key: str) -> dict:
    """TruthfulQA's answer targets: {choices: [...], labels: [0/1...]} or the published {answer: 0/1, ...}."""
    t = _get(r, key, dict, "an object of answers")
    if "choices" in t or "labels" in t:
        choices, labels = t.get("choices"), t.get("labels")
        if not isinstance(choices, (list, tuple)) or not all(isinstance(c, str) for c in choices):
            raise RowError(f"{key}.choices", "must be a list of strings")
        if not isinstance(labels, (list, tuple)) or len(labels) != len(choices):
            raise RowError(f"{key}.labels", "must be a list of 0/1, one per choice")
        pairs = list(zip(choices, labels))
    else:
        pairs = list(t.items())
    if not pairs:
        raise RowError(key, "has no answers")
    out_c, out_l = [], []
    for c, v in pairs:
        if isinstance(v, bool) or v not in (0, 1):
            raise RowError(key, f"the label of {str(c)[:40]!r} must be 0 or 1, got {str(v)[:40]!r}")
        out_c.append(c)
        out_l.append(int(v))
    return {"choices": out_c, "labels": out_l}


@normalizer("truthfulqa_hub")
def _truthfulqa_hub(r, ctx):
    return {"question": _get(r, "question"), "mc1_targets": _targets(r, "mc1_targets"), "mc2_targets": _targets(r, "mc2_targets")}


@normalizer("crows_csv")
def _crows_csv(r, ctx):
    """CrowS-Pairs' published CSV: the four fields the probe reads."""
    if not isinstance(r, dict):
        raise RowError(None, f"is a JSON {type(r).__name__}, not an object")
    return {k: r.get(k) for k in ("sent_more", "sent_less", "stereo_antistereo", "bias_type")}


@normalizer("truthfulqa_mc_json")
def _truthfulqa_mc_json(r, ctx):
    """TruthfulQA's mc_task.json: [{question, mc1_targets: {answer: 0/1}, mc2_targets: {...}}] -> the hub's schema."""
    return {"question": _get(r, "question"), "mc1_targets": _targets(r, "mc1_targets"), "mc2_targets": _targets(r, "mc2_targets")}
