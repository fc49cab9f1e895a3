"""Output for logs that nobody watches live: CI runners, ``| tee``, nohup.

A terminal gets the rich live display (:class:`~harness.cli.progress.StageProgress`).
Anything else gets :class:`LogProgress`: stage lines as they start, and one
plain progress line per ``LAF_PROGRESS_INTERVAL`` seconds (default 15) with
stage, model, suite, done/total, rate and ETA, as tqdm and pip write into
logs. A heartbeat thread repeats the last known state when no step or batch
has finished for a whole interval (model loading, one slow step), so a log is
never silent for longer than the interval. ``--quiet`` keeps the stage lines.

On GitHub Actions (``GITHUB_ACTIONS=true``) each stage of ``laf run`` is
folded in ``::group::``/``::endgroup::``, every failed required gate rule
becomes an ``::error::`` annotation and every failed advisory or inconclusive
rule a ``::warning::``, and the Markdown summary is appended to
``$GITHUB_STEP_SUMMARY``. Workflow commands go to stderr with the rest of the
progress, so ``--json`` keeps stdout pure JSON (the runner reads commands
from both streams).
"""

from __future__ import annotations

import math
import os
import threading
import time

from ..errors import LafError
from . import output

DEFAULT_INTERVAL_S = 15.0


# -- environment


def on_github_actions() -> bool:
    return os.environ.get("GITHUB_ACTIONS") == "true"


def progress_interval() -> float:
    raw = os.environ.get("LAF_PROGRESS_INTERVAL")
    if raw is None or not raw.strip():
        return DEFAULT_INTERVAL_S
    try:
        value = float(raw)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise LafError(f"LAF_PROGRESS_INTERVAL={raw!r} is not a positive number of seconds",
                       "set it to the seconds between progress lines in logs (e.g. 15), or unset it")
    return value


def interactive() -> bool:
    """A live display only where someone watches a real terminal (never on a CI runner)."""
    if on_github_actions():
        return False
    forced = os.environ.get("TTY_INTERACTIVE")
    if forced in ("0", "1"):
        return forced == "1"
    con = output.err_console
    return con.is_terminal and not con.is_dumb_terminal


def open_progress(quiet: bool, stages: bool = False):
    """The progress sink for ``laf train``, ``laf eval`` and ``laf run``: live on a terminal, plain lines elsewhere.

    ``stages`` marks ``laf run``, whose unindented log lines start stages (folded on GitHub Actions).
    """
    interval = progress_interval()  # a bad value fails before any work starts
    if not quiet and interactive():
        from .progress import StageProgress

        return StageProgress(enabled=True)
    return LogProgress(quiet=quiet, interval=interval, groups=stages and on_github_actions())


# -- workflow commands (https://docs.github.com/actions/reference/workflow-commands-for-github-actions)


def escape_data(s: str) -> str:
    return str(s).replace("%", "%25").replace("\r", "%0D").replace("\n", "%0A")


def escape_property(s: str) -> str:
    return escape_data(s).replace(":", "%3A").replace(",", "%2C")


def workflow_command(command: str, message: str, **props: str) -> str:
    p = ",".join(f"{k}={escape_property(v)}" for k, v in props.items())
    return f"::{command}{' ' + p if p else ''}::{escape_data(message)}"


def _emit(line: str) -> None:
    f = output.err_console.file
    f.write(line + "\n")
    f.flush()


# -- plain progress lines


def fmt_duration(seconds: float) -> str:
    s = round(max(0.0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{(s % 3600) // 60:02d}m"


class LogProgress:
    """Same interface as StageProgress (``log``, ``train_update``, ``eval_update``), written as plain lines."""

    def __init__(self, quiet: bool = False, interval: float = DEFAULT_INTERVAL_S, groups: bool = False):
        self.quiet = quiet
        self.interval = interval
        self.groups = groups
        self.lock = threading.RLock()
        self.t0 = time.monotonic()
        self.last_line = self.t0
        self.stage = ""
        self.stage_t0 = self.t0
        self.group_open = False
        self.current: tuple | None = None  # (key, done, total, describe) of the last update
        self.last_update = self.t0
        self.started: dict = {}
        self.finished: set = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self):
        if not self.quiet:
            self._thread = threading.Thread(target=self._heartbeat, name="laf-progress", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        with self.lock:
            self._close_group()
        return False

    # -- writing

    def _write(self, line: str) -> None:
        with self.lock:
            _emit(line)
            self.last_line = time.monotonic()

    def _stamp(self) -> str:
        return f"[{fmt_duration(time.monotonic() - self.t0):>6}]"

    def _close_group(self) -> None:
        if self.group_open:
            _emit("::endgroup::")
            self.group_open = False

    def log(self, msg: str) -> None:
        detail = msg[:1].isspace()
        with self.lock:
            if not detail:
                self.stage = msg.split(":", 1)[0].strip() or msg
                self.stage_t0 = time.monotonic()
                self.current = None
                # a new stage (a sweep trains one point after another under the same key) measures its own rate
                self.started.clear()
                self.finished.clear()
                if self.groups:
                    self._close_group()
                    self._write(workflow_command("group", msg))
                    self.group_open = True
                    return
            elif self.quiet:
                return
            self._write(msg)

    # -- progress

    def _update(self, key: tuple, done: int, total: int, describe: str, fmt_rate) -> None:
        now = time.monotonic()
        with self.lock:
            if key not in self.started:
                self.started[key] = (now, done)
            self.current = (key, done, total, describe, fmt_rate)
            self.last_update = now
            if self.quiet:
                return
            complete = bool(total) and done >= total and (key, total) not in self.finished
            if complete:
                self.finished.add((key, total))
            if complete or now - self.last_line >= self.interval:
                self._write(self._line(key, done, total, describe, fmt_rate, now))

    def _line(self, key, done, total, describe, fmt_rate, now) -> str:
        t_start, d_start = self.started[key]
        dt = now - t_start
        rate = (done - d_start) / dt if dt > 0 and done > d_start else None
        pct = f" ({100 * done / total:.0f}%)" if total else ""
        parts = [f"{self._stamp()} {self.stage or key[0]}: {describe} {done}/{total}{pct}"]
        extra = fmt_rate(rate)
        if extra:
            parts.append(extra)
        if total and done >= total:
            parts.append(f"done in {fmt_duration(dt)}")
        elif rate:
            parts.append(f"ETA {fmt_duration((total - done) / rate)}")
        idle = now - self.last_update
        if idle >= self.interval:
            parts.append(f"(no step finished for {fmt_duration(idle)})")
        return "  ".join(parts)

    def train_update(self, event) -> None:
        m = event.metrics

        def fmt_rate(rate):
            s = f"loss {m['loss']:.4f}  lr {m['lr']:.2e}  {m['tokens_per_s']:.0f} tok/s"
            if rate:
                s += f"  {1 / rate:.2f} s/step"
            if "eval_loss" in m:
                s += f"  held-out {m['eval_loss']:.4f}"
            return s

        self._update(("train",), event.step, event.total_steps, "step", fmt_rate)

    def eval_update(self, model: str, suite: str, done: int, total: int, hits: int) -> None:
        def fmt_rate(rate):
            return (f"{rate:.1f} req/s  " if rate else "") + f"cache {hits}"

        self._update(("eval", model, suite), done, total, f"{model} · {suite}", fmt_rate)

    def _heartbeat(self) -> None:
        while not self._stop.wait(min(1.0, self.interval / 2)):
            with self.lock:
                now = time.monotonic()
                if now - self.last_line < self.interval:
                    continue
                if self.current is not None:  # reset when a stage starts
                    key, done, total, describe, fmt_rate = self.current
                    self._write(self._line(key, done, total, describe, fmt_rate, now))
                else:
                    what = self.stage or "starting"
                    self._write(f"{self._stamp()} {what}: running for {fmt_duration(now - self.stage_t0)}")


# -- gate verdicts on GitHub Actions


def verdict_annotations(v, candidate: str | None = None) -> list[str]:
    """One workflow command per rule that did not pass: ::error:: for what decides the exit code, ::warning:: for the rest.

    ``candidate`` (a run that gated several candidates) prefixes every title and message with the candidate."""
    who = f" {candidate}" if candidate else ""
    pre = f"{candidate}: " if candidate else ""
    lines = [workflow_command("warning", pre + w, title=f"laf gate{who}") for w in v.warnings]
    inconclusive_fails = v.policy.get("inconclusive_as") == "fail"
    for r in v.rules:
        if r.status == "pass":
            continue
        decides = r.required and (r.status == "fail" or inconclusive_fails)
        kind = "required" if r.required else "advisory"
        title = f"laf gate{who} {r.status.upper()}: {r.rule}" + ("" if r.required else " (advisory)")
        msg = f"{pre}{r.status.upper()} ({kind} rule): {r.message}"
        lines.append(workflow_command("error" if decides else "warning", msg, title=title))
    return lines


def append_step_summary(markdown: str) -> str | None:
    """Append to $GITHUB_STEP_SUMMARY when it is set; returns a warning instead of failing the command."""
    path = os.environ.get("GITHUB_STEP_SUMMARY")
    if not path:
        return None
    try:
        with open(path, "a", encoding="utf-8") as f:
            f.write(markdown if markdown.endswith("\n") else markdown + "\n")
    except OSError as e:
        return f"could not append the summary to GITHUB_STEP_SUMMARY ({path}): {e.strerror or e}"
    return None


def report_verdict_to_ci(v, extra_markdown: str = "", candidate: str | None = None) -> None:
    """On GitHub Actions: annotations for the rules that did not pass, and the step summary (``candidate``: see
    :func:`verdict_annotations`; each candidate's summary is appended under its name)."""
    if not on_github_actions():
        return
    from ..gate.artifacts import markdown_summary

    for line in verdict_annotations(v, candidate):
        _emit(line)
    head = f"### Candidate `{candidate}`\n\n" if candidate else ""
    problem = append_step_summary(head + markdown_summary(v) + extra_markdown)
    if problem:
        _emit(workflow_command("warning", problem, title="laf"))
        from rich.markup import escape

        output.err_console.print(f"[bold yellow]warning:[/] {escape(problem)}")
