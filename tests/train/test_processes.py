"""What the stages do differently on the processes of an ``accelerate launch`` that are not the main one.

(The launched runs themselves are test_multiprocess.py's.)
"""

from __future__ import annotations

import logging
import warnings
from types import SimpleNamespace

import pytest

from npr_toolkit.train.processes import main_process, quiet_replicas


@pytest.mark.parametrize(
    ("variable", "value", "main"), [("RANK", "0", True), ("RANK", "1", False), ("PMI_RANK", "3", False)]
)
def test_the_main_process_is_global_rank_0_of_the_launcher(monkeypatch, variable, value, main):
    for name in ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK"):
        monkeypatch.delenv(name, raising=False)
    assert main_process()  # not launched: the only process
    monkeypatch.setenv(variable, value)
    assert main_process() is main


def test_replicas_keep_the_project_warnings_to_the_main_process(monkeypatch):
    import datasets

    project = logging.getLogger("npr_toolkit")
    monkeypatch.setattr(project, "level", project.level)  # restored after the test
    bars = datasets.is_progress_bar_enabled()
    with warnings.catch_warnings():  # restores the warning filters
        quiet_replicas(SimpleNamespace(process_index=0))
        assert project.getEffectiveLevel() <= logging.WARNING and datasets.is_progress_bar_enabled() == bars
        quiet_replicas(SimpleNamespace(process_index=1))
        assert project.getEffectiveLevel() == logging.ERROR and not datasets.is_progress_bar_enabled()
        assert any(f[0] == "ignore" and f[3] is not None and f[3].match("npr_toolkit.engine") for f in warnings.filters)
    if bars:
        datasets.enable_progress_bars()
