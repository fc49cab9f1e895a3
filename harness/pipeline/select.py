"""Checkpoint selection without the winner's curse (``select:`` in a run or sweep config).

    split each gated suite's items, seeded: a selection split (``fraction``) and a confirmation split (the rest)
    -> train, saving the adapter every ``every`` steps (and at the last)
    -> score the base and every snapshot on the selection split only
    -> choose by the gate's own rules on that split (most required rules passing, then the largest primary gain)
    -> register the chosen snapshot; every later stage (evaluation, gate, compare, report) sees the confirmation
       split only, so the items that chose never certify

Choosing and certifying on the same items inflates the chance of a false pass (``tests/test_preserve.py``
simulates it). The split is recorded by item index and content hash in ``select/split.json``; the found-vs-lost
curve across snapshots in ``select/selection.json``, ``state.json``, the report and the Markdown summary.
"""

from __future__ import annotations

import dataclasses
import json
import math
import random
import shutil
import tempfile
from pathlib import Path

from ..errors import LafError
from ..io import atomic_write_json, read_json, sha256_json
from .config import RunConfig, suite_refs

SELECTION_FILE = "selection.json"
MAX_SPLIT_BYTES = 16 << 20


def gated_suites(cfg: RunConfig, policy, suites) -> list:
    """The suites the policy's required rules gate (by name or category), in ``eval.suites`` order."""
    out = []
    for s in suites:
        for r in policy.rules:
            if r.required and r.parity is None and (r.suite == s.name or (r.category and r.category == s.category)):
                out.append(s)
                break
    return out


def _limited_docs(cfg: RunConfig, base: Path, suite) -> list[dict]:
    refs, limits = suite_refs(cfg, base)
    docs = suite.load_docs()
    lim = None
    for ref in refs:
        if limits.get(ref) and (ref == suite.name or (suite.file is not None and Path(ref) == Path(suite.file))):
            lim = limits[ref]
    lim = lim or cfg.eval.limit
    return docs[:lim] if lim else docs


def doc_hash(doc: dict) -> str:
    return sha256_json(doc)[:16]


def make_split(cfg: RunConfig, base: Path, policy, suites, config_path: Path) -> dict:
    """``{suite: {"selection": [index...], "confirmation": [index...], "hashes": {...}}}`` for every gated suite:
    a seeded shuffle (or ``select.split``, a JSON file naming both lists), checked: disjoint, inside the suite, and
    each side at least ``min_items`` of every rule on the suite. Raises ``LafError`` naming the suite otherwise."""
    sel = cfg.select
    assert sel is not None
    given = _read_split_file(sel.split, base) if sel.split else None
    out, problems = {}, []
    for s in gated_suites(cfg, policy, suites):
        if s.spec.lm_eval:
            problems.append(f"{s.name} is an lm-eval registered task; select: splits only suites whose items it can read")
            continue
        docs = _limited_docs(cfg, base, s)
        n = len(docs)
        if given is not None:
            g = given.get(s.name)
            if not isinstance(g, dict) or not isinstance(g.get("selection"), list) or not isinstance(g.get("confirmation"), list):
                problems.append(f"{s.name}: the split file has no 'selection' and 'confirmation' lists for this suite")
                continue
            a, b = g["selection"], g["confirmation"]
            if not all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < n for i in a + b):
                problems.append(f"{s.name}: the split file names item indices outside 0..{n - 1}")
                continue
            both = set(a) & set(b)
            if both:
                problems.append(f"{s.name}: the selection and confirmation splits share {len(both)} item(s) (e.g. {sorted(both)[:5]}); "
                                "an item that chose a checkpoint cannot certify it")
                continue
            if len(set(a)) != len(a) or len(set(b)) != len(b):
                problems.append(f"{s.name}: the split file lists an item twice")
                continue
            selection, confirmation = sorted(a), sorted(b)
        else:
            order = list(range(n))
            random.Random(f"{sel.seed}:{s.name}:{sha256_json(docs)}").shuffle(order)
            k = round(sel.fraction * n)
            selection, confirmation = sorted(order[:k]), sorted(order[k:])
        need = max([r.min_items or policy.min_items for r in policy.rules if r.required and (r.suite == s.name or r.category == s.category)] or [1])
        for side, ids in (("selection", selection), ("confirmation", confirmation)):
            if len(ids) < need:
                problems.append(f"{s.name}: the {side} split has {len(ids)} items, fewer than the policy's min_items {need} "
                                f"({n} items in all, select.fraction {sel.fraction})")
        out[s.name] = {"selection": selection, "confirmation": confirmation, "n": n,
                       "selection_hashes": [doc_hash(docs[i]) for i in selection], "confirmation_hashes": [doc_hash(docs[i]) for i in confirmation]}
    if not out and not problems:
        problems.append("the policy gates no suite that select: could split (it needs a required rule on a suite)")
    if problems:
        from ..errors import ConfigError

        raise ConfigError(config_path, "select", "checkpoint selection cannot split the gated suites:\n  - " + "\n  - ".join(problems),
                          "raise the suites' limits, change select.fraction, or fix select.split")
    return out


def _read_split_file(path: str, base: Path) -> dict:
    p = Path(path) if Path(path).is_absolute() else base / path
    try:
        if not p.is_file():
            raise LafError(f"select.split {p} is not a file", "give a JSON file {suite: {selection: [...], confirmation: [...]}}")
        if p.stat().st_size > MAX_SPLIT_BYTES:
            raise LafError(f"select.split {p} is larger than {MAX_SPLIT_BYTES >> 20} MiB", "a split lists item indices; check the file")
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise LafError(f"select.split {p} is not readable JSON: {e}", "give a JSON file {suite: {selection: [...], confirmation: [...]}}") from None
    if not isinstance(doc, dict):
        raise LafError(f"select.split {p} is not a JSON object", "give a JSON file {suite: {selection: [...], confirmation: [...]}}")
    return doc


def subset_suites(suites, split: dict, side: str, cfg: RunConfig, base: Path) -> list:
    """The suites with each split suite cut to ``side``'s items (``selection`` or ``confirmation``); others unchanged."""
    out = []
    for s in suites:
        if s.name not in split:
            out.append(s)
            continue
        docs = _limited_docs(cfg, base, s)
        spec = s.spec.model_copy(deep=True)
        spec.options.limit = None
        out.append(dataclasses.replace(s, spec=spec, _docs=[docs[i] for i in split[s.name][side]]))
    return out


def select_checkpoint(ctx, job, result, suites, policy, split: dict, eval_progress=None) -> tuple[str, dict]:
    """Score the training's snapshots on the selection split, choose one by the gate's rules, register it as
    ``cfg.name`` in the run's registry; returns ``(ref, selection document)``."""
    from ..evaluate import run_eval
    from ..gate.rules import evaluate_gate
    from ..gate.runs import load_side
    from ..registry import Registry
    from ..results import BASE
    from ..train.loop import list_snapshots
    from .stages import eval_spec

    cfg, log = ctx.cfg, ctx.log
    snaps = list_snapshots(result.run_dir)
    if not snaps:
        raise LafError(f"training wrote no snapshot in {result.run_dir / 'snapshots'}", "check select.every (it must be at most the number of steps)")
    work = ctx.run_dir / "select"
    sel_reg = Registry(work / "registry")
    manifest = dict(result.entry.manifest)
    metrics_path = result.entry.path / "metrics.jsonl"
    refs: dict[str, tuple[int, Path]] = {}
    for snap in snaps:
        step = int(read_json(snap / "step.json")["step"])
        name = f"{cfg.name}-step{step}"
        digest_src = sha256_json(sorted((p.name, p.stat().st_size) for p in snap.iterdir()))
        existing = [e for e in sel_reg.list() if e.ref.name == name and e.manifest.get("snapshot_source") == digest_src]
        entry = existing[-1] if existing else _register(sel_reg, name, snap, metrics_path, {**manifest, "steps": step, "snapshot_source": digest_src,
                                                                                      "final_train_loss": _loss_at(snap)})
        refs[str(entry.ref)] = (step, snap)
    gated = list(split)
    sel_suites = [s for s in subset_suites(suites, split, "selection", cfg, ctx.base) if s.name in split]
    spec = eval_spec(ctx, list(refs))
    sel_refs = [r for r, s in zip(suite_refs(cfg, ctx.base)[0], suites) if s.name in split]
    spec = dataclasses.replace(spec, suites=sel_refs, registry=str(work / "registry"), out=str(work / "eval"), limit=None)
    sizes = ", ".join(f"{k}: {len(v['selection'])}" for k, v in split.items())
    log(f"select: {len(refs)} snapshot(s) of {cfg.name} on the selection split ({sizes} items)")
    run_eval(spec, progress=eval_progress, log=lambda m: log(f"  {m}"), suites_override=sel_suites)
    required = [r for r in policy.rules if r.required and r.parity is None]
    sel_policy = policy.model_copy(update={"rules": required, "max_contamination": None})
    base_side = load_side(f"{work / 'eval'}#{BASE}", "baseline", default_base=True)
    curve = []
    for ref, (step, _) in sorted(refs.items(), key=lambda kv: kv[1][0]):
        v = evaluate_gate(base_side, load_side(f"{work / 'eval'}#{ref}", "candidate", default_base=False), sel_policy, "select (required rules)")
        rules = [{"rule": r.rule, "target": r.suite, "metric": r.metric, "kind": r.kind, "status": r.status,
                  "delta": r.delta.delta if r.delta else None, "base": r.delta.base if r.delta else None, "ci_low": r.delta.ci_low if r.delta else None,
                  "ci_high": r.delta.ci_high if r.delta else None, "improvement": r.delta.improvement if r.delta else None,
                  "n": r.delta.n if r.delta else None, "threshold": r.margin if r.kind == "min_gain" else -r.margin,
                  "confirmation_n": len(split[r.suite]["confirmation"]) if r.suite in split else None} for r in v.rules]
        primary = next((x["improvement"] for x in rules if x["kind"] == "min_gain" and x["improvement"] is not None), None)
        curve.append({"step": step, "snapshot": ref, "verdict": v.status, "rules_passed": sum(x["status"] == "pass" for x in rules),
                      "primary_gain": primary, "pass_chance": pass_chance(rules, policy.confidence), "rules": rules,
                      "train_loss": _loss_at(refs[ref][1])})
    best = choose(curve, cfg.select.by)
    step, snap = refs[best["snapshot"]]
    entry = _register(Registry(cfg.registry), cfg.name, snap, metrics_path,
                      {**manifest, "steps": step, "final_train_loss": _loss_at(snap),
                       "selection": {"chosen_step": step, "from_steps": [c["step"] for c in curve], "split_digest": sha256_json(split),
                                     "by": cfg.select.by, "rule": CHOICE_RULES[cfg.select.by]}})
    doc = {"schema": "laf.selection/1", "adapter": str(entry.ref), "chosen_step": step, "curve": curve, "by": cfg.select.by, "rule": CHOICE_RULES[cfg.select.by],
           "fraction": cfg.select.fraction,
           "seed": cfg.select.seed, "suites": {k: {"selection": len(v["selection"]), "confirmation": len(v["confirmation"]), "n": v["n"]} for k, v in split.items()},
           "gated": gated, "policy_rules": [r.label() for r in required]}
    atomic_write_json(work / SELECTION_FILE, doc)
    log(f"  chose step {step} ({best['rules_passed']}/{len(required)} required rules pass on the selection split"
        + (f", primary gain {100 * best['primary_gain']:+.1f} points" if best["primary_gain"] is not None else "")
        + (f", predicted chance to pass on the confirmation split {100 * best['pass_chance']:.0f} %" if best.get("pass_chance") is not None else "")
        + f"): registered {entry.ref}")
    return str(entry.ref), doc


CHOICE_RULES = {
    "pass_chance": "the largest predicted chance that every required rule passes on the confirmation split (each rule's selection-split "
                   "estimate and standard error, the error rescaled to the confirmation split's size), then the largest primary gain",
    "rules": "most required rules passing on the selection split, a passing verdict, then the largest primary gain",
}


def pass_chance(rules: list[dict], confidence: float) -> float:
    """The predicted probability that every rule of ``rules`` (one snapshot's selection-split rows) passes on the
    confirmation split. The gate passes a rule when its one-sided bound at ``confidence`` clears the threshold, so with
    estimate ``I`` and standard error ``se`` (read from the selection split's two-sided CI, rescaled by
    sqrt(n_sel / n_conf)) a rule passes with probability about Phi((I - threshold) / se_conf - z1), z1 the one-sided
    quantile (1.645 at 95 %); the rules are taken as independent (they are on different suites). A normal
    approximation: it orders snapshots, it certifies nothing (the confirmation split does).

    Why not "most rules passing": at an early step the general rules pass trivially (nothing has moved) while the domain
    rule is inconclusive, and at a late one the domain passes and a general rule sits near its margin; counting passes
    ties them and the noisier split decides. This weighs how far each rule is from its margin, in its own noise."""
    from statistics import NormalDist

    from ..gate.verdict import clears

    nd = NormalDist()
    z = nd.inv_cdf(1 - (1 - confidence) / 2)  # the CI's (two-sided) quantile: its half-width is z x se
    z1 = nd.inv_cdf(confidence)  # the gate's one-sided bound
    p = 1.0
    for r in rules:
        imp, lo, hi, thr = r.get("improvement"), r.get("ci_low"), r.get("ci_high"), r.get("threshold")
        if not all(isinstance(x, (int, float)) and math.isfinite(x) for x in (imp, lo, hi, thr)):
            return 0.0
        se = (hi - lo) / (2 * z)
        n, n_conf = r.get("n"), r.get("confirmation_n")
        if isinstance(n, int) and isinstance(n_conf, int) and n > 0 and n_conf > 0:
            se *= math.sqrt(n / n_conf)
        if se <= 0:  # no spread: the bound is the estimate, decided as the gate decides it
            p *= 1.0 if clears(r.get("kind"), imp, thr) else 0.0
            continue
        p *= nd.cdf((imp - thr) / se - z1)
    return p


def choose(curve: list[dict], by: str = "pass_chance") -> dict:
    """The snapshot to register. ``pass_chance``: the largest :func:`pass_chance`, then the largest primary gain (the first
    min_gain rule's oriented improvement), then the earliest step. ``rules``: the gate's order on the selection split
    (most required rules passing, a passing verdict, the largest primary gain, the earliest step)."""
    def gain(c):
        return c["primary_gain"] if c["primary_gain"] is not None else float("-inf")

    if by == "rules":
        return max(curve, key=lambda c: (c["rules_passed"], c["verdict"] == "pass", gain(c), -c["step"]))
    return max(curve, key=lambda c: (round(c.get("pass_chance") or 0.0, 6), gain(c), -c["step"]))


def _loss_at(snap: Path):
    try:
        return read_json(snap / "step.json").get("metrics", {}).get("loss")
    except (OSError, LafError, ValueError):
        return None


def _register(reg, name: str, snap: Path, metrics_path: Path, manifest: dict):
    adapter_config = metrics_path.parent / "adapter_config.json"
    with tempfile.TemporaryDirectory(prefix="laf-snapshot-") as tmp_name:
        tmp = Path(tmp_name)
        for p in snap.iterdir():
            if p.is_file() and not p.is_symlink() and p.name != "step.json":
                shutil.copyfile(p, tmp / p.name)
        if adapter_config.is_file():  # the registered run's (the machine-specific base path already replaced)
            shutil.copyfile(adapter_config, tmp / "adapter_config.json")
        if metrics_path.is_file():
            shutil.copyfile(metrics_path, tmp / metrics_path.name)
        clean = {k: v for k, v in manifest.items() if k not in ("name", "version", "ref", "files", "manifest_sha256")}
        return reg.register(name, tmp, clean)


def selection_markdown(doc: dict) -> str:
    """The found-vs-lost curve over the snapshots as a Markdown table (appended to the run's summary.md)."""
    curve = doc.get("curve") or []
    if not curve:
        return ""
    from ..present import markdown_table, md_escape

    labels = [r["target"] + " " + r["metric"] for r in curve[0]["rules"]]
    out = ["", f"### Checkpoint selection: {md_escape(doc.get('adapter'))} is step {doc.get('chosen_step')} (chosen on the selection split; "
           "the verdict above is on the confirmation split)", ""]
    rows = []
    for c in curve:
        cells = []
        for r in c["rules"]:
            d, imp = r.get("delta"), r.get("improvement")
            if d is None or imp is None or r.get("ci_low") is None:
                cells.append("–")
                continue
            sign = 1.0 if abs(d - imp) <= 1e-12 else -1.0  # the CI is of the oriented improvement; shown as the metric's own change
            a, b = sorted((sign * r["ci_low"], sign * r["ci_high"]))
            cells.append(f"{d:+.3f} ({a:+.3f} to {b:+.3f})")
        chance = c.get("pass_chance")
        chance_cell = f"{100 * chance:.0f} %" if isinstance(chance, (int, float)) and math.isfinite(chance) else "–"
        rows.append([str(c["step"]), *cells, f"{c['rules_passed']}/{len(c['rules'])}", chance_cell, "chosen" if c["step"] == doc.get("chosen_step") else ""])
    out += markdown_table(["step", *[f"{x} change (95 % CI)" for x in labels], "rules passed", "predicted chance to pass", ""], rows)
    return "\n".join(out) + "\n"
