"""Issue 18, family "data files": hostile training data is one clear error or a counted problem, with memory
bounded whatever one line or field holds, and `laf data` never writes over its input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from harness.data import read_examples
from harness.errors import LafError
from tests.conftest import assert_clean_error, run_cli

ROOT = Path(__file__).resolve().parents[1]
ROWS = [{"instruction": f"What is item {i}?", "output": f"Item {i} is Z{i}."} for i in range(6)]

# VmHWM is the peak of this process image (ru_maxrss would carry over the forking test runner's peak)
MEASURE = """
import sys
from harness.cli import main
rc = main(sys.argv[1:])
hwm = [ln.split()[1] for ln in open("/proc/self/status") if ln.startswith("VmHWM:")][0]
print("MAXRSS_KB", hwm, file=sys.stderr)
sys.exit(rc)
"""


def _laf_measured(*argv: str, cwd: Path) -> tuple[int, str, int]:
    """Run laf in a fresh interpreter; return (exit code, stderr, peak RSS in MB)."""
    p = subprocess.run([sys.executable, "-c", MEASURE, *argv], capture_output=True, text=True, timeout=300, cwd=cwd,
                       env={**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"})
    rss = [int(ln.split()[1]) for ln in p.stderr.splitlines() if ln.startswith("MAXRSS_KB")]
    return p.returncode, p.stderr, (rss[0] // 1024 if rss else -1)


def _jsonl(path: Path, rows=ROWS, prefix: bytes = b"") -> Path:
    path.write_bytes(prefix + "".join(json.dumps(r) + "\n" for r in rows).encode())
    return path


def _check(tmp_path: Path, data: Path, *extra: str):
    return run_cli("data", "check", str(data), "--model", "none", "--out", str(tmp_path / "out"), "--json", *extra)


# ---------------------------------------------------------------- huge lines and fields: bounded memory


def test_a_50_mb_line_is_a_counted_problem_with_bounded_memory(tmp_path):
    small = _jsonl(tmp_path / "small.jsonl")
    big = tmp_path / "big.jsonl"
    with open(big, "wb") as f:
        f.write(json.dumps(ROWS[0]).encode() + b"\n")
        f.write(b'{"instruction": "' + b"x" * (50 << 20) + b'", "output": "y"}\n')
        for r in ROWS[1:]:
            f.write(json.dumps(r).encode() + b"\n")
    code0, _, base_mb = _laf_measured("data", "check", str(small), "--model", "none", "--out", str(tmp_path / "o0"), cwd=tmp_path)
    code, err, big_mb = _laf_measured("data", "check", str(big), "--model", "none", "--out", str(tmp_path / "o1"), cwd=tmp_path)
    assert code0 == 0 and code == 0, err
    m = json.loads((tmp_path / "o1" / "curation.json").read_text())
    assert m["counts"]["malformed"] == 1 and m["counts"]["kept"] == len(ROWS)
    assert "longer than" in m["examples"]["malformed"][0]["detail"] and m["examples"]["malformed"][0]["line"] == 2
    assert big_mb - base_mb < 30, (base_mb, big_mb)  # reading the line whole would cost 50 MB (100 as text)
    code, err, _ = _laf_measured("data", "check", str(big), "--model", "none", "--strict", "--out", str(tmp_path / "o2"), cwd=tmp_path)
    assert code == 3 and "line 2" in err and "longer than" in err and "Traceback" not in err


def test_a_csv_with_a_200_mb_field_is_refused_with_bounded_memory(tmp_path):
    data = tmp_path / "d.csv"
    with open(data, "wb") as f:
        f.write(b"instruction,output\nq,a\n\"")
        block = b"y" * (1 << 20)
        for _ in range(200):
            f.write(block)
        f.write(b"\",b\n")
    code, err, mb = _laf_measured("data", "check", str(data), "--model", "none", "--out", str(tmp_path / "o"), cwd=tmp_path)
    assert code == 3 and "Traceback" not in err and ("longer than" in err or "field" in err), err
    assert mb < 400, mb  # the file is never read whole (200 MB of bytes, 200+ MB more as text)


def test_a_quoted_csv_field_spanning_many_lines_hits_the_field_limit(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text('instruction,output\nq,"' + ("z" * 1000 + "\n") * 20_000 + '"\n')
    assert_clean_error(_check(tmp_path, data), "not readable as CSV", "field")


def test_a_huge_field_under_the_line_cap_is_cut_before_tokenising_and_keeps_the_same_tokens(tiny_model_dir):
    from harness.data.formats import Example
    from harness.data.tokenize import MAX_CHARS_PER_TOKEN, tokenize_example
    from harness.models import load_tokenizer, resolve_model

    tok = load_tokenizer(resolve_model(str(tiny_model_dir)))
    seen: list[int] = []

    class Recording:
        def __init__(self, inner):
            self.inner = inner

        def __getattr__(self, name):
            return getattr(self.inner, name)

        def __call__(self, text, **kw):
            seen.append(len(text))
            return self.inner(text, **kw)

    ex = Example((("user", "short question"), ("assistant", "word " * 1_000_000)), 1)  # a 5 MB response
    t, reason, truncated = tokenize_example(ex, Recording(tok), 64, use_chat_template=False)
    assert truncated and t is not None and len(t.input_ids) == 64
    assert max(seen) <= 64 * MAX_CHARS_PER_TOKEN  # never the whole 5 MB
    ref, _, _ = tokenize_example(Example((("user", "short question"), ("assistant", "word " * 2000)), 1), tok, 64, use_chat_template=False)
    assert t.input_ids == ref.input_ids and t.labels == ref.labels  # the cut changes nothing the model sees


# ---------------------------------------------------------------- encodings and structure


def test_utf8_bom_keeps_the_first_row_in_every_text_format(tmp_path):
    bom = b"\xef\xbb\xbf"
    _jsonl(tmp_path / "d.jsonl", prefix=bom)
    (tmp_path / "d.json").write_bytes(bom + json.dumps(ROWS).encode())
    (tmp_path / "d.csv").write_bytes(bom + b"instruction,output\n" + b"".join(f"{r['instruction']},{r['output']}\n".encode() for r in ROWS))
    for name in ("d.jsonl", "d.json", "d.csv"):
        res = read_examples(tmp_path / name, strict=True)
        assert len(res.examples) == len(ROWS) and res.examples[0].prompt_text == ROWS[0]["instruction"], name


def test_train_accepts_a_bom_file(tiny_model_dir, tmp_path):
    import yaml

    _jsonl(tmp_path / "d.jsonl", rows=ROWS * 3, prefix=b"\xef\xbb\xbf")
    (tmp_path / "c.yaml").write_text(yaml.safe_dump({"name": "bom", "model": str(tiny_model_dir), "precision": "fp32", "data": {"path": "d.jsonl"}, "max_length": 64,
                                                     "max_steps": 1, "registry": str(tmp_path / "reg"), "output_dir": str(tmp_path / "run")}))
    code, out, err = run_cli("train", str(tmp_path / "c.yaml"), "--quiet", "--json")
    assert code == 0, err
    assert json.loads(out)["data"]["examples"] == len(ROWS) * 3


def test_json_nested_100k_levels_is_one_clear_error(tmp_path):
    deep = "[" * 100_000 + "]" * 100_000
    (tmp_path / "deep.json").write_text(deep)
    assert_clean_error(_check(tmp_path, tmp_path / "deep.json"), "nested too deeply")
    (tmp_path / "deep.jsonl").write_text(json.dumps(ROWS[0]) + "\n" + '{"instruction": ' + deep + "}\n")
    code, out, err = _check(tmp_path, tmp_path / "deep.jsonl")
    assert code == 0 and json.loads(out)["counts"]["malformed"] == 1, err
    assert_clean_error(_check(tmp_path, tmp_path / "deep.jsonl", "--strict"), "line 2", "nested too deeply")


def test_invalid_utf8_in_each_format(tmp_path):
    (tmp_path / "d.jsonl").write_bytes(json.dumps(ROWS[0]).encode() + b"\n" + b'{"instruction": "\xff\xfe", "output": "x"}\n')
    code, out, err = _check(tmp_path, tmp_path / "d.jsonl")
    assert code == 0 and json.loads(out)["counts"]["encoding"] == 1
    (tmp_path / "d.csv").write_bytes(b"instruction,output\n" + b"ok,fine\n" * 3 + b"bad \xc3\x28,x\n")
    assert_clean_error(_check(tmp_path, tmp_path / "d.csv"), "not valid UTF-8")
    (tmp_path / "d.json").write_bytes(b'[{"instruction": "\xe2\x82", "output": "x"}]')
    assert_clean_error(_check(tmp_path, tmp_path / "d.json"), "not valid UTF-8")


def test_a_json_file_too_big_to_parse_whole_is_refused(tmp_path, monkeypatch):
    import harness.data.formats as formats

    monkeypatch.setattr(formats, "MAX_JSON_BYTES", 1000)
    (tmp_path / "d.json").write_text(json.dumps(ROWS * 20))
    with pytest.raises(LafError, match="JSONL"):
        read_examples(tmp_path / "d.json")


# ---------------------------------------------------------------- things that are not files


@pytest.mark.parametrize("kind", ["fifo", "dev-zero", "symlink-to-dev-zero"])
def test_a_pipe_or_device_as_input_is_refused_at_once(tmp_path, kind):
    if kind == "fifo":
        target = tmp_path / "pipe.jsonl"
        os.mkfifo(target)
    elif kind == "dev-zero":
        target = Path("/dev/zero")
    else:
        target = tmp_path / "zero.jsonl"
        target.symlink_to("/dev/zero")
    p = subprocess.run([sys.executable, "-m", "harness", "data", "check", str(target), "--format", "jsonl", "--model", "none", "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert p.returncode == 3 and "not a regular file" in p.stderr and "Traceback" not in p.stderr, p.stderr


# ---------------------------------------------------------------- outputs never replace the input


def test_out_at_the_inputs_own_folder_never_overwrites_it(tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    data = _jsonl(folder / "curation.json", rows=ROWS)  # a data file that happens to carry the manifest's name
    data_fmt = ["--format", "jsonl"]
    before = data.read_bytes()
    assert_clean_error(run_cli("data", "check", str(data), "--model", "none", "--out", str(folder), *data_fmt), "would overwrite")
    assert_clean_error(run_cli("data", "clean", str(data), "--model", "none", "--out", str(tmp_path / "o"), "-o", str(data), *data_fmt), "would overwrite")
    os.link(data, tmp_path / "hardlink.jsonl")
    assert_clean_error(run_cli("data", "clean", str(data), "--model", "none", "--out", str(tmp_path / "o"), "-o", str(tmp_path / "hardlink.jsonl"), *data_fmt), "would overwrite")
    assert data.read_bytes() == before
    assert not (tmp_path / "o").exists()


def test_out_inside_a_datasets_folder_input_is_refused(tmp_path):
    import datasets

    ds_dir = tmp_path / "ds"
    datasets.Dataset.from_list(ROWS).save_to_disk(str(ds_dir))
    before = sorted(p.name for p in ds_dir.iterdir())
    assert_clean_error(run_cli("data", "check", str(ds_dir), "--model", "none", "--out", str(ds_dir)), "inside the input")
    assert_clean_error(run_cli("data", "clean", str(ds_dir), "--model", "none", "--out", str(ds_dir / "sub")), "inside the input")
    assert sorted(p.name for p in ds_dir.iterdir()) == before
