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

from npr_toolkit.cli.common import console, fail
from npr_toolkit.format import tags

app = typer.Typer(pretty_exceptions_enable=False)

TAG_STYLES = {
    "bold cyan": (tags.GUIDELINE_OPEN, tags.GUIDELINE_CLOSE),
    "cyan": (tags.PLAN_OPEN, tags.PLAN_CLOSE),
    "bold green": (tags.STEP_OPEN, tags.STEP_CLOSE),
    "bold magenta": (tags.TAKEAWAY_OPEN, tags.TAKEAWAY_CLOSE),
}
PROMPT_FIELDS = ("prompt", "problem")

ModelOption = Annotated[str, typer.Option("--model", help="Model directory or hub id (its tokenizer too).")]


def _read_prompts(path: Path) -> list[str]:
    """Prompts from a .txt (one per non-empty line) or a JSONL/JSON file (field ``prompt`` or ``problem``)."""
    from npr_toolkit.data.io import InputError, read_records

    if path.suffix == ".txt":
        if not path.is_file():
            fail(f"{path}: no such file")
        return [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    prompts, bad = [], []
    try:
        for record in read_records(path, text_field="prompt"):
            value = next((record.data[k] for k in PROMPT_FIELDS if record.data and k in record.data), None)
            if record.error or not isinstance(value, str) or not value.strip():
                bad.append(f"{record.where}: {record.error or 'no non-empty prompt or problem field'}")
            else:
                prompts.append(value)
    except InputError as error:
        fail(str(error))
    if bad:
        shown = "\n  ".join(bad[:10])
        fail(f"{len(bad)} bad prompt record(s) in {path}:\n  {shown}" + ("\n  ..." if len(bad) > 10 else ""))
    return prompts


def _highlight(text: str) -> Text:
    shown = Text(text)
    for style, words in TAG_STYLES.items():
        shown.highlight_words(words, style=style)
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


@app.command()
def generate(
    model: ModelOption,
    prompt: Annotated[str | None, typer.Option("--prompt", help="One prompt (the user turn with --chat).")] = None,
    prompts: Annotated[
        Path | None, typer.Option("--prompts", help="FILE.txt (one prompt a line) or FILE.jsonl (prompt/problem).")
    ] = None,
    n: Annotated[int, typer.Option("--n", help="Samples per prompt.", min=1)] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines: text, token counts, logprobs.")] = False,
    max_new_tokens: Annotated[int, typer.Option("--max-new-tokens", help="Critical-path token budget.", min=1)] = 1024,
    temperature: Annotated[float, typer.Option("--temperature", help="0 = greedy.", min=0.0)] = 1.0,
    top_p: Annotated[float, typer.Option("--top-p", help="Nucleus mass, in (0, 1].", min=0.0, max=1.0)] = 1.0,
    top_k: Annotated[int, typer.Option("--top-k", help="0 = no top-k filtering.", min=0)] = 0,
    seed: Annotated[int | None, typer.Option("--seed", help="Sampling seed (reproducible output).")] = None,
    sequential: Annotated[bool, typer.Option("--sequential", help="Plain autoregressive decoding.")] = False,
    max_width: Annotated[int, typer.Option("--max-width", help="Most branches per block.", min=1)] = 8,
    engine: Annotated[str, typer.Option("--engine", help="torch (exact) or sglang (approximate joins).")] = "torch",
    server: Annotated[str | None, typer.Option("--server", help="SGLang or `npr serve` URL (--engine sglang).")] = None,
    device: Annotated[str | None, typer.Option("--device", help="torch device (default: cuda if available).")] = None,
    chat: Annotated[bool, typer.Option("--chat/--raw", help="Wrap each prompt in the chat template.")] = True,
) -> None:
    """Sample completions and print them with the tags highlighted (or as JSON lines)."""
    if (prompt is None) == (prompts is None):
        fail("give exactly one of --prompt TEXT or --prompts FILE")
    if engine not in ("torch", "sglang"):
        fail(f"--engine must be torch or sglang, not {engine!r}")
    if server is not None and engine != "sglang":
        fail("--server needs --engine sglang")
    if top_p == 0.0:
        fail("--top-p must be in (0, 1]")
    texts = [prompt] if prompt is not None else _read_prompts(prompts)  # type: ignore[arg-type]
    if not texts:
        fail(f"{prompts}: no prompts")

    from npr_toolkit.engine import SamplingParams, load_engine
    from npr_toolkit.engine.sglang_engine import SGLangError

    params = SamplingParams(
        max_new_tokens=max_new_tokens,
        temperature=temperature,
        top_p=top_p,
        top_k=top_k,
        seed=seed,
        n=n,
        parallel=not sequential,
        max_width=max_width,
    )
    try:
        backend = load_engine(model, backend=engine, server_url=server, device=device)
        inputs = [backend.format_chat([{"role": "user", "content": t}]) if chat else t for t in texts]
        gens = backend.generate(inputs, params)
    except (SGLangError, ValueError, OSError) as error:
        fail(str(error))
    for i, gen in enumerate(gens):
        u, s = divmod(i, n)
        if as_json:
            typer.echo(json.dumps(_record(u, s, gen), ensure_ascii=False))
        else:
            console.rule(f"prompt {u + 1}" + (f" · sample {s + 1}" if n > 1 else ""))
            console.print(_highlight(gen.text))
            console.print(Text(_summary(gen), style="dim"))


@app.command()
def serve(
    model: ModelOption,
    host: Annotated[str, typer.Option("--host", help="Interface to bind (keep 127.0.0.1 unless you mean it).")] = (
        "127.0.0.1"
    ),
    port: Annotated[int, typer.Option("--port", help="TCP port (0: any free port).", min=0, max=65535)] = 30000,
    max_queue: Annotated[int, typer.Option("--max-queue", help="Requests in flight before 503.", min=1)] = 64,
    device: Annotated[str | None, typer.Option("--device", help="torch device (default: cuda if available).")] = None,
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
    except (OSError, ValueError) as error:
        fail(str(error))
