"""The progress bar of long commands: shown on a terminal (count, rate, ETA), silent otherwise."""

from __future__ import annotations

import io

import pytest
from rich.console import Console

from npr_toolkit.cli import progress


def test_on_a_terminal_the_bar_shows_count_rate_and_eta(monkeypatch: pytest.MonkeyPatch):
    screen = io.StringIO()
    monkeypatch.setattr(progress, "err_console", Console(file=screen, force_terminal=True, width=120))
    with progress.Bar("validate", "records") as bar:
        assert bar.shown
        bar(3, 10)  # the first update is where this run starts counting its rate
        bar(7, 10)
    shown = screen.getvalue()
    assert "validate" in shown and "7/10" in shown and "records/s" in shown and "eta" in shown


def test_elsewhere_nothing_is_drawn(monkeypatch: pytest.MonkeyPatch):
    screen = io.StringIO()
    monkeypatch.setattr(progress, "err_console", Console(file=screen, force_terminal=False))
    with progress.Bar("distill", "samples") as bar:
        bar(5, 10)
    assert not bar.shown and screen.getvalue() == ""
