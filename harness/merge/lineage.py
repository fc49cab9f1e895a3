"""The family tree of a merged adapter, from the lineage its manifest records.

The lineage is self-contained (each parent's own lineage is embedded), so the
tree can be drawn even when a parent was deleted; where the registry still
holds a parent, its weight digest is compared with the recorded one.
"""

from __future__ import annotations

from ..errors import LafError
from ..registry import Registry


def _compact(value) -> str:
    """t as written in a config, short: 0.5, [0, 0.5, 1], or self_attn:[0, 1] mlp:[1, 0] *:0.5."""
    if isinstance(value, list) and value and isinstance(value[0], dict):
        return " ".join(f"{c.get('filter') or '*'}:{_compact(c.get('value'))}" for c in value)
    if isinstance(value, list):
        return "[" + ", ".join(f"{v:g}" for v in value) + "]"
    return f"{value:g}" if isinstance(value, float) else str(value)


def _describe(lineage: dict) -> str:
    p = dict(lineage.get("params") or {})
    method = p.pop("method", lineage.get("method"))
    shown = ", ".join(f"{k}={_compact(v)}" for k, v in p.items() if k != "weights")
    out = lineage.get("output") or {}
    if out.get("kind") == "adapter":
        err = (out.get("relative_error") or {}).get("max")
        if out.get("exact"):
            form = f"exact, rank {out.get('rank')}" + (f", max rel. error {err:.1e}" if isinstance(err, (int, float)) and err > 0 else "")
        else:
            form = f"rank {out.get('rank')}, max rel. error {err:.2e}" if isinstance(err, (int, float)) else f"rank {out.get('rank')}"
            if out.get("approximate"):
                form += ", approximate merge"
        shown = f"{shown}; {form}" if shown else form
    return f"merge {method}" + (f" ({shown})" if shown else "")


def _parent_status(parent: dict, registry: Registry | None) -> str:
    if registry is None:
        return ""
    try:
        entry = registry.resolve(parent["ref"])
    except LafError:
        return "  [not in this registry]"
    now = (entry.manifest.get("files") or {}).get("adapter_model.safetensors")
    if now != parent.get("weights_sha256"):
        return "  [registry copy differs from the recorded digest]"
    return ""


def family_tree(ref: str, manifest: dict, registry: Registry | None = None) -> list[str]:
    """Lines of text: the adapter, then its parents (recursively), with digests and weights."""
    lines = [f"{ref}  {_describe(manifest['lineage'])}" if manifest.get("lineage") else f"{ref}  (trained)"]

    def walk(lineage: dict, prefix: str) -> None:
        parents = lineage.get("parents") or []
        for i, p in enumerate(parents):
            last = i == len(parents) - 1
            branch = "└── " if last else "├── "
            weight = f"  weight {p['weight']}" if "weight" in p else ""
            digest = (p.get("weights_sha256") or "?")[:16]
            kind = _describe(p["lineage"]) if p.get("lineage") else f"{p.get('kind') or 'adapter'}, rank {p.get('rank')}"
            lines.append(f"{prefix}{branch}{p['ref']}  {kind}{weight}  sha256:{digest}...{_parent_status(p, registry)}")
            if p.get("lineage"):
                walk(p["lineage"], prefix + ("    " if last else "│   "))

    if manifest.get("lineage"):
        walk(manifest["lineage"], "")
    return lines
