"""The base model, loaded on the first cache miss and shared by every model of the run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from ..models import LoadSpec, load_model
from ..registry import AdapterEntry
from .cache import RequestStats
from .spec import EvalSpec

if TYPE_CHECKING:
    from .lm import HarnessLM


@dataclass
class ModelRun:
    """One model scored in the run: the base (no adapter) or an adapter on it."""

    label: str
    identity: str
    adapter: AdapterEntry | None
    stats: RequestStats = field(default_factory=RequestStats)


class ModelPool:
    """Adapters are hot-swapped onto the one base (PeftModel load_adapter / set_adapter); the base is
    scored with no adapter attached. A full fine-tune (``method: full``) is a whole model: its weights are copied
    into the loaded base's modules (the same architecture, checked), and the base's own weights are put back before
    the base or an adapter is scored again. A run served entirely from the cache loads nothing."""

    def __init__(self, resolved, load: LoadSpec, spec: EvalSpec, log: Callable[[str], None]):
        self.resolved, self.load, self.spec, self.log = resolved, load, spec, log
        self.lm: HarnessLM | None = None
        self.base_model = None
        self.peft = None
        self.loaded_adapters: set[str] = set()
        self.applied: dict[str, dict] = {}  # run label -> the "adapter is applied" figure (applied.py), checked on load
        self.current: tuple[ModelRun, int] | None = None
        self.swapped: str | None = None  # the full fine-tune whose weights the base's modules hold now
        self._base_weights: dict | None = None

    @property
    def loaded(self) -> bool:
        return self.lm is not None

    def select(self, run: ModelRun, index: int) -> None:
        self.current = (run, index)
        if self.lm is not None:
            self._activate()

    def backend(self) -> HarnessLM:
        if self.lm is None:
            from .lm import HarnessLM

            self.log(f"loading {self.resolved.spec} ({self.load.precision})")
            self.base_model, tok, self.load = load_model(self.resolved, self.load)
            self.lm = HarnessLM(self.base_model, tok, batch_size=self.spec.batch_size, max_length=self.spec.max_length, share_context=self.spec.share_context,
                                share_preamble=self.spec.share_preamble)
            self._activate()
        return self.lm

    def _activate(self) -> None:
        run, index = self.current
        self.lm.model_key = run.identity  # preamble states belong to one model: a new key drops them
        full = run.adapter is not None and run.adapter.manifest.get("kind") == "full"
        if full or run.adapter is None:
            if self.peft is not None:
                self.peft.base_model.disable_adapter_layers()
            self._swap_weights(str(run.adapter.path) if full else None)
            return
        self._swap_weights(None)
        from peft import PeftModel

        name = f"adapter_{index}"
        from .applied import base_module_names, check_applied, check_files

        files = None
        if run.label not in self.applied:  # before PEFT sees the files: names that match nothing, all-zero B
            files = check_files(run.label, run.adapter.path, base_module_names(self.peft or self.base_model))
        if self.peft is None:
            self.peft = PeftModel.from_pretrained(self.base_model, str(run.adapter.path), adapter_name=name, is_trainable=False)
            self.lm._model = self.peft
        elif name not in self.loaded_adapters:
            self.peft.load_adapter(str(run.adapter.path), adapter_name=name, is_trainable=False)
        self.loaded_adapters.add(name)
        self.peft.base_model.enable_adapter_layers()
        self.peft.set_adapter(name)
        self.peft.eval()
        if files is not None:  # before the first item: an adapter that changes nothing is refused
            self.applied[run.label] = check_applied(run.label, self.peft, name, files, self.lm.tokenizer, self.lm.device)

    # -- full fine-tunes: the same architecture, other weights
    def _weight_params(self) -> dict:
        """name -> parameter of the plain model's own weights (PEFT's injected ``base_layer`` naming undone)."""
        out = {}
        for name, p in self.base_model.named_parameters():
            if "lora_" in name:
                continue
            out.setdefault(name.replace(".base_layer.", "."), p)
        return out

    def _swap_weights(self, folder: str | None) -> None:
        import torch
        from safetensors.torch import load_file

        from ..errors import LafError

        if folder == self.swapped:
            return
        params = self._weight_params()
        if self._base_weights is None and folder is not None:
            self._base_weights = {n: p.detach().clone() for n, p in params.items()}
        if folder is None:
            src = self._base_weights or {}
        else:
            try:
                src = load_file(f"{folder}/model.safetensors")
            except Exception as e:  # noqa: BLE001 - safetensors raises its own error types for a truncated or forged header
                raise LafError(f"the full model in {folder} cannot be read ({type(e).__name__}: {e})", "retrain it with method: full") from None
            tied = getattr(self.base_model.config, "tie_word_embeddings", False)
            missing = [n for n in params if n not in src and not (tied and n.endswith("lm_head.weight"))]
            extra = [n for n in src if n not in params]
            wrong = [n for n in params if n in src and tuple(src[n].shape) != tuple(params[n].shape)]
            if missing or extra or wrong:
                raise LafError(f"the full model in {folder} does not have the base's architecture (missing {missing[:3]}, unexpected {extra[:3]}, "
                               f"other shapes {wrong[:3]})", "score it against the base it was fine-tuned from")
        with torch.no_grad():
            for n, p in params.items():
                if n in src:
                    p.copy_(src[n].to(p.dtype))
        self.swapped = folder
