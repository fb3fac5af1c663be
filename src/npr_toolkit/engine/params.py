"""The engine protocol's data: sampling parameters in, generations out (shared by every backend)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

# "abort": ended by the caller (``TorchEngine.generate``'s ``on_step``), e.g. a server whose client left.
FinishReason = Literal["stop", "length", "malformed", "abort"]


class SamplingParams(BaseModel):
    """How to sample. Budgets are in tokens of the completion.

    ``max_new_tokens`` bounds the critical path (what a user waits for); ``max_total_tokens`` bounds
    all tokens of all branches (default ``max_new_tokens * max_width``).
    """

    model_config = ConfigDict(frozen=True)
    max_new_tokens: int = Field(1024, ge=1)
    temperature: float = Field(1.0, ge=0.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    top_k: int = Field(0, ge=0, description="0 = no top-k filtering")
    seed: int | None = None
    n: int = Field(1, ge=1)
    parallel: bool = Field(
        True, description="False: plain autoregressive decoding (the NPR-Zero / sequential baseline)"
    )
    serial_branches: bool = Field(False, description="decode sibling branches one after another (fair speed baseline)")
    max_width: int = Field(8, ge=1)
    max_depth: int = Field(1, ge=1, le=5)
    max_branch_tokens: int | None = Field(
        None,
        ge=4,
        description="per branch, header and </step> included; with nested blocks, counted along the "
        "branch's critical path (a nested block adds its longest branch)",
    )
    max_total_tokens: int | None = Field(None, ge=1)
    stop_token_ids: list[int] = Field(default_factory=list, description="extra ids that end a generation")

    @property
    def total_budget(self) -> int:
        return self.max_total_tokens or self.max_new_tokens * self.max_width


class GenerationStats(BaseModel):
    blocks: int = 0
    widths: list[int] = Field(default_factory=list)
    total_tokens: int = 0
    critical_path_tokens: int = 0
    wall_time: float = 0.0
    steps: int = 0


class Generation(BaseModel):
    """One sampled completion. ``logprobs[i]`` is None where the engine inserted token i."""

    prompt_ids: list[int]
    completion_ids: list[int]
    text: str
    logprobs: list[float | None]
    inserted: list[bool]
    finish_reason: FinishReason
    finish_detail: str | None = None
    stats: GenerationStats
    # The server's ``weight_version`` every request of this sample was answered with (SGLang's
    # ``meta_info.weight_version``); None for the in-process torch engine or a server that reports none.
    weight_version: str | None = None
