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


class EvalProgress:
    """One bar per (model, suite): requests done, requests/s, ETA, cache hits."""

    def __init__(self, enabled: bool = True):
        self.enabled = enabled
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TextColumn("cache {task.fields[hits]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=err_console,
            disable=not enabled,
        )
        self.tasks: dict = {}
        self.started: dict = {}

    def __enter__(self):
        self.progress.__enter__()
        return self

    def __exit__(self, *exc):
        return self.progress.__exit__(*exc)

    def log(self, msg: str) -> None:
        if self.enabled:
            self.progress.console.print(escape(msg))

    def update(self, model: str, suite: str, done: int, total: int, hits: int) -> None:
        import time

        key = (model, suite)
        if key not in self.tasks:
            self.tasks[key] = self.progress.add_task(f"{escape(model)} · {escape(suite)}", total=total, rate="", hits=0)
            self.started[key] = (time.perf_counter(), done)
        t0, d0 = self.started[key]
        dt = time.perf_counter() - t0
        rate = f"{(done - d0) / dt:.1f} req/s" if dt > 0.5 and done > d0 else ""
        self.progress.update(self.tasks[key], completed=done, total=total, rate=rate, hits=hits)
