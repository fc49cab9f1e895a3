"""rich progress displays for long stages (training, evaluation), on stderr."""

from __future__ import annotations

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .output import err_console


class TrainProgress:
    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("[bold]train[/]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=err_console,
            disable=not enabled,
        )
        self.task = None

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def log(self, msg: str) -> None:
        if self.enabled:
            self.progress.console.print(escape(msg))

    def update(self, event) -> None:
        m = event.metrics
        info = f"loss {m['loss']:.4f}  lr {m['lr']:.2e}  {m['tokens_per_s']:.0f} tok/s"
        if "eval_loss" in m:
            info += f"  eval {m['eval_loss']:.4f}"
        if self.task is None:
            self.task = self.progress.add_task("train", total=event.total_steps, info=info, completed=event.step - 1)
        self.progress.update(self.task, completed=event.step, info=info)
