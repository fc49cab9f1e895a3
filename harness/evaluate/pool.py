"""The base model, loaded on the first cache miss and shared by every model of the run."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from ..models import LoadSpec, load_model
from ..registry import AdapterEntry
from .lm import HarnessLM, RequestStats
from .spec import EvalSpec


@dataclass
class ModelRun:
    """One model scored in the run: the base (no adapter) or an adapter on it."""

    label: str
    identity: str
    adapter: AdapterEntry | None
    stats: RequestStats = field(default_factory=RequestStats)


class ModelPool:
    """Adapters are hot-swapped onto the one base (PeftModel load_adapter / set_adapter); the base is
    scored with no adapter attached. A run served entirely from the cache loads nothing."""

    def __init__(self, resolved, load: LoadSpec, spec: EvalSpec, log: Callable[[str], None]):
        self.resolved, self.load, self.spec, self.log = resolved, load, spec, log
        self.lm: HarnessLM | None = None
        self.base_model = None
        self.peft = None
        self.loaded_adapters: set[str] = set()
        self.applied: dict[str, dict] = {}  # run label -> the "adapter is applied" figure (applied.py), checked on load
        self.current: tuple[ModelRun, int] | None = None

    @property
    def loaded(self) -> bool:
        return self.lm is not None

    def select(self, run: ModelRun, index: int) -> None:
        self.current = (run, index)
        if self.lm is not None:
            self._activate()

    def backend(self) -> HarnessLM:
        if self.lm is None:
            self.log(f"loading {self.resolved.spec} ({self.load.precision})")
            self.base_model, tok, self.load = load_model(self.resolved, self.load)
            self.lm = HarnessLM(self.base_model, tok, batch_size=self.spec.batch_size, max_length=self.spec.max_length, share_context=self.spec.share_context)
            self._activate()
        return self.lm

    def _activate(self) -> None:
        run, index = self.current
        if run.adapter is None:
            if self.peft is not None:
                self.peft.base_model.disable_adapter_layers()
            return
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
