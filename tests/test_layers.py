"""The layer rules of the library, checked so that breaking one fails a test.

Each import rule runs in a fresh interpreter (an earlier test may already have
loaded torch into this one) and looks at ``sys.modules`` after the import.
That nothing imports the CLI is a static scan of every module's imports.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
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
                                    "harness.present.rows", "harness.defaults"])
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


def _static_imports(path: Path) -> set[str]:
    """Absolute names of every module ``path`` imports, at any depth of the file (lazy imports included)."""
    package = path.parent.relative_to(REPO).as_posix().replace("/", ".")
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
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
    return out


def test_nothing_in_the_library_imports_the_cli():
    offenders = []
    for path in sorted(HARNESS.rglob("*.py")):
        rel = path.relative_to(REPO).as_posix()
        if rel.startswith("harness/cli/") or rel == "harness/__main__.py":
            continue
        if any(m == "harness.cli" or m.startswith("harness.cli.") for m in _static_imports(path)):
            offenders.append(rel)
    assert not offenders, f"library modules import harness.cli: {', '.join(offenders)}"
