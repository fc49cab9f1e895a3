"""One rich progress display on stderr for training and evaluation (``laf train``, ``laf eval``, ``laf run``)."""

from __future__ import annotations

import time

from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .output import err_console


class StageProgress:
    """Training: step, loss, learning rate, tokens/s, ETA. Evaluation: one bar per (model, suite) with requests/s and cache hits."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(bar_width=24),
            MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=err_console,
            disable=not enabled,
        )
        self.train_task = None
        self.eval_tasks: dict = {}
        self.started: dict = {}

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def log(self, msg: str) -> None:
        if not msg[:1].isspace():  # a new stage: the next training (a sweep's next point) gets its own bar, time and ETA
            self.train_task = None
        if self.enabled:
            self.progress.console.print(escape(msg))

    def train_update(self, event) -> None:
        m = event.metrics
        info = f"loss {m['loss']:.4f}  lr {m['lr']:.2e}  {m['tokens_per_s']:.0f} tok/s"
        if "eval_loss" in m:
            info += f"  held-out {m['eval_loss']:.4f}"
        if self.train_task is None:
            self.train_task = self.progress.add_task("[bold]train[/]", total=event.total_steps, info=info, completed=event.step - 1)
        self.progress.update(self.train_task, completed=event.step, info=info)

    def eval_update(self, model: str, suite: str, done: int, total: int, hits: int) -> None:
        key = (model, suite)
        if key not in self.eval_tasks:
            self.eval_tasks[key] = self.progress.add_task(f"{escape(model)} · {escape(suite)}", total=total, info="")
            self.started[key] = (time.perf_counter(), done)
        t0, d0 = self.started[key]
        dt = time.perf_counter() - t0
        rate = f"{(done - d0) / dt:.1f} req/s  " if dt > 0.5 and done > d0 else ""
        self.progress.update(self.eval_tasks[key], completed=done, total=total, info=f"{rate}cache {hits}")
