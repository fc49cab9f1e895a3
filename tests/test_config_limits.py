"""Hostile YAML: every config, suite, policy and --set value goes through one bounded loader.

Each case must end in one clear error (exit 3, no traceback), quickly, in bounded
memory, without running code, and without formatting the whole hostile input
into the message.
"""

from __future__ import annotations

import os
import resource
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import yaml

from harness.config import MAX_CONFIG_BYTES, MAX_DEPTH, MAX_LINES, load_yaml, parse_yaml, short_repr, validate
from harness.errors import ConfigError, LafError
from tests.conftest import REPO, assert_clean_error, run_cli

LETTERS = "abcdefghi"


def alias_bomb(levels: int = 9, width: int = 9, key: str = "name") -> str:
    """The classic 'billion laughs': 9 levels x 9 aliases, about 400 bytes, 9**9 strings once expanded."""
    lines = [f"{LETTERS[0]}: &{LETTERS[0]} [{', '.join(['lol'] * width)}]"]
    for i in range(1, levels):
        ref = ", ".join([f"*{LETTERS[i - 1]}"] * width)
        lines.append(f"{LETTERS[i]}: &{LETTERS[i]} [{ref}]")
    lines.append(f"{key}: *{LETTERS[levels - 1]}")
    return "\n".join(lines) + "\n"


def _write(tmp_path: Path, text: str | bytes, name: str = "cfg.yaml") -> Path:
    p = tmp_path / name
    (p.write_bytes if isinstance(text, bytes) else p.write_text)(text)
    return p


def _fast_clean_error(argv: list[str], *needles: str, limit_s: float = 10.0) -> str:
    t = time.perf_counter()
    code, out, err = run_cli(*argv)
    took = time.perf_counter() - t
    assert_clean_error((code, out, err), *needles)
    assert took < limit_s, f"took {took:.1f} s"
    assert len(err) < 4000, f"the message is {len(err)} characters"
    return err


# ---------------------------------------------------------------- the alias bomb (the example)


def test_alias_bomb_is_small():
    assert len(alias_bomb()) < 500


def test_alias_bomb_in_train_config_exits_3_fast_in_bounded_memory(tmp_path):
    """A real `laf train` process with its address space capped at 2 GB (the bomb took 21 GB before)."""
    cfg = _write(tmp_path, alias_bomb())

    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    env = {**os.environ, "PYTHONPATH": str(REPO)}
    t = time.perf_counter()
    out, err = tmp_path / "out.txt", tmp_path / "err.txt"
    with open(out, "w") as fo, open(err, "w") as fe:
        p = subprocess.Popen([sys.executable, "-m", "harness", "train", str(cfg)], stdout=fo, stderr=fe, preexec_fn=cap, env=env, cwd=tmp_path)
        timer = threading.Timer(120, p.kill)  # a hung child is killed (and the exit code check fails) rather than waited on forever
        timer.start()
        try:
            _, status, usage = os.wait4(p.pid, 0)  # this child's own peak (RUSAGE_CHILDREN would be the largest child this worker ever had)
        finally:
            timer.cancel()
        p.returncode = os.waitstatus_to_exitcode(status)
    took = time.perf_counter() - t
    stderr = err.read_text()
    assert p.returncode == 3, (p.returncode, stderr[-2000:])
    assert "Traceback" not in stderr and "MemoryError" not in stderr
    assert "expands to more than" in stderr and "alias" in stderr
    assert took < 60, took
    assert usage.ru_maxrss < 2 * 2**20, f"the child used {usage.ru_maxrss / 2**20:.1f} GiB"  # KiB on Linux


def test_alias_bomb_in_run_config(tmp_path):
    cfg = _write(tmp_path, alias_bomb(key="suites"))
    t = time.perf_counter()
    with pytest.raises(ConfigError):
        load_yaml(cfg)
    assert time.perf_counter() - t < 1
    _fast_clean_error(["run", str(cfg)], "expands to more than", limit_s=60)  # the first `laf run` in a process imports the pipeline


def test_alias_bomb_in_set_override(tmp_path):
    cfg = _write(tmp_path, "name: x\nmodel: default\ndata: d.jsonl\n")
    flow = "[" + ",".join(["lol"] * 9) + "]"
    # anchors inside one flow value: &a [..], then lists of *a, nested
    value = f"[&a {flow}, &b [{','.join(['*a'] * 9)}], &c [{','.join(['*b'] * 9)}], &d [{','.join(['*c'] * 9)}], " \
            f"&e [{','.join(['*d'] * 9)}], &f [{','.join(['*e'] * 9)}], [{','.join(['*f'] * 9)}]]"
    assert len(value) < 400
    _fast_clean_error(["train", str(cfg), "--set", f"name={value}"], "--set name", "expands to more than")


def test_alias_bomb_in_suite_file(tmp_path):
    suite = _write(tmp_path, alias_bomb(key="description"), "bomb-suite.yaml")
    t = time.perf_counter()
    code, out, err = run_cli("suites", "validate", str(suite))  # prints a table of problems on stdout
    assert code == 3 and "Traceback" not in out + err and time.perf_counter() - t < 10
    assert "expands to more than" in " ".join((out + err).split()) and len(out + err) < 4000


def test_alias_bomb_in_gate_policy(tmp_path):
    from harness.gate.policy import load_policy

    pol = _write(tmp_path, alias_bomb(key="rules"), "policy.yaml")
    t = time.perf_counter()
    with pytest.raises(ConfigError, match="expands to more than"):
        load_policy(pol)
    assert time.perf_counter() - t < 5


def test_benign_anchors_and_merge_keys_still_work():
    data = parse_yaml("defaults: &d {lr: 0.001, r: 8}\nsmall: {<<: *d, r: 4}\nagain: *d\n")
    assert data["small"] == {"lr": 0.001, "r": 4} and data["again"] == {"lr": 0.001, "r": 8}


def test_recursive_alias_is_refused(tmp_path):
    _fast_clean_error(["train", str(_write(tmp_path, "name: &a [1, *a]\n"))], "recursive alias")


# ---------------------------------------------------------------- duplicate keys


def test_duplicate_key_names_the_key_and_both_lines(tmp_path):
    cfg = _write(tmp_path, "name: first\nmodel: default\nlora:\n  r: 8\n  r: 16\n")
    _fast_clean_error(["train", str(cfg)], "duplicate key 'r'", "first on line 4", "again on line 5")


def test_duplicate_top_level_key_in_run_config(tmp_path):
    cfg = _write(tmp_path, "name: a\nname: b\n")
    _fast_clean_error(["run", str(cfg)], "duplicate key 'name'", "line 2")


# ---------------------------------------------------------------- size and depth


def test_huge_scalar_under_a_known_key_is_cut_in_the_message(tmp_path):
    big = "A" * (MAX_CONFIG_BYTES - 100)
    cfg = _write(tmp_path, f"name: x\nmodel: default\nseed: {big}\n")
    err = _fast_clean_error(["train", str(cfg)], "seed")
    assert "AAAAAAAAAA" in err and big[:5000] not in err


def test_config_over_one_megabyte_is_refused(tmp_path):
    cfg = _write(tmp_path, "name: x\ndescription: " + "b" * (MAX_CONFIG_BYTES + 10) + "\n")
    _fast_clean_error(["train", str(cfg)], "larger than")


def test_fifty_megabyte_single_line_config_reads_one_megabyte_only(tmp_path):
    cfg = tmp_path / "huge.yaml"
    with open(cfg, "w") as f:
        f.write("name: ")
        chunk = "x" * 2**20
        for _ in range(50):
            f.write(chunk)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    _fast_clean_error(["train", str(cfg)], "larger than")
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown < 40 * 1024, f"peak memory grew by {grown / 1024:.0f} MiB"


def test_dev_zero_as_config_is_bounded(tmp_path):
    if not Path("/dev/zero").exists():
        pytest.skip("no /dev/zero")
    _fast_clean_error(["train", "/dev/zero"], "larger than")


def test_deep_nesting_is_refused_before_python_recursion(tmp_path):
    deep = "name: " + "[" * 100_000 + "]" * 100_000 + "\n"
    _fast_clean_error(["train", str(_write(tmp_path, deep))], f"more than {MAX_DEPTH} levels")
    block = "".join("  " * i + f"k{i}:\n" for i in range(MAX_DEPTH + 5)) + "  " * (MAX_DEPTH + 5) + "v: 1\n"
    _fast_clean_error(["run", str(_write(tmp_path, block, "block.yaml"))], "levels deep")


# ---------------------------------------------------------------- tags, binary files, odd scalars


def test_python_object_tags_never_run_code(tmp_path):
    marker = tmp_path / "pwned.txt"
    for payload in (f"!!python/object/apply:os.system ['touch {marker}']",
                    f"!!python/object/new:subprocess.Popen [['touch', '{marker}']]",
                    "!!python/name:os.system", "!function utils.process_docs"):
        cfg = _write(tmp_path, f"name: x\nmodel: default\nseed: {payload}\n")
        _fast_clean_error(["train", str(cfg)], "only plain YAML values")
    assert not marker.exists()


def test_binary_file_is_a_clear_error(tmp_path):
    rng = __import__("random").Random(0)
    blob = bytes(rng.randrange(256) for _ in range(4096))
    _fast_clean_error(["train", str(_write(tmp_path, blob, "model.bin"))])
    _fast_clean_error(["run", str(_write(tmp_path, b"name: x\x00\x01\x02\n", "nul.yaml"))], "binary")


def test_non_finite_numbers_are_refused(tmp_path):
    for v in (".nan", ".inf", "-.Inf", "1.0e+999"):
        cfg = _write(tmp_path, f"name: x\nmodel: default\nlora:\n  dropout: {v}\n")
        _fast_clean_error(["train", str(cfg)], "not a finite number", "line 4")


def test_non_finite_numbers_written_as_strings_are_refused_after_validation(tmp_path):
    """pydantic reads the *strings* 'nan', 'inf' and '1e999' as floats: validate() refuses them, naming the key."""
    from harness.train import TrainConfig

    for v in ("inf", "infinity", "1e999"):  # (NaN already fails lr > 0)
        with pytest.raises(ConfigError, match=r"key 'optim.lr': is not a finite number"):
            validate(TrainConfig, {"name": "x", "model": "default", "data": {"path": "d.jsonl"}, "optim": {"lr": v}}, "cfg.yaml")
    cfg = _write(tmp_path, "name: x\nmodel: default\ndata: {path: d.jsonl}\noptim:\n  lr: '1e999'\n")
    _fast_clean_error(["train", str(cfg)], "optim.lr", "not a finite number")


def test_five_thousand_digit_integer_and_impossible_date(tmp_path):
    _fast_clean_error(["train", str(_write(tmp_path, "name: x\nseed: " + "9" * 5000 + "\n"))], "cannot read the value", "line 2")
    _fast_clean_error(["train", str(_write(tmp_path, "name: x\ndescription: 2024-13-45\n", "d.yaml"))], "cannot read the value", "month")


def test_bom_is_accepted():
    # a UTF-8 BOM written by some editors is not part of the first key
    p = Path(__import__("tempfile").mkdtemp()) / "bom.yaml"
    p.write_bytes(b"\xef\xbb\xbfname: x\n")
    assert load_yaml(p) == {"name": "x"}


# ---------------------------------------------------------------- error messages never format unbounded input


def test_validation_errors_are_capped_and_inputs_cut(tmp_path):
    from harness.train import TrainConfig

    # 5,000 unknown keys with 50 kB names: at most MAX_LINES problems, every key name cut
    data = {"name": "x", "model": "default", **{f"k{i}-" + "z" * 50_000: i for i in range(5000)}}
    with pytest.raises(ConfigError) as e:
        validate(TrainConfig, data, "cfg.yaml")
    msg = str(e.value)
    assert "more problem(s)" in msg and msg.count("cfg.yaml: key") <= MAX_LINES
    assert len(msg) < 20_000, len(msg)


def test_validate_does_not_format_a_shared_structure(tmp_path):
    """An alias-bomb-shaped Python object (9**9 leaves, 81 lists) under a typed key: answered at once, message short."""
    from harness.train import TrainConfig

    node: list = ["lol"] * 9
    for _ in range(8):
        node = [node] * 9
    t = time.perf_counter()
    with pytest.raises(ConfigError) as e:
        validate(TrainConfig, {"name": node, "model": "default"}, "cfg.yaml")
    assert time.perf_counter() - t < 2
    assert len(str(e.value)) < 2000 and "[[[" in str(e.value)


def test_short_repr_is_bounded():
    assert len(short_repr("x" * 10**7)) <= 200
    node: list = [1]
    for _ in range(50):
        node = [node, node]
    assert len(short_repr(node)) <= 200


def test_set_override_that_is_not_key_value_is_cut(tmp_path):
    cfg = _write(tmp_path, "name: x\n")
    err = _fast_clean_error(["train", str(cfg), "--set", "y" * 100_000], "not KEY=VALUE")
    assert "y" * 1000 not in err


def test_yaml_syntax_error_message_is_bounded(tmp_path):
    cfg = _write(tmp_path, "name: x\nbad: [" + "'" + "q" * 500_000 + "\n")
    _fast_clean_error(["train", str(cfg)], "YAML syntax error")


def test_only_the_shared_loader_reads_user_yaml():
    """Every yaml.safe_load / yaml.load on user input lives in harness/config.py."""
    offenders = []
    for p in (REPO / "harness").rglob("*.py"):
        if p.name == "config.py" and p.parent.name == "harness":
            continue
        text = p.read_text()
        for needle in ("yaml.safe_load(", "yaml.load(", "yaml.full_load(", "yaml.unsafe_load("):
            if needle in text:
                offenders.append(f"{p.relative_to(REPO)}: {needle}")
    assert offenders == [], offenders


def test_parse_yaml_refuses_oversized_text():
    with pytest.raises(yaml.YAMLError):
        parse_yaml("a: " + "b" * (MAX_CONFIG_BYTES + 1))
    with pytest.raises(LafError):
        load_yaml("/nonexistent/config.yaml")
