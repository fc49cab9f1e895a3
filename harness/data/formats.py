"""Instruction data in: JSONL, JSON, CSV, Parquet or a ``datasets`` folder, in three schemas.

Schemas (detected from the keys, or named):
  ``alpaca``             {instruction, input?, output}
  ``prompt_completion``  {prompt, completion}
  ``chat``               {messages: [{role, content}, ...]}  (loss on assistant turns)

Every record becomes an :class:`Example` in one canonical shape, a list of chat
messages, so formatting, curation and training see a single schema. Bad rows
become :class:`Problem` entries that carry the line (or record) number; in
strict mode the first one is an error.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import LafError
from ..io import DATA_JSON_BYTES, DATA_LINE_BYTES, BadLine, DuplicateKey, bounded_text_lines, scan_jsonl, sha256_json, unique_keys

SCHEMAS: tuple[str, ...] = ("alpaca", "prompt_completion", "chat")
FILE_FORMATS = ("jsonl", "json", "csv", "parquet", "datasets")
ROLES = ("system", "user", "assistant")
MAX_LINE_BYTES = DATA_LINE_BYTES  # one JSONL line or CSV row (harness.io: the suites' data readers share the bound)
MAX_JSON_BYTES = DATA_JSON_BYTES  # a .json file is parsed whole; bigger data belongs in JSONL (streamed line by line)
SCHEMA_HELP = (
    "expected one of: {instruction, input?, output} (alpaca), {prompt, completion} (prompt_completion), "
    "{messages: [{role, content}]} (chat)"
)


@dataclass(frozen=True)
class Example:
    """One training example in canonical form: chat messages, the last one from the assistant."""

    messages: tuple[tuple[str, str], ...]  # (role, content)
    line: int  # 1-based line (JSONL/CSV) or record number (JSON/Parquet/datasets)

    @property
    def prompt_text(self) -> str:
        return "\n".join(c for r, c in self.messages if r != "assistant")

    @property
    def response_text(self) -> str:
        return "\n".join(c for r, c in self.messages if r == "assistant")

    @property
    def text(self) -> str:
        return "\n".join(c for _, c in self.messages)

    def to_canonical(self) -> dict:
        return {"messages": [{"role": r, "content": c} for r, c in self.messages]}

    @property
    def id(self) -> str:
        return sha256_json(self.to_canonical())[:16]


@dataclass
class Problem:
    line: int
    rule: str
    message: str
    snippet: str = ""


@dataclass
class ReadResult:
    path: Path
    file_format: str
    schema: str
    examples: list[Example] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    raw_count: int = 0


def detect_file_format(path: Path) -> str:
    if path.is_dir():
        if (path / "dataset_info.json").exists() or (path / "state.json").exists() or (path / "dataset_dict.json").exists():
            return "datasets"
        raise LafError(f"{path} is a folder but not a saved `datasets` dataset", "pass a data file or a folder written by Dataset.save_to_disk")
    suffix = path.suffix.lower()
    return {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}.get(suffix, "")


def _snippet(obj) -> str:
    s = obj if isinstance(obj, str) else json.dumps(obj, ensure_ascii=False, default=str)
    return s[:160] + ("..." if len(s) > 160 else "")


def _iter_raw(path: Path, file_format: str):
    """Yield (line, record-or-Problem)."""
    if file_format == "jsonl":
        for item in scan_jsonl(path, max_line=MAX_LINE_BYTES, strict_keys=True):
            if isinstance(item, BadLine):
                yield item.line, Problem(item.line, "encoding" if item.kind == "encoding" else "malformed", item.message, _snippet(item.text))
            else:
                yield item
    elif file_format == "json":
        size = path.stat().st_size
        if size > MAX_JSON_BYTES:
            raise LafError(f"{path} is {size:,} bytes; a .json data file is read whole and may hold at most {MAX_JSON_BYTES:,}",
                           "write the data as JSONL (one record per line), which is streamed")
        try:
            data = json.loads(path.read_bytes().decode("utf-8-sig"), object_pairs_hook=unique_keys)
        except DuplicateKey as e:
            raise LafError(f"{path}: {e}", "keep one value per key in every record") from None
        except UnicodeDecodeError as e:
            raise LafError(f"{path} is not valid UTF-8 ({e.reason} at byte {e.start})", "re-save the file as UTF-8") from e
        except json.JSONDecodeError as e:
            raise LafError(
                f"{path} is not valid JSON (line {e.lineno}, column {e.colno}): {e.msg}",
                "fix the file; for one object per line name it .jsonl",
            ) from e
        except RecursionError:
            raise LafError(f"{path}: JSON nested too deeply to be training data", "write flat records: {instruction, output} and the like") from None
        if isinstance(data, dict):
            for key in ("data", "examples", "rows", "train"):
                if isinstance(data.get(key), list):
                    data = data[key]
                    break
        if not isinstance(data, list):
            raise LafError(f"{path}: a JSON data file must hold a list of records", "wrap the records in [ ... ] or use JSONL")
        yield from enumerate(data, 1)
    elif file_format == "csv":
        yield from _iter_csv(path)
    elif file_format == "parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.read_table(path)
        except Exception as e:
            raise LafError(f"{path} is not a readable Parquet file: {e}", "check the file or its extension") from e
        yield from enumerate(table.to_pylist(), 1)
    elif file_format == "datasets":
        import datasets

        try:
            ds = datasets.load_from_disk(str(path))
        except Exception as e:
            raise LafError(f"{path} could not be read as a saved dataset: {e}", "save it with Dataset.save_to_disk") from e
        if isinstance(ds, datasets.DatasetDict):
            if "train" not in ds:
                raise LafError(f"{path} is a DatasetDict without a 'train' split ({', '.join(ds)})", "save the split you want to train on")
            ds = ds["train"]
        yield from enumerate(ds, 1)
    else:  # pragma: no cover - guarded by callers
        raise ValueError(file_format)


def _iter_csv(path: Path):
    """Stream a CSV file (UTF-8, a byte order mark dropped) with every field and line bounded."""
    old_limit = csv.field_size_limit()
    csv.field_size_limit(MAX_LINE_BYTES)
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            reader = csv.DictReader(bounded_text_lines(f, path))
            try:
                for row in reader:
                    if None in row:  # more fields than the header
                        yield reader.line_num, Problem(reader.line_num, "malformed", "more fields than the header has columns", _snippet(row))
                        continue
                    yield reader.line_num, {k: v for k, v in row.items() if v is not None and v != ""}
            except UnicodeDecodeError as e:
                raise LafError(f"{path} is not valid UTF-8 ({e.reason}, after line {reader.line_num})", "re-save the file as UTF-8") from None
            except csv.Error as e:
                raise LafError(f"{path}, line {reader.line_num}: not readable as CSV: {str(e)[:200]}", "fix that line (quoting, field size), or write the data as JSONL") from None
    finally:
        csv.field_size_limit(old_limit)


def detect_schema(record: dict) -> str | None:
    keys = set(record)
    if "messages" in keys:
        return "chat"
    if "instruction" in keys or "output" in keys:
        return "alpaca"
    if "prompt" in keys or "completion" in keys:
        return "prompt_completion"
    return None


def _text_field(record: dict, key: str, required: bool) -> str | None:
    v = record.get(key)
    if v is None:
        if required:
            raise ValueError(f"missing field '{key}'")
        return None
    if not isinstance(v, str):
        raise ValueError(f"field '{key}' must be a string, got {type(v).__name__}")
    return v


def to_example(record, schema: str, line: int) -> Example:
    """Canonicalise one record; raises ValueError with a readable reason."""
    if not isinstance(record, dict):
        raise ValueError(f"a record must be an object, got {type(record).__name__}")
    if schema == "alpaca":
        instruction = _text_field(record, "instruction", True)
        inp = _text_field(record, "input", False)
        output = _text_field(record, "output", True)
        user = instruction if not inp or not inp.strip() else f"{instruction}\n\n{inp}"
        msgs = [("user", user), ("assistant", output)]
        if isinstance(record.get("system"), str) and record["system"].strip():
            msgs.insert(0, ("system", record["system"]))
        return Example(tuple(msgs), line)
    if schema == "prompt_completion":
        return Example((("user", _text_field(record, "prompt", True)), ("assistant", _text_field(record, "completion", True))), line)
    if schema == "chat":
        messages = record.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ValueError("field 'messages' must be a non-empty list of {role, content}")
        out = []
        for j, m in enumerate(messages):
            if not isinstance(m, dict) or "role" not in m or "content" not in m:
                raise ValueError(f"messages[{j}] must have 'role' and 'content'")
            if m["role"] not in ROLES:
                raise ValueError(f"messages[{j}].role is '{m['role']}'; expected one of {', '.join(ROLES)}")
            if not isinstance(m["content"], str):
                raise ValueError(f"messages[{j}].content must be a string")
            out.append((m["role"], m["content"]))
        if not any(r == "assistant" for r, _ in out):
            raise ValueError("no assistant message: nothing to learn from")
        return Example(tuple(out), line)
    raise ValueError(f"unknown schema '{schema}'")


def _looks_binary(path: Path) -> bool:
    with open(path, "rb") as f:
        head = f.read(8192)
    return b"\x00" in head


def check_readable_data_path(path: Path) -> None:
    """A data path must exist and be a regular file or folder: a FIFO would block forever, /dev/zero never ends."""
    if not path.exists():
        raise LafError(f"data file not found: {path}", "check the path (relative paths resolve from the current folder or the config file)")
    if not path.is_dir() and not path.is_file():
        raise LafError(f"{path} is not a regular file (a pipe, device or socket)", "save the data to a file and pass its path")


def read_examples(path: str | Path, *, schema: str = "auto", file_format: str = "auto", strict: bool = True) -> ReadResult:
    """Read and canonicalise a data file. ``strict``: the first bad row is an error (with its line)."""
    path = Path(path)
    check_readable_data_path(path)
    fmt = detect_file_format(path) if file_format == "auto" else file_format
    if fmt not in FILE_FORMATS:
        raise LafError(f"cannot tell the format of {path}", f"use one of .jsonl .json .csv .parquet or a datasets folder, or set format: ({', '.join(FILE_FORMATS)})")
    if path.is_file():
        if path.stat().st_size == 0:
            raise LafError(f"data file {path} is empty", "add examples to it")
        if fmt != "parquet" and _looks_binary(path):
            raise LafError(f"{path} looks like a binary file, not {fmt} text", f"check that it really is {fmt}; convert it or fix its extension")
    if schema != "auto" and schema not in SCHEMAS:
        raise LafError(f"unknown data schema '{schema}'", f"use auto or one of {', '.join(SCHEMAS)}")
    result = ReadResult(path, fmt, schema)
    for line, rec in _iter_raw(path, fmt):
        result.raw_count += 1
        if isinstance(rec, Problem):
            if strict:
                raise LafError(f"{path}, line {rec.line}: {rec.message}: {rec.snippet}", f"fix that line; is the file really {fmt}?")
            result.problems.append(rec)
            continue
        if result.schema == "auto" and isinstance(rec, dict):
            detected = detect_schema(rec)
            if detected is None:
                raise LafError(
                    f"{path}, {'line' if fmt in ('jsonl', 'csv') else 'record'} {line}: cannot tell the schema from keys {sorted(rec)}",
                    SCHEMA_HELP + "; or set the schema in the config",
                )
            result.schema = detected
        try:
            result.examples.append(to_example(rec, result.schema, line))
        except ValueError as e:
            where = "line" if fmt in ("jsonl", "csv") else "record"
            if strict:
                raise LafError(f"{path}, {where} {line}: {e} (schema {result.schema})", SCHEMA_HELP) from None
            result.problems.append(Problem(line, "schema", str(e), _snippet(rec)))
    if not result.examples:
        if result.problems:
            first = result.problems[0]
            raise LafError(f"{path}: no usable examples; first problem at line {first.line}: {first.message}", SCHEMA_HELP)
        raise LafError(f"data file {path} holds no examples", "add examples to it")
    return result
