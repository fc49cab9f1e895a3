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


def normalizer(name: str):
    def deco(fn):
        NORMALIZERS[name] = fn
        return fn

    return deco


def data_dir(override: str | Path | None = None) -> Path | None:
    value = override or os.environ.get("LAF_DATA_DIR")
    return Path(value).expanduser() if value else None


# ---------------------------------------------------------------- raw readers


def read_records(path: Path) -> list[dict]:
    if not path.exists():
        raise LafError(f"data file not found: {path}", "check the suite's data path (relative to the suite file)")
    if path.is_dir():  # a folder of data files (e.g. BBQ's one JSONL per category), read in name order
        files = sorted(p for p in path.iterdir() if p.suffix.lower() in (".jsonl", ".json", ".csv", ".parquet"))
        if not files:
            raise LafError(f"{path} holds no .jsonl/.json/.csv/.parquet files", "point at the data file or a folder of them")
        return [r for f in files for r in read_records(f)]
    if path.stat().st_size == 0:
        raise LafError(f"data file {path} is empty", "an empty probe or suite file is an error, not a score of zero: add items")
    suffix = path.suffix.lower()
    try:
        if suffix in (".jsonl", ".ndjson"):
            return read_jsonl(path, "fix that line")
        if suffix == ".json":
            data = json.loads(path.read_text(encoding="utf-8"))
            return data if isinstance(data, list) else [data]
        if suffix == ".csv":
            with open(path, encoding="utf-8-sig", newline="") as f:
                return list(csv.DictReader(f))
        if suffix in (".parquet", ".pq"):
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
    except UnicodeDecodeError as e:
        raise LafError(f"{path} is not UTF-8 text", "re-save it as UTF-8") from e
    except json.JSONDecodeError as e:
        raise LafError(f"{path} is not valid JSON (line {e.lineno}): {e.msg}", "fix the file") from e
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
    if fmt in ("auto", "plain", None):
        return records
    fn = NORMALIZERS.get(fmt)
    if fn is None:
        raise LafError(f"unknown data format '{fmt}'", f"use one of: plain, {', '.join(sorted(NORMALIZERS))}")
    return fn(records, ctx)


# ---------------------------------------------------------------- normalizers of public benchmarks


def _letters(n: int) -> list[str]:
    return [chr(ord("A") + i) for i in range(n)]


@normalizer("arc_llmfoundry")
def _arc_llmfoundry(rows, ctx):
    """{query: 'Question: ...', choices, gold} -> the hub's {question, choices: {text, label}, answerKey}."""
    out = []
    for r in rows:
        q = r["query"]
        q = q[len("Question: "):] if q.startswith("Question: ") else q
        labels = _letters(len(r["choices"]))
        out.append({"question": q, "choices": {"text": list(r["choices"]), "label": labels}, "answerKey": labels[int(r["gold"])]})
    return out


@normalizer("boolq_llmfoundry")
def _boolq_llmfoundry(rows, ctx):
    """{query: 'Passage: P\\nQuestion: Q?', choices: [no, yes], gold} -> {passage, question, label}.

    This copy's passages lack the hub's 'Title -- ' prefix, so prompts differ slightly from lm-eval's boolq."""
    out = []
    for r in rows:
        q = r["query"]
        passage, _, question = q.partition("\nQuestion: ")
        passage = passage[len("Passage: "):] if passage.startswith("Passage: ") else passage
        out.append({"passage": passage, "question": question.rstrip("?"), "label": int(r["gold"])})
    return out


@normalizer("boolq_hub")
def _boolq_hub(rows, ctx):
    return [{"passage": r["passage"], "question": r["question"], "label": int(r["label"])} for r in rows]


@normalizer("piqa_raw")
def _piqa_raw(rows, ctx):
    """Official raw PIQA: valid.jsonl plus valid-labels.lst (one label per line, same folder)."""
    labels_file = ctx.file.with_name(ctx.extra.get("labels", ctx.file.stem + "-labels.lst")) if ctx.file else None
    if not labels_file or not labels_file.exists():
        raise LafError(f"PIQA labels file not found next to {ctx.file}", "put valid-labels.lst beside valid.jsonl (or set data.local.labels)")
    labels = [int(x) for x in labels_file.read_text().split()]
    if len(labels) != len(rows):
        raise LafError(f"{labels_file} has {len(labels)} labels for {len(rows)} questions", "use the matching labels file")
    return [{"goal": r["goal"], "sol1": r["sol1"], "sol2": r["sol2"], "label": lab} for r, lab in zip(rows, labels)]


@normalizer("winogrande_hub")
def _winogrande_hub(rows, ctx):
    """The hub's {sentence, option1, option2, answer} -> partial scoring: {contexts, continuation, gold}."""
    out = []
    for r in rows:
        idx = r["sentence"].index("_")
        out.append({
            "contexts": [r["sentence"][:idx] + r["option1"], r["sentence"][:idx] + r["option2"]],
            "continuation": r["sentence"][idx + 1:].strip(),
            "gold": {"1": 0, "2": 1}[str(r["answer"])],
        })
    return out


@normalizer("winogrande_llmfoundry")
def _winogrande_llmfoundry(rows, ctx):
    return [{"contexts": list(r["context_options"]), "continuation": r["continuation"].strip(), "gold": int(r["gold"])} for r in rows]


@normalizer("hellaswag_hub")
def _hellaswag_hub(rows, ctx):
    """lm-eval's hellaswag process_docs: {query, choices, gold}."""
    import re

    def pre(text):
        text = text.strip().replace(" [title]", ". ")
        text = re.sub("\\[.*?\\]", "", text)
        return text.replace("  ", " ")

    return [
        {"query": pre(r["activity_label"] + ": " + r["ctx_a"] + " " + r["ctx_b"].capitalize()), "choices": [pre(e) for e in r["endings"]], "gold": int(r["label"])}
        for r in rows
    ]


@normalizer("mmlu_hub")
def _mmlu_hub(rows, ctx):
    return [{"question": r["question"], "choices": list(r["choices"]), "answer": int(r["answer"]), "subject": r.get("subject", "")} for r in rows]


@normalizer("truthfulqa_hub")
def _truthfulqa_hub(rows, ctx):
    return [{"question": r["question"], "mc1_targets": dict(r["mc1_targets"]), "mc2_targets": dict(r["mc2_targets"])} for r in rows]


@normalizer("crows_csv")
def _crows_csv(rows, ctx):
    """CrowS-Pairs' published CSV: the four fields the probe reads."""
    return [{k: r.get(k) for k in ("sent_more", "sent_less", "stereo_antistereo", "bias_type")} for r in rows]


@normalizer("truthfulqa_mc_json")
def _truthfulqa_mc_json(rows, ctx):
    """TruthfulQA's mc_task.json: [{question, mc1_targets: {answer: 0/1}, mc2_targets: {...}}] -> the hub's schema."""
    out = []
    for r in rows:
        def conv(t):
            if isinstance(t, dict) and "choices" in t:
                return {"choices": list(t["choices"]), "labels": [int(x) for x in t["labels"]]}
            return {"choices": list(t.keys()), "labels": [int(v) for v in t.values()]}

        out.append({"question": r["question"], "mc1_targets": conv(r["mc1_targets"]), "mc2_targets": conv(r["mc2_targets"])})
    return out
