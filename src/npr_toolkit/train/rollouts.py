"""Where the RL stages' rollouts come from: per-prompt seeds, and servers that hold the trainer's weights.

**Seeds.** ``rollout_seeds`` gives each prompt of a generation batch a seed derived from (run seed,
optimizer step, the prompt's GLOBAL position in the batch). A process holding positions
``process_index * local_count ...`` therefore samples exactly what one process holding the whole
batch samples, so a run's rollouts do not depend on how many processes share it.

**Server rollouts** (``rollout_engine: sglang | openai``, ``RolloutFields``): every process samples
its own prompts on the servers (``engine.sglang_engine`` / ``engine.openai_engine``, the samples spread
over them), and ``ServerRollouts.generate`` first makes sure the servers hold the weights being
trained. Whenever an optimizer step has changed them since the last push, the full state dict is
gathered (``accelerator.get_state_dict``: a collective under FSDP and ZeRO-3, so every process takes
part), the main process pushes it to every server (``engine.weight_sync``: through a shared folder
and ``/update_weights_from_disk``, or by broadcast in a torch.distributed group), and tells the other
processes the new ``weight_version`` (or the error). Every rollout must then come back with that
version, or the engine raises ``WeightVersionError``: a rollout of other weights is an error, never a
silent off-policy step. The first rollout pushes too, so the servers start from the trainer's weights
whatever they held before. Versions are ``<run id>-<optimizer step>``, unique to the run.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from accelerate.utils import broadcast_object_list
from transformers import TrainerCallback

from ..engine import Generation, SamplingParams
from ..engine.weight_sync import DiskWeightSync, DistributedWeightSync, WeightSyncError
from ..seeds import derive_seed

log = logging.getLogger(__name__)

ROLLOUT_ENGINES = ("torch", "sglang", "openai")
WEIGHT_SYNCS = ("disk", "distributed")


def rollout_seeds(seed: int, step: int, first: int, count: int) -> list[int]:
    """The sampling seeds of the prompts at global positions ``first .. first + count - 1`` of a step's batch.

    A process passes ``first = process_index * count``: the seeds, and so the samples, are those of a
    single process holding the whole batch; distinct positions and steps get distinct streams.
    """
    return [derive_seed("rollout", seed, step, position) for position in range(first, first + count)]


@dataclass
class RolloutFields:
    """Where an RL stage samples its rollouts (mixin of ``ZeroConfig`` and ``PAPOConfig``)."""

    rollout_engine: str = field(
        default="torch",
        metadata={
            "help": "Where rollouts are sampled: 'torch' (in the training process), 'sglang' (SGLang servers' "
            "/generate, or `npr serve`) or 'openai' (OpenAI-compatible servers' /v1/completions, e.g. vLLM, or "
            "`npr serve`). With a server engine the trained weights are pushed to every server before each rollout."
        },
    )
    rollout_servers: list[str] | None = field(
        default=None,
        metadata={"help": "Server URLs (same model on each); samples are spread over them (data-parallel rollouts)."},
    )
    weight_sync: str = field(
        default="disk",
        metadata={
            "help": "How weights reach the servers: 'disk' (safetensors in weight_sync_dir, then "
            "/update_weights_from_disk; works everywhere) or 'distributed' (a broadcast in a torch.distributed "
            "group with every server: /init_weights_update_group, /update_weights_from_distributed; NCCL on GPUs, "
            "gloo on CPU)."
        },
    )
    weight_sync_dir: str | None = field(
        default=None,
        metadata={"help": "weight_sync disk: a folder every server reads at the same path (a shared file system)."},
    )
    weight_sync_address: str = field(
        default="127.0.0.1",
        metadata={
            "help": "weight_sync distributed: this trainer's address as the servers reach it (the group's store)."
        },
    )
    allow_approximate: bool = field(
        default=False,
        metadata={
            "help": "PAPO: accept server rollouts for a model trained with canonical semantics (a server re-reads the "
            "branches at a join, which only reprefill models compute exactly)."
        },
    )

    def check_rollout_fields(self) -> None:
        """Raises ValueError naming the field for a rollout set-up that cannot work."""
        if self.rollout_engine not in ROLLOUT_ENGINES:
            raise ValueError(f"rollout_engine {self.rollout_engine!r}: choose one of {', '.join(ROLLOUT_ENGINES)}")
        if isinstance(self.rollout_servers, str):
            self.rollout_servers = [self.rollout_servers]
        servers = self.rollout_servers or []
        if self.rollout_engine == "torch":
            if servers:
                raise ValueError("rollout_servers are only used by rollout_engine sglang or openai (--engine)")
            return
        if not servers:
            raise ValueError(f"rollout_engine {self.rollout_engine} needs at least one server URL (--server URL)")
        if self.weight_sync not in WEIGHT_SYNCS:
            raise ValueError(f"weight_sync {self.weight_sync!r}: choose one of {', '.join(WEIGHT_SYNCS)}")
        if self.weight_sync == "disk" and not self.weight_sync_dir:
            raise ValueError(
                "weight_sync disk needs weight_sync_dir: a folder every server reads at the same path "
                "(--weight-sync-dir)"
            )

    @property
    def on_servers(self) -> bool:
        """Whether rollouts are sampled on servers (which then get the trained weights)."""
        return self.rollout_engine != "torch"


class ServerRollouts(TrainerCallback):
    """Rollouts on servers that hold the trainer's current weights (see the module doc).

    Built by the trainer on every process, before the trainer itself (an unreachable server fails
    first); only the main process holds the weight sync. Registered as a callback so the update group
    (``weight_sync: distributed``) is left when training ends.

    Args:
        config: the stage's config (``RolloutFields`` of a ``TrainingArguments``).
        model_name: the checkpoint the servers serve (its tokenizer and stop ids are the engine's).
    """

    def __init__(self, config: Any, model_name: str):
        from ..engine import load_engine

        if not model_name:
            raise ValueError(
                "server rollouts need the policy loaded from the checkpoint folder or hub id the servers serve"
            )
        # Exactness is the trainer's decision (PAPO checks the semantics it trains; Zero samples plain text).
        self.engine = load_engine(
            model_name, backend=config.rollout_engine, server_url=config.rollout_servers, allow_approximate=True
        )
        self.run = uuid.uuid4().hex[:8]  # the main process's names the versions
        self.sync: DiskWeightSync | DistributedWeightSync | None = None
        if config.process_index == 0:
            servers = list(config.rollout_servers or [])
            if config.weight_sync == "disk":
                self.sync = DiskWeightSync(servers, config.weight_sync_dir)
            else:
                self.sync = DistributedWeightSync(
                    servers, master_address=config.weight_sync_address, group_name=f"npr-{self.run}"
                )
        self.version: str | None = None
        self.pushed_at: int | None = None  # the optimizer step whose weights the servers hold

    def generate(
        self, trainer: Any, prompts: Sequence[str], params: SamplingParams, seeds: Sequence[int]
    ) -> list[Generation]:
        """Sample ``prompts`` on the servers with ``trainer``'s current weights (pushed first if they changed).

        Raises:
            WeightSyncError: a server did not take the weights.
            WeightVersionError: a rollout came back from other weights.
        """
        version = self.push(trainer)
        return self.engine.generate(prompts, params, seeds=seeds, weight_version=version)

    def push(self, trainer: Any) -> str:
        """Make every server hold the weights of ``trainer``'s current optimizer step; returns their version.

        Every process calls it at the same point: the state dict may be gathered collectively.
        """
        step = trainer.state.global_step
        if self.pushed_at == step and self.version is not None:
            return self.version
        weights = trainer.accelerator.get_state_dict(trainer.model_wrapped)  # FSDP, ZeRO-3: gathered whole
        outcome: list[str | None] = [None, None]  # [version, error]
        if self.sync is not None:
            try:
                outcome[0] = self.sync.push(weights, version=f"{self.run}-{step}")
            except WeightSyncError as error:
                outcome[1] = str(error)
        version, error = broadcast_object_list(outcome)  # from the main process to the others
        if error is not None or version is None:
            raise WeightSyncError(f"pushing the weights of step {step} to the rollout servers failed: {error}")
        log.debug("rollout servers hold weight_version %s", version)
        self.version, self.pushed_at = version, step
        return version

    def on_train_end(self, args, state, control, **kwargs):
        if self.sync is not None:
            self.sync.close()
