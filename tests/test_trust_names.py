"""Issue 18, family "paths from names": every command that turns a name into a path takes a plain name
(io.check_name / registry.check_registry_name: one rule), never '../x', an absolute path or a separator."""

from __future__ import annotations

import pytest
import yaml

from harness.io import check_name
from tests.conftest import assert_clean_error, run_cli

BAD = ["../../x", "/tmp/abs-evil", "a/b", "a\\b", "..", ".", "x..y", ".hidden", "-flag", "name\n", "nul\x00byte", "a" * 65, "", "ünïcode", "space name", "x@1"]


@pytest.mark.parametrize("name", BAD)
def test_the_one_rule_refuses_every_path_like_name(name):
    with pytest.raises(ValueError, match="not allowed"):
        check_name(name, "the run name")


@pytest.mark.parametrize("name", ["ok", "a.b-c_d", "A1", "a" * 64])
def test_plain_names_pass(name):
    assert check_name(name) == name


def _write(tmp_path, data) -> str:
    p = tmp_path / "cfg.yaml"
    p.write_text(yaml.safe_dump(data))
    return str(p)


def _tree(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("name", ["../../x", "../escaped", str("/tmp/laf-abs-run-name"), "a/b", "name\n", "z" * 200])
def test_run_refuses_a_path_as_name_even_without_data(tmp_path, name):
    """`laf run` with only registered adapters (no data:) used to skip the check and write outside out_root."""
    work = tmp_path / "work"
    work.mkdir()
    cfg = _write(work, {"name": name, "adapters": ["a@1"], "eval": {"suites": ["general/world-facts"]}, "out_root": str(work / "reports")})
    before = _tree(tmp_path)
    assert_clean_error(run_cli("run", cfg, "--quiet"), "key 'name'", "not allowed")
    assert _tree(tmp_path) == before
    assert not __import__("os").path.exists("/tmp/laf-abs-run-name")


@pytest.mark.parametrize("ref", ["../../evil@1", "/abs@1", "a/b", "x@-1", "x@1@2"])
def test_run_refuses_path_like_adapter_refs(tmp_path, ref):
    cfg = _write(tmp_path, {"name": "ok", "adapters": [ref], "eval": {"suites": ["general/world-facts"]}, "out_root": str(tmp_path / "reports")})
    assert_clean_error(run_cli("run", cfg, "--quiet"), "key 'adapters")
    assert not (tmp_path / "reports").exists()


@pytest.mark.parametrize("name", ["/tmp/laf-abs-adapter", "..", "a" * 65, "bad\n", "sub/dir"])
def test_train_refuses_a_path_as_name(tmp_path, name):
    data = tmp_path / "d.jsonl"
    data.write_text('{"instruction": "a", "output": "b"}\n')
    cfg = _write(tmp_path, {"name": name, "model": "default", "data": {"path": str(data)}, "registry": str(tmp_path / "reg"), "output_dir": str(tmp_path / "run")})
    assert_clean_error(run_cli("train", cfg, "--quiet"), "key 'name'")
    assert not (tmp_path / "reg").exists() and not (tmp_path / "run").exists()


@pytest.mark.parametrize("name", ["../m", "/tmp/laf-abs-merge", "m/x@1", "..@2"])
def test_merge_refuses_a_path_as_name(tmp_path, name):
    cfg = _write(tmp_path, {"name": name, "method": "linear", "adapters": ["a@1", "b@1"], "registry": str(tmp_path / "reg")})
    assert_clean_error(run_cli("merge", cfg), "name")
    assert not (tmp_path / "reg").exists()


@pytest.mark.parametrize("ref", ["../../etc@1", "/etc/passwd", "a/../b", "..@1", "x\\y"])
@pytest.mark.parametrize("action", ["show", "verify", "export"])
def test_registry_refs_are_names_not_paths(tmp_path, ref, action):
    (tmp_path / "reg").mkdir()
    extra = [str(tmp_path / "out")] if action == "export" else []
    assert_clean_error(run_cli("registry", "--registry", str(tmp_path / "reg"), action, ref, *extra), "adapter")
    assert not (tmp_path / "out").exists()


def test_merge_parent_refs_are_names_not_paths(tmp_path):
    cfg = _write(tmp_path, {"name": "m", "method": "linear", "adapters": ["../../a@1", "b@1"], "registry": str(tmp_path / "reg")})
    code, out, err = run_cli("merge", cfg)
    assert code == 3 and "Traceback" not in err and "../../a" in err
