"""``npr generate`` and ``npr serve``: sample with the parallel engine; serve a model (OpenAI and SGLang APIs).

npr generate --model runs/sft --prompt "Compute: (1+2)+(3+4)" --n 2
npr generate --model runs/sft --prompts problems.jsonl --json > samples.jsonl
npr generate --model runs/sft --engine sglang --server http://127.0.0.1:30000 --prompt "..."
npr serve --model runs/sft --port 30000
"""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from npr_toolkit.data.io import InputError
from npr_toolkit.data.prompts import read_prompts
from npr_toolkit.format import tags
from npr_toolkit.seeds import derive_seed

from .command import usage_message
from .console import STYLES, console, fail
from .options import AllowApproximate, Device, Engine, MaxNewTokens, Model, Seed, Server, Temperature, TopP
from .progress import Bar

app = typer.Typer(pretty_exceptions_enable=False)

SAMPLES_PER_CALL = 64  # samples decoded together; results are printed (and progress shown) after each call


def _highlight(text: str) -> Text:
    shown = Text(text)
    for tag in tags.TAGS:
        shown.highlight_words([tag], style=STYLES[tag.strip("</>")])
    return shown


def _summary(gen: Any) -> str:
    s = gen.stats
    speedup = s.total_tokens / s.critical_path_tokens if s.critical_path_tokens else 1.0
    finish = gen.finish_reason + (f" ({gen.finish_detail})" if gen.finish_detail else "")
    return (
        f"finish {finish} · {s.total_tokens} tokens · critical path {s.critical_path_tokens} · "
        f"blocks {s.blocks} widths {s.widths} · ideal speed-up {speedup:.2f}x · {s.wall_time:.2f} s"
    )


def _record(u: int, s: int, gen: Any) -> dict[str, Any]:
    return {
        "prompt_index": u,
        "sample": s,
        "text": gen.text,
        "finish_reason": gen.finish_reason,
        "finish_detail": gen.finish_detail,
        "prompt_tokens": len(gen.prompt_ids),
        "completion_tokens": gen.stats.total_tokens,
        "critical_path_tokens": gen.stats.critical_path_tokens,
        "blocks": gen.stats.blocks,
        "widths": gen.stats.widths,
        "wall_time": gen.stats.wall_time,
        "logprobs": gen.logprobs,
        "inserted": gen.inserted,
    }


def _show(u: int, s: int, n: int, gen: Any, as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(_record(u, s, gen), ensure_ascii=False))
        return
    console.rule(f"prompt {u + 1}" + (f" · sample {s + 1}" if n > 1 else ""))
    console.print(_highlight(gen.text))
    console.print(Text(_summary(gen), style="dim"))


@app.command()
def generate(
    model: Model,
    prompt: Annotated[str | None, typer.Option("--prompt", help="One prompt (the user turn with --chat).")] = None,
    prompts: Annotated[
        Path | None, typer.Option("--prompts", help="FILE.txt (one prompt a line) or FILE.jsonl (prompt/problem).")
    ] = None,
    n: Annotated[int, typer.Option("--n", help="Samples per prompt.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines: text, token counts, logprobs.")] = False,
    max_new_tokens: MaxNewTokens = 1024,
    temperature: Temperature = 1.0,
    top_p: TopP = 1.0,
    top_k: Annotated[int, typer.Option("--top-k", help="Sample among the k most likely tokens (0: all).")] = 0,
    seed: Seed = None,
    sequential: Annotated[bool, typer.Option("--sequential", help="Plain autoregressive decoding.")] = False,
    max_width: Annotated[int, typer.Option("--max-width", help="Most branches per block.")] = 8,
    engine: Engine = "torch",
    server: Server = None,
    allow_approximate: AllowApproximate = False,
    device: Device = None,
    chat: Annotated[bool, typer.Option("--chat/--raw", help="Wrap each prompt in the chat template.")] = True,
) -> None:
    """Sample completions and print them with the tags highlighted (or as JSON lines)."""
    from pydantic import ValidationError

    from npr_toolkit.engine import SamplingParams, load_engine
    from npr_toolkit.engine.sglang_engine import SGLangError

    if (prompt is None) == (prompts is None):
        fail("give exactly one of --prompt TEXT or --prompts FILE")
    if server is not None and engine == "torch":
        fail("--server needs --engine sglang or openai")
    try:
        params = SamplingParams(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_p=top_p,
            top_k=top_k,
            n=n,
            parallel=not sequential,
            max_width=max_width,
        )
    except ValidationError as exc:
        fail(usage_message(exc))
    try:
        texts = [prompt] if prompt is not None else read_prompts(prompts)  # type: ignore[arg-type]
        # Plain left-to-right decoding has no join: exact in every semantics, on every engine.
        exact_anyway = allow_approximate or sequential
        backend = load_engine(model, backend=engine, server_url=server, device=device, allow_approximate=exact_anyway)
        inputs = [backend.format_chat([{"role": "user", "content": t}]) if chat else t for t in texts]
        per_call = max(1, SAMPLES_PER_CALL // n)
        with Bar("generate", "prompts") as bar:
            for start in range(0, len(inputs), per_call):
                chunk = range(start, min(start + per_call, len(inputs)))
                # A prompt's seed depends on its index only: the same samples however the prompts are cut.
                seeds = None if seed is None else [derive_seed(seed, u) for u in chunk]
                gens = backend.generate([inputs[u] for u in chunk], params, seeds=seeds)
                for i, gen in enumerate(gens):
                    _show(chunk[0] + i // n, i % n, n, gen, as_json)
                sys.stdout.flush()
                bar(chunk[-1] + 1, len(inputs))
    except (InputError, SGLangError, ValueError, OSError) as error:
        fail(str(error))


@app.command()
def serve(
    model: Model,
    host: Annotated[str, typer.Option("--host", help="Interface to bind (keep 127.0.0.1 unless you mean it).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option("--port", help="TCP port (0: any free port).", min=0, max=65535)] = 30000,
    max_queue: Annotated[int, typer.Option("--max-queue", help="Requests in flight before 503.", min=1)] = 64,
    device: Device = None,
) -> None:
    """Serve MODEL: OpenAI-compatible /v1 (parallel decoding) and SGLang's /generate, until SIGINT/SIGTERM."""
    from npr_toolkit.serve import ServeConfig
    from npr_toolkit.serve import serve as run_server

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    def ready(url: str) -> None:
        typer.echo(f"npr serve: {model} on {url} (POST /v1/chat/completions, /v1/completions, /generate); Ctrl-C stops")
        sys.stdout.flush()

    config = ServeConfig(host=host, port=port, max_queue=max_queue, model_name=model)
    try:
        run_server(model, config, device=device, on_ready=ready)
    except (InputError, OSError, ValueError) as error:
        fail(str(error))
