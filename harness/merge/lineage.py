"""The family tree of a merged adapter, from the lineage its manifest records.

A merge records each parent by reference (ref, weight and config digests,
base fingerprint, kind, rank, weight) with a summary of the parent's own
lineage (method, parameters, output figures, and the grandparents by
reference): see :func:`lineage_summary`. Earlier manifests embedded every
ancestor's whole lineage, which doubled with every merge of [m, m]; they are
still drawn as they are. Deeper generations are followed through the registry
when it still holds the recorded version with the recorded weight digest, so
the tree can still be drawn (one level deep) when a parent was deleted. Each
adapter's parents are drawn once ("parents shown above" after that) and the
tree has at most MAX_TREE_LINES lines, whatever a manifest claims. A manifest
is untrusted: a damaged entry is one line naming `laf registry verify`, never
a crash.
"""

from __future__ import annotations

import math

from ..errors import LafError
from ..registry import AdapterEntry, Registry

MAX_TREE_LINES = 500

# what a parent's record keeps of the parent's own lineage: how it was made, and its parents by reference
_SUMMARY_KEYS = ("method", "params", "layers")
_PARENT_REF_KEYS = ("ref", "weights_sha256", "config_sha256", "base_fingerprint", "kind", "rank", "scale", "weight")


def lineage_summary(lineage: dict) -> dict:
    """A parent's lineage as a merge of it records it: its method, parameters and output figures, and its own
    parents by reference (ref, digests, kind, rank, weight) without their lineage, which their registered
    manifests hold. Embedding whole lineages doubled the manifest with every merge of [m, m]; this keeps a
    manifest's size bounded by its parents and grandparents (``family_tree`` follows deeper generations through
    the registry)."""
    out = {k: lineage[k] for k in _SUMMARY_KEYS if k in lineage}
    o = lineage.get("output")
    if isinstance(o, dict):
        out["output"] = {k: v for k, v in o.items() if k != "relative_error"}
        err = o.get("relative_error")
        if isinstance(err, dict):
            out["output"]["relative_error"] = {k: v for k, v in err.items() if k != "per_module"}
    parents = lineage.get("parents")
    if isinstance(parents, list):
        out["parents"] = [{k: p[k] for k in _PARENT_REF_KEYS if k in p} if isinstance(p, dict) else p for p in parents]
    return out



def _num(v, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) else str(v)


def _compact(value) -> str:
    """t as written in a config, short: 0.5, [0, 0.5, 1], or self_attn:[0, 1] mlp:[1, 0] *:0.5."""
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return " ".join(f"{c.get('filter') or '*'}:{_compact(c.get('value'))}" if isinstance(c, dict) else str(c) for c in value)
    if isinstance(value, list):
        return "[" + ", ".join(_num(v, "g") for v in value) + "]"
    return _num(value, "g") if isinstance(value, float) else str(value)


def _obj(v) -> dict:
    return v if isinstance(v, dict) else {}


def _describe(lineage: dict) -> str:
    p = dict(_obj(lineage.get("params")))
    method = p.pop("method", lineage.get("method"))
    shown = ", ".join(f"{k}={_compact(v)}" for k, v in p.items() if k != "weights")
    out = _obj(lineage.get("output"))
    if out.get("kind") == "adapter":
        raw = _obj(out.get("relative_error")).get("max")
        err = float(raw) if isinstance(raw, (int, float)) and not isinstance(raw, bool) and math.isfinite(raw) else None
        if out.get("exact"):
            form = f"exact, rank {out.get('rank')}" + (f", max rel. error {err:.1e}" if err is not None and err > 0 else "")
        else:
            form = f"rank {out.get('rank')}, max rel. error {err:.2e}" if err is not None else f"rank {out.get('rank')}"
            if out.get("approximate"):
                form += ", approximate merge"
        shown = f"{shown}; {form}" if shown else form
    return f"merge {method}" + (f" ({shown})" if shown else "")


def family_tree(ref: str, manifest: dict, registry: Registry | None = None) -> list[str]:
    """Lines of text: the adapter, then its parents (recursively), with digests and weights."""
    lineage = manifest.get("lineage")
    if not lineage:
        return [f"{ref}  (trained)"]
    if not isinstance(lineage, dict):
        return [f"{ref}  (damaged lineage: not an object; run `laf registry verify {ref}`)"]
    lines = [f"{ref}  {_describe(lineage)}"]
    expanded = {ref}
    found: dict[str, AdapterEntry | None] = {}

    def registered(r: str) -> AdapterEntry | None:
        if registry is None:
            return None
        if r not in found:
            try:
                found[r] = registry.resolve(r)
            except LafError:
                found[r] = None
        return found[r]

    def status(p: dict) -> tuple[str, AdapterEntry | None]:
        """The note after a parent's line, and its registered entry when that still holds the recorded weights."""
        if registry is None:
            return "", None
        entry = registered(p["ref"])
        if entry is None:
            return "  [not in this registry]", None
        if _obj(entry.manifest.get("files")).get("adapter_model.safetensors") != p.get("weights_sha256"):
            return "  [registry copy differs from the recorded digest]", None
        return "", entry

    def walk(lin: dict, prefix: str, label: str) -> None:
        parents = lin.get("parents")
        if parents is None:
            return
        if not isinstance(parents, list):
            lines.append(f"{prefix}└── (damaged lineage of {label}: parents is not a list; run `laf registry verify {label}`)")
            return
        for i, p in enumerate(parents):
            if len(lines) >= MAX_TREE_LINES:
                raise _Full
            last = i == len(parents) - 1
            branch = "└── " if last else "├── "
            if not isinstance(p, dict) or not isinstance(p.get("ref"), str):
                lines.append(f"{prefix}{branch}(damaged parent entry in the lineage of {label}; run `laf registry verify {label}`)")
                continue
            note, entry = status(p)
            own = p.get("lineage") if isinstance(p.get("lineage"), dict) else None
            if own is None and p.get("kind") == "merge" and entry is not None and isinstance(entry.manifest.get("lineage"), dict):
                own = entry.manifest["lineage"]  # recorded by reference: its registered manifest has it
            weight = f"  weight {p['weight']}" if "weight" in p else ""
            digest = str(p.get("weights_sha256") or "?")[:16]
            kind = _describe(own) if own else f"{p.get('kind') or 'adapter'}, rank {p.get('rank')}"
            again = own is not None and p["ref"] in expanded
            lines.append(f"{prefix}{branch}{p['ref']}  {kind}{weight}  sha256:{digest}...{note}" + ("  (parents shown above)" if again else ""))
            if own is not None and not again:
                expanded.add(p["ref"])
                walk(own, prefix + ("    " if last else "│   "), p["ref"])

    try:
        walk(lineage, "", ref)
    except _Full:
        lines.append(f"... (the tree is cut at {MAX_TREE_LINES} lines; `laf registry show REF --json` has the recorded lineage)")
    return lines


class _Full(Exception):
    """The tree reached MAX_TREE_LINES."""
