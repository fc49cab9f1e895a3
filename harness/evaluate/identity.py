"""Model identities: what a cached response is keyed on, and which adapters may be scored on which base.

A model's identity hashes the base's content fingerprint, how it was loaded,
the adapter's weights and config, and every scoring setting that changes a
number (batch size, max length, shared contexts, the scoring version), so two
models never share a cached answer and a changed setting never reuses one.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

from ..errors import LafError
from ..io import sha256_file, sha256_json
from ..models import LoadSpec
from ..registry import AdapterEntry, Registry
from ..registry.merge_info import merge_summary
from .spec import EvalSpec

SCORING_VERSION = "laf-scoring-1"
PROBE_VERSION = "laf-probe-1"  # the "adapter is applied" check (applied.py); here, torch-free, for the cache key of its figure
PROBE_TOLERANCE = 1e-5  # max |delta logit| at or below this: the adapter does not change the model
VOLATILE_ADAPTER_KEYS = ("base_model_name_or_path", "revision", "inference_mode", "peft_version")


@dataclass(frozen=True)
class CheckedAdapter:
    """A registered adapter that matches its manifest, with its content identity."""

    entry: AdapterEntry
    identity: dict  # weights_sha256 + the PEFT config without volatile keys
    forced_base_mismatch: bool  # trained on another base, scored anyway (--force-base-mismatch)


def is_full_model(entry: AdapterEntry) -> bool:
    """A registered full fine-tune (``method: full``): a whole model folder, scored by swapping the base's weights."""
    return entry.manifest.get("kind") == "full"


def adapter_identity(entry: AdapterEntry) -> dict:
    if is_full_model(entry):  # the weights and the architecture config (its volatile keys are the loader's, not the model's)
        try:
            config = json.loads((entry.path / "config.json").read_text(encoding="utf-8"))
            if not isinstance(config, dict) or not (entry.path / "model.safetensors").is_file():
                raise ValueError("no config object or no model.safetensors")
        except (OSError, ValueError, UnicodeDecodeError) as e:
            raise LafError(f"{entry.ref} says it is a full fine-tune (kind: full) but its folder is not a model folder ({e})",
                           "retrain it with method: full, or remove the version from the registry") from None
        return {"weights_sha256": sha256_file(entry.path / "model.safetensors"), "kind": "full",
                "config": {k: v for k, v in sorted(config.items()) if k not in ("transformers_version", "_name_or_path")}}
    weights = entry.path / "adapter_model.safetensors"
    config = json.loads((entry.path / "adapter_config.json").read_text())
    return {
        "weights_sha256": sha256_file(weights),
        "config": {k: v for k, v in sorted(config.items()) if k not in VOLATILE_ADAPTER_KEYS},
    }


def model_identity(base_fp: str, load: LoadSpec, adapter: dict | None, spec: EvalSpec) -> str:
    return sha256_json({
        "base": base_fp,
        "load": {"precision": load.precision, "compute_dtype": load.compute_dtype, "device": load.device.split(":")[0]},
        "adapter": adapter,
        "batch_size": spec.batch_size,
        "max_length": spec.max_length,
        "share_context": spec.share_context,
        "scoring": SCORING_VERSION,
    })


def check_adapters(spec: EvalSpec, base_fp: str, resolved=None) -> list[CheckedAdapter]:
    """Every adapter resolved, verified against its manifest and checked to be trained on this base."""
    registry = Registry(spec.registry)
    out = []
    for ref in spec.adapters:
        entry = registry.resolve(ref)
        check = registry.verify(entry.ref)
        if not check.ok:
            bad = ", ".join(check.mismatched + check.missing + check.unexpected)
            raise LafError(
                f"adapter {entry.ref} does not match its manifest ({bad}): its weights changed since it was registered",
                f"run `laf registry verify {entry.ref}`; retrain or restore the files",
            )
        merge_summary(entry.manifest, str(entry.ref))  # a merged adapter whose manifest contradicts itself: refused before loading
        trained_on = (entry.manifest.get("base_model") or {}).get("fingerprint")
        forced = False
        # an adapter registered before fingerprints ignored loader flags carries the old form (``fingerprint_aliases``)
        if trained_on != base_fp and not (resolved is not None and resolved.is_base_of(trained_on)):
            if not spec.force_base_mismatch:
                raise LafError(
                    f"adapter {entry.ref} was trained on base {str(trained_on)[:16]}... "
                    f"({(entry.manifest.get('base_model') or {}).get('spec')}), not on {spec.model} ({base_fp[:16]}...)",
                    "evaluate it with the base it was trained on, or pass --force-base-mismatch (the results will say so)",
                )
            forced = True
        if is_full_model(entry) and spec.precision == "nf4":
            raise LafError(f"{entry.ref} is a full fine-tune ({(entry.manifest.get('load') or {}).get('precision')} weights); scoring it on a 4-bit "
                           "base would re-quantise every weight it learned",
                           "evaluate it with --precision fp32 (or bf16, or auto), with the base at the same precision")
        out.append(CheckedAdapter(entry, adapter_identity(entry), forced))
    return out


def load_spec_for(spec: EvalSpec, adapters: list[CheckedAdapter]) -> LoadSpec:
    """The base's precision: as asked, or (``auto``) the one the adapters were trained on (QLoRA-faithful), else fp32."""
    if spec.precision != "auto":
        return LoadSpec(spec.precision, spec.compute_dtype, spec.device)
    loads = {json.dumps(a.entry.manifest.get("load", {}), sort_keys=True) for a in adapters}
    if len(loads) > 1:
        raise LafError(
            "the adapters were trained on differently loaded bases (" + "; ".join(sorted(loads)) + ")",
            "evaluate them in separate runs, or set --precision explicitly",
        )
    if loads:
        load = json.loads(loads.pop())
        return LoadSpec(load.get("precision", "fp32"), load.get("compute_dtype"), spec.device)
    return LoadSpec("fp32", None, spec.device)


def valid_figure(v) -> bool:
    """A cached figure has the shape :func:`check_applied` returns and passes the tolerance."""
    if not isinstance(v, dict):
        return False
    d = v.get("max_abs_delta_logit")
    return (isinstance(d, (int, float)) and not isinstance(d, bool) and math.isfinite(d) and d > PROBE_TOLERANCE
            and v.get("probe") == PROBE_VERSION and isinstance(v.get("modules"), int))
