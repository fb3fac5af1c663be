"""What a stage does differently when ``accelerate launch`` (or torchrun) runs it in several processes.

The trainers themselves are TRL's and transformers', which already shard the data, average the
gradients and gather what the advantage statistics need. What is left is the project's own output:
one report, one checkpoint, one set of warnings per run, all from the main process (global rank 0).
"""

from __future__ import annotations

import atexit
import functools
import logging
import warnings
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

RANK_VARIABLES = ("RANK", "PMI_RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK")  # accelerate's, in its order


def main_process() -> bool:
    """Whether this process is the run's main one, from the launcher's environment (True when not launched).

    Read from the environment, so it answers before (and without) any process group.
    """
    from accelerate.utils import get_int_from_env

    return get_int_from_env(list(RANK_VARIABLES), 0) == 0


def output_lock(out: str | Path) -> AbstractContextManager[None]:
    """For the whole run the main process holds ``OUT.lock`` (``data.io.exclusive``): a second run into
    the same folder is refused (exit 2) instead of writing its checkpoints over this one's. The other
    processes of this run take no lock.
    """
    from ..data.io import exclusive

    return exclusive(out, "--out") if main_process() else nullcontext()


@functools.cache  # registered once per process, however many runs it makes
def close_process_group_at_exit() -> None:
    """Destroy the run's process group when the process exits, while the interpreter is still whole.

    Nothing else does (accelerate, the Trainer), and a launched CPU run could then end in SIGABRT after its
    work was saved ("terminate called without an active exception": gloo's threads outliving the
    interpreter's teardown), which the launcher reports as a failed run. A single process has no group.
    """
    atexit.register(_destroy_process_group)


def _destroy_process_group() -> None:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def quiet_replicas(args: Any) -> None:
    """On every process but the main one, silence the project's warnings (logged, e.g. dropped records, or
    issued, e.g. a checkpoint without its semantics: the main process reports them once) and the
    ``datasets`` progress bars. ``args``: the stage's TrainingArguments."""
    if args.process_index == 0:
        return
    import datasets

    logging.getLogger("npr_toolkit").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", module=r"npr_toolkit\.")
    datasets.disable_progress_bars()


def save_once(trainer: Any, out: str) -> None:
    """Save model and tokenizer (every process takes part, FSDP and ZeRO-3 gather the weights; the main
    process writes) and the trainer state (main process), then wait: the folder is complete wherever this
    returns."""
    trainer.save_model(out)  # the weights, and the tokenizer (``processing_class``)
    trainer.save_state()
    trainer.accelerator.wait_for_everyone()
