"""Finding suites: by name under the suite folders (``./suites``, ``LAF_SUITES``, the built-ins), by path,
as ``lm_eval:<task>`` or as ``TYPE:PATH`` (a probe type on a data file in its published schema)."""

from __future__ import annotations

import difflib
import os
from pathlib import Path

from ..config import load_yaml, validate
from ..errors import ConfigError, LafError
from . import suite_types
from .lm_eval import check_lm_eval_task
from .sources import data_dir
from .spec import DataSpec, Suite, SuiteSpec

REPO_SUITES = Path(__file__).resolve().parents[1] / "suites_builtin"  # the built-in suites ship inside the package (and the wheel)


def suite_dirs() -> list[Path]:
    dirs = []
    env = os.environ.get("LAF_SUITES")
    if env:
        dirs += [Path(p) for p in env.split(os.pathsep) if p]
    dirs.append(Path.cwd() / "suites")
    dirs.append(REPO_SUITES)
    out = []
    for d in dirs:
        if d.is_dir() and d.resolve() not in [x.resolve() for x in out]:
            out.append(d)
    return out


def available_suites() -> dict[str, Path]:
    found: dict[str, Path] = {}
    for root in suite_dirs():
        for p in sorted(root.rglob("*.yaml")):
            name = p.relative_to(root).with_suffix("").as_posix()
            found.setdefault(name, p)
    return found


def suite_origin(name: str, path: Path) -> str:
    """Where a suite found by name comes from, said plainly: ``built-in``, or ``yours: PATH`` with
    ``(replaces the built-in)`` when a file in ./suites or LAF_SUITES has a built-in suite's name."""
    try:
        path.resolve().relative_to(REPO_SUITES.resolve())
        return "built-in"
    except ValueError:
        pass
    shadowed = (REPO_SUITES / name).with_suffix(".yaml").exists()
    return f"yours: {path}" + (" (replaces the built-in)" if shadowed else "")


def load_suite_file(path: Path, name: str | None = None, data_root: Path | None = None) -> Suite:
    raw = load_yaml(path)
    spec = validate(SuiteSpec, raw, path)
    if spec.lm_eval is None and spec.type == "lm_eval" and not spec.task:
        raise ConfigError(path, "task", "an lm_eval suite needs a 'task' (an lm-eval task config) or 'lm_eval: <registered task>'")
    suite_types.require(spec.type, path)
    suite = Suite(spec.suite or name or path.stem, spec, path, data_root)
    if spec.suite:  # a file may claim any (safe) name: one that is a built-in's is said plainly, as for a file found by name
        suite.origin = suite_origin(spec.suite, path)
    return suite


def load_suite(ref: str, data_root: str | Path | None = None) -> Suite:
    """``ref``: a suite name (``general/world-facts``), a YAML path, or ``lm_eval:<task>``."""
    root = data_dir(data_root)
    if ref.startswith("lm_eval:"):
        task = ref.split(":", 1)[1]
        check_lm_eval_task(task)
        spec = SuiteSpec(category="general", lm_eval=task, description=f"lm-eval registered task {task} (hub data)")
        return Suite(ref, spec, None, root)
    kind, sep, rest = ref.partition(":")
    if sep and not Path(ref).exists():
        on_files = suite_types.path_types()
        if kind in on_files:  # TYPE:PATH runs a probe on a data file in its published schema
            t = on_files[kind]
            path = Path(rest).expanduser()
            if not path.exists():
                raise LafError(f"data file not found: {path}", f"pass an existing file after {kind}:")
            spec = SuiteSpec(category=t.category, type=kind, description=f"{kind} on {path}",
                             data=DataSpec(path=str(path.resolve()), format=t.data_format))
            return Suite(f"{kind}:{path.name}", spec, None, root)
        raise LafError(f"unknown suite kind '{kind}' in '{ref}'", f"use lm_eval:<task>, or one of {', '.join(sorted(on_files))} followed by :PATH")
    p = Path(ref)
    if p.suffix in (".yaml", ".yml") or p.exists():
        if not p.exists():
            raise LafError(f"suite file not found: {p}", "check the path")
        return load_suite_file(p, None, root)
    known = available_suites()
    if ref in known:
        suite = load_suite_file(known[ref], ref, root)
        suite.origin = suite_origin(suite.name, known[ref])
        return suite
    close = difflib.get_close_matches(ref, list(known), n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}? " if close else ""
    raise LafError(f"unknown suite '{ref}'", f"{hint}see `laf suites list`, pass a YAML path, or lm_eval:<task>")


