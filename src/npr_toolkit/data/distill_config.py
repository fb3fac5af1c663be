"""Options of one ``npr-data distill`` run (the CLI flags, one to one), validated at the boundary."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from npr_toolkit.format import get_profile

Policy = Literal["first", "shortest", "most-parallel"]


def _default_workers() -> int:
    return max(1, min(4, (os.cpu_count() or 2) - 1))


class DistillConfig(BaseModel):
    """Options of one ``npr-data distill`` run: each field is a flag (``--per-problem``), its description the help."""

    model_config = ConfigDict(frozen=True)
    problems: Path = Field(description="Problems JSONL: {id, problem, answer[, source]}.")
    out: Path = Field(description="Output Beta SFT JSONL (also OUT.report.json, OUT.work/).")
    rollouts: Path | None = Field(None, description="NPR-Zero rollouts: {id, problem_id, prompt, completion}.")
    model: str | None = Field(None, description="Sample the rollouts with this model (folder or hub id) instead.")
    samples: int | None = Field(None, ge=1, description="With --model: samples per problem and round.")
    profile: str = Field("strict", description="Format profile the samples must pass: strict, lenient, npr-compat.")
    select: Policy = Field("first", description="Which accepted samples to keep: first, shortest or most-parallel.")
    per_problem: int = Field(1, ge=1, description="Accepted samples kept per problem.")
    max_tries: int = Field(8, ge=1, description="With --model: sampling rounds per problem at most.")
    workers: int = Field(
        default_factory=_default_workers,
        ge=0,
        description="Worker processes that check and grade (0: in-process; default: cores - 1, max 4).",
    )
    grade_timeout: float = Field(5.0, gt=0.0, description="Seconds to grade one answer before it is a timeout.")
    min_width: int = Field(1, ge=1, description="Reject a sample with a block narrower than N.")
    require_parallel: bool = Field(False, description="Reject a sample with no block of width >= 2.")
    seed: int = Field(0, description="With --model: sampling seed (each problem and round derives its own).")
    prompt_file: Path | None = Field(None, description="With --model: prompt template with {problem}.")
    save_to_disk: Path | None = Field(None, description="Also save the corpus as a `datasets` folder here.")
    engine: Literal["torch", "sglang", "openai"] = "torch"
    server: str | None = None
    device: str | None = None
    max_new_tokens: int = Field(1024, ge=1)
    temperature: float = Field(1.0, ge=0.0)

    @model_validator(mode="after")
    def _one_source(self) -> DistillConfig:
        if (self.rollouts is None) == (self.model is None):
            raise ValueError("give exactly one of --rollouts or --model")
        if self.model is not None and self.samples is None:
            raise ValueError("--model needs --samples K (samples per problem and round)")
        if self.rollouts is not None:
            for flag, value in (("--samples", self.samples), ("--prompt-file", self.prompt_file)):
                if value is not None:
                    raise ValueError(f"{flag} applies to --model only (rollouts carry their own prompts)")
        return self

    @field_validator("profile")
    @classmethod
    def _known_profile(cls, value: str) -> str:
        get_profile(value)  # unknown: a ValueError naming the choices
        return value

    @property
    def report_path(self) -> Path:
        return Path(f"{self.out}.report.json")

    @property
    def work_dir(self) -> Path:
        return Path(f"{self.out}.work")

    @property
    def rollouts_path(self) -> Path:
        """Where ``--model`` runs write every sample they drew, as docs/design.md §6 rollout records."""
        return Path(f"{self.out}.rollouts.jsonl")
