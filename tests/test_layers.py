"""The layer rules of the library, checked so that breaking one fails a test.

Each import rule runs in a fresh interpreter (an earlier test may already have
loaded torch into this one) and looks at ``sys.modules`` after the import.
That nothing imports the CLI is a static scan of every module's imports.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from functools import lru_cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
HARNESS = REPO / "harness"
MODEL_STACK = ("torch", "transformers", "peft", "bitsandbytes", "lm_eval")


def loaded_after_import(module: str) -> set[str]:
    """Top-level packages and harness modules in sys.modules after ``import module`` in a fresh interpreter."""
    code = f"import json, sys; import {module}; print(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120,
                         env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert out.returncode == 0, out.stderr
    return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _forbidden(loaded: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(m for m in loaded if any(m == p or m.startswith(p + ".") for p in prefixes))


@pytest.mark.parametrize("module", ["harness.results", "harness.stats", "harness.gate", "harness.report", "harness.history", "harness.present",
                                    "harness.cli.rows", "harness.defaults"])
def test_records_side_loads_no_model_stack(module):
    """A gate in CI, a report on a laptop and the statistics need no torch, transformers, peft, bitsandbytes or lm-eval."""
    bad = sorted({m.split(".")[0] for m in _forbidden(loaded_after_import(module), MODEL_STACK)})
    assert not bad, f"import {module} loads the model stack: {', '.join(bad)}"


def _package_imports(package: str) -> dict[str, set[str]]:
    """Every file of a package -> the modules it imports anywhere in the file (lazy imports in functions too)."""
    root = REPO / package.replace(".", "/")
    return {p.relative_to(REPO).as_posix(): _static_imports(p) for p in sorted(root.rglob("*.py"))}


@pytest.mark.parametrize(("package", "forbidden"), [
    pytest.param("harness.train", ("harness.evaluate",), id="train-never-evaluate"),
    pytest.param("harness.evaluate", ("harness.gate", "harness.report"), id="evaluate-never-gate-or-report"),
    pytest.param("harness.data", ("harness.train",), id="data-never-train"),
])
def test_stage_does_not_import(package, forbidden):
    """Checked twice: what importing the package loads (fresh interpreter), and what any of its files imports,
    even inside a function (a lazy import crosses the layer all the same when it runs)."""
    bad = _forbidden(loaded_after_import(package), forbidden)
    assert not bad, f"import {package} loads {', '.join(bad)}"
    offenders = {f: sorted(_forbidden(mods, forbidden)) for f, mods in _package_imports(package).items()}
    offenders = {f: m for f, m in offenders.items() if m}
    assert not offenders, f"{package} imports {forbidden}: " + "; ".join(f"{f}: {', '.join(m)}" for f, m in offenders.items())


# A module loaded from a string is imported all the same when the code runs: ``importlib.import_module("m")``
# and ``__import__("m")`` with a literal, ``f"{__name__}.x"`` / ``f"{__package__}.x"`` (the file's own package),
# a ``"harness.mod:attr"`` target (the suite-type table, entry points) and the entry points of our own
# pyproject.toml in a group that a module reads. A call whose module name is computed some other way must be
# listed here with the reason it cannot cross a layer.
TARGET = re.compile(r"(harness(?:\.[A-Za-z_]\w*)+):[A-Za-z_]\w*")
DYNAMIC_LOADS_REVIEWED = {
    "harness/doctor.py": "imports the third-party packages of its REQUIRED list, never a harness module",
    "harness/suites/suite_types.py": "loads the targets of its table (literal strings, counted) and of other packages' entry points",
}


def _is_import_call(node: ast.Call) -> bool:
    f = node.func
    name = f.attr if isinstance(f, ast.Attribute) else f.id if isinstance(f, ast.Name) else ""
    return name in ("import_module", "__import__")


def _string_loads(tree: ast.AST, path: Path, package: str) -> tuple[set[str], list[str]]:
    """Modules ``tree`` loads from strings, and the calls whose module name it cannot read."""
    own = path.relative_to(REPO).with_suffix("").as_posix().replace("/", ".")
    own = package if path.name == "__init__.py" else own
    found, unread = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            found |= {m.group(1) for m in TARGET.finditer(node.value) if m.group(0) == node.value.strip()}
        if not (isinstance(node, ast.Call) and _is_import_call(node) and node.args):
            continue
        arg = node.args[0]
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str):
            name = arg.value
            if name.startswith("."):
                level = len(name) - len(name.lstrip("."))
                base = package.split(".")
                name = ".".join(base[: len(base) - (level - 1)] + ([name.lstrip(".")] if name.lstrip(".") else []))
            found.add(name)
        elif (isinstance(arg, ast.JoinedStr) and arg.values and isinstance(arg.values[0], ast.FormattedValue)
              and isinstance(arg.values[0].value, ast.Name) and arg.values[0].value.id in ("__name__", "__package__")):
            found.add(package if arg.values[0].value.id == "__package__" else own)  # a module of its own package
        else:
            unread.append(f"{path.relative_to(REPO).as_posix()}:{node.lineno}")
    return found, unread


@lru_cache(maxsize=1)
def _own_entry_points() -> dict[str, set[str]]:
    """Our pyproject's entry-point groups -> the modules their targets name."""
    groups = tomllib.loads((REPO / "pyproject.toml").read_text())["project"].get("entry-points", {})
    return {g: {str(t).partition(":")[0] for t in table.values()} for g, table in groups.items()}


def _static_imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports, at any depth of the file (lazy imports included), and
    every module it loads from a string (see ``_string_loads``)."""
    package = path.parent.relative_to(REPO).as_posix().replace("/", ".")
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            out.add(mod)
            out |= {f"{mod}.{a.name}" for a in node.names}
    loaded, _ = _string_loads(tree, path, package)
    out |= loaded
    strings = {n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)}
    for group, targets in _own_entry_points().items():
        if group in strings:  # the module reads that group
            out |= targets
    return out


def test_every_string_load_is_read_or_reviewed():
    """A module name the scan cannot read would hide an import from every rule here."""
    unread = []
    for path in sorted(HARNESS.rglob("*.py")):
        package = path.parent.relative_to(REPO).as_posix().replace("/", ".")
        _, calls = _string_loads(ast.parse(path.read_text(encoding="utf-8")), path, package)
        unread += [c for c in calls if c.rpartition(":")[0] not in DYNAMIC_LOADS_REVIEWED]
    assert not unread, f"import_module/__import__ with a module name the layer test cannot read: {', '.join(unread)}"


def test_string_loads_count_as_imports(tmp_path, monkeypatch):
    """The scan itself, on a file that imports only through strings."""
    pkg = REPO / "harness" / "evaluate"
    src = ("import importlib\n"
           "def f(name):\n"
           "    importlib.import_module('harness.gate.policy')\n"
           "    __import__('harness.report')\n"
           "    importlib.import_module('.cache', __package__)\n"
           "    importlib.import_module(f'{__package__}.{name}')\n"
           "    return importlib.import_module(name)\n"
           "TABLE = {'x': 'harness.stats.paired:bootstrap', 'doc': 'see harness.train.loop:run for more'}\n")
    path = pkg / "_layer_probe.py"
    tree = ast.parse(src)
    found, unread = _string_loads(tree, path, "harness.evaluate")
    assert found == {"harness.gate.policy", "harness.report", "harness.evaluate.cache", "harness.evaluate", "harness.stats.paired"}
    assert unread == ["harness/evaluate/_layer_probe.py:7"]
    entry = _own_entry_points()
    assert all(isinstance(v, set) for v in entry.values())


def _subpackage(module: str) -> str | None:
    """``harness.evaluate.engine`` -> ``harness.evaluate``; a top-level module (``harness.io``) is its own node."""
    parts = module.split(".")
    if parts[0] != "harness" or len(parts) < 2:
        return None
    node = ".".join(parts[:2])
    return node if (REPO / "harness" / parts[1]).is_dir() or (REPO / "harness" / f"{parts[1]}.py").exists() else None


def subpackage_graph() -> dict[str, dict[str, list[str]]]:
    """harness sub-package -> the sub-packages its files import (module- and function-level, string loads too)
    -> the files that do, as evidence."""
    graph: dict[str, dict[str, list[str]]] = {}
    for path in sorted(HARNESS.rglob("*.py")):
        rel = path.relative_to(REPO)
        if rel.as_posix() in ("harness/__init__.py", "harness/__main__.py"):
            continue
        src = _subpackage(rel.with_suffix("").as_posix().replace("/", "."))
        if src is None:
            continue
        for mod in _static_imports(path):
            dst = _subpackage(mod)
            if dst and dst != src:
                graph.setdefault(src, {}).setdefault(dst, []).append(rel.as_posix())
    return graph


def find_cycle(graph: dict[str, dict[str, list[str]]]) -> list[str] | None:
    """One cycle of the graph as [a, b, ..., a], or None."""
    state: dict[str, int] = {}  # 1: on the path, 2: done
    path: list[str] = []

    def visit(n: str) -> list[str] | None:
        state[n] = 1
        path.append(n)
        for m in sorted(graph.get(n, {})):
            if state.get(m) == 1:
                return path[path.index(m):] + [m]
            if m not in state and (c := visit(m)):
                return c
        path.pop()
        state[n] = 2
        return None

    for n in sorted(graph):
        if n not in state and (c := visit(n)):
            return c
    return None


def test_find_cycle_finds_one_and_only_one():
    assert find_cycle({"a": {"b": []}, "b": {"c": []}, "c": {}}) is None
    assert find_cycle({"a": {"b": []}, "b": {"c": []}, "c": {"a": []}}) == ["a", "b", "c", "a"]


def test_no_import_circle_between_subpackages():
    """A circle between sub-packages means neither can be understood, tested or moved without the other."""
    graph = subpackage_graph()
    assert "harness.suites" in graph.get("harness.evaluate", {}), "the scan must see the engine use the suites"
    cycle = find_cycle(graph)
    assert cycle is None, "import circle: " + " -> ".join(cycle) + " (" + "; ".join(
        f"{a} -> {b} in {', '.join(sorted(set(graph[a][b]))[:3])}" for a, b in zip(cycle, cycle[1:])) + ")"


def test_nothing_in_the_library_imports_the_cli():
    offenders = []
    for path in sorted(HARNESS.rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith("harness/cli/") or rel == "harness/__main__.py":
            continue
        if any(m == "harness.cli" or m.startswith("harness.cli.") for m in _static_imports(path)):
            offenders.append(rel)
    assert not offenders, f"library modules import harness.cli: {', '.join(offenders)}"
