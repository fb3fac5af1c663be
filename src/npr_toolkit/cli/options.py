"""Options shared by several commands, each declared once: its flag, its choices and its help.

A command whose options are a config's fields gets these by field name (``command.config_options``);
the others name them in their signature. Defaults and limits are not here: they belong to the config
or the library call the option feeds.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from npr_toolkit.format import ProfileName

OutputFormat = Annotated[
    Literal["text", "json"],
    typer.Option("--format", help="Output: text (tables for people) or json (one document on stdout, for machines)."),
]
Model = Annotated[str, typer.Option("--model", help="Model folder or hub id (its tokenizer too).")]
Engine = Annotated[
    Literal["torch", "sglang", "openai"],
    typer.Option(
        "--engine",
        help="Decoding backend: torch (in this process, exact for every checkpoint), sglang (an SGLang server's "
        "/generate) or openai (an OpenAI-compatible server's /v1/completions, e.g. vLLM); the servers re-read the "
        "branches at a join, exact for checkpoints trained with the reprefill semantics.",
    ),
]
Server = Annotated[
    str | None,
    typer.Option("--server", help="With --engine sglang or openai: the server's URL (SGLang, vLLM or `npr serve`)."),
]
AllowApproximate = Annotated[
    bool,
    typer.Option(
        "--allow-approximate",
        help="Decode a checkpoint with an engine that is not exact for its semantics (a canonical checkpoint on a "
        "server: its joins are re-read, an approximation; bench/RESULTS.md measures it).",
    ),
]
Device = Annotated[str | None, typer.Option("--device", help="torch device (default: cuda if available, else cpu).")]
MaxNewTokens = Annotated[int, typer.Option("--max-new-tokens", help="Token budget of a sample's critical path.")]
Temperature = Annotated[float, typer.Option("--temperature", help="Sampling temperature (0: greedy).")]
TopP = Annotated[float, typer.Option("--top-p", help="Nucleus sampling mass, in (0, 1].")]
Seed = Annotated[
    int | None, typer.Option("--seed", help="Seed: the same seed gives the same samples (each derives its own).")
]
Profile = Annotated[
    ProfileName, typer.Option("--profile", help="Format profile: which rules apply (see the README's table).")
]
PromptFile = Annotated[
    Path | None, typer.Option("--prompt-file", help="Prompt template with {problem} (default: the NPR instruction).")
]
Tokenizer = Annotated[
    str | None,
    typer.Option("--tokenizer", help="Count tokens of this tokenizer (folder or hub id) instead of characters."),
]

SHARED: dict[str, Any] = {  # config field name -> its shared option
    "model": Model,
    "engine": Engine,
    "server": Server,
    "allow_approximate": AllowApproximate,
    "device": Device,
    "max_new_tokens": MaxNewTokens,
    "temperature": Temperature,
    "top_p": TopP,
    "seed": Seed,
    "profile": Profile,
    "prompt_file": PromptFile,
    "tokenizer": Tokenizer,
}
