"""Record shapes (docs/design.md §6) as pydantic models: problems, rollouts, NPR-Beta SFT examples."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator


class Problem(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    problem: str
    answer: str

    @field_validator("id", "answer", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value

    @field_validator("problem", "answer")
    @classmethod
    def _non_empty(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value


class Rollout(BaseModel):
    model_config = ConfigDict(extra="allow")
    id: str
    problem_id: str
    prompt: str
    completion: str
    answer: str | None = None
    meta: dict[str, Any] = Field(default_factory=dict)

    @field_validator("id", "problem_id", mode="before")
    @classmethod
    def _as_text(cls, value: Any) -> Any:
        return str(value) if isinstance(value, int) and not isinstance(value, bool) else value


class Message(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class BetaExample(BaseModel):
    """One NPR-Beta SFT example in TRL's conversational format (``SFTTrainer`` reads it as is)."""

    id: str
    messages: list[Message]
    answer: str
    stats: dict[str, Any] = Field(default_factory=dict)


def describe_error(error: ValidationError) -> str:
    """A one-line summary of a pydantic error naming the fields, for file:line reports."""
    parts = []
    for item in error.errors():
        field = ".".join(str(p) for p in item["loc"]) or "record"
        parts.append(f"field {field!r}: {item['msg'].lower()}")
    return "; ".join(parts)
