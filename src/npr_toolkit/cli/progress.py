"""The progress bar of long commands (validate, distill, generate): count, rate and ETA on stderr.

Shown only when stderr is a terminal, and gone when the work ends (the results follow). The rate
and ETA count from the first update: work an earlier, interrupted run did is not this run's speed.
"""

from __future__ import annotations

from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from .console import err_console


class _Rate(ProgressColumn):
    """Items per second in the command's unit (rich has only a bytes-per-second column)."""

    def __init__(self, unit: str):
        super().__init__()
        self.unit = unit

    def render(self, task: Task) -> Text:
        speed = f"{task.speed:,.1f}" if task.speed else "-"
        return Text(f"{speed} {self.unit}/s", style="progress.data.speed")


class Bar:
    """``with Bar("validate", "records") as bar: bar(done, total)`` (total None: not known yet)."""

    def __init__(self, label: str, unit: str):
        columns = (
            TextColumn(f"[bold]{label}"),
            BarColumn(),
            MofNCompleteColumn(),
            _Rate(unit),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
        )
        self.shown = err_console.is_terminal
        self._progress = Progress(*columns, console=err_console, transient=True, disable=not self.shown)
        self._task = self._progress.add_task(label, total=None)
        self._started = False

    def __call__(self, done: int, total: int | None = None) -> None:
        if not self._started:
            self._progress.reset(self._task, completed=done, total=total)
            self._started = True
        self._progress.update(self._task, completed=done, total=total)

    def __enter__(self) -> Bar:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()
