"""Merging LoRA adapters on their exact updates dW = scale * B @ A (``laf merge``).

``merge_adapters(MergeConfig)`` is the one entry point: it checks the config
and the inputs, merges module by module, and registers the merged adapter
(with its lineage) or writes a full model folder. Imports are lazy so that
reading a config (``harness.merge.config``) loads no torch.
"""

from __future__ import annotations

_EXPORTS = {
    "METHODS": "config",
    "MergeConfig": "config",
    "OutputConfig": "config",
    "check_method_params": "config",
    "MergeResult": "engine",
    "merge_adapters": "engine",
    "family_tree": "lineage",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"{__name__}.{_EXPORTS[name]}"), name)
    raise AttributeError(name)
