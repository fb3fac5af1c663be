"""The GPU check: every figure this project can only measure on a GPU, in one run (``bench/gpu.sh``).

Sections, each timed with CUDA synchronisation, medians of interleaved repeats after a warm-up:

1. ``sft``: one SFT training step (forward, tree NLL, backward) of a randomly initialised model of
   Qwen3-0.6B's shape, float32 master weights under bf16 autocast with activation checkpointing, as
   ``npr train sft`` runs on a GPU, at 4k/16k/32k tokens: the tree's FlexAttention ``BlockMask`` vs a
   causal ``BlockMask`` (same kernel) vs SDPA's causal path. Target: tree / causal <= 1.10.
2. ``block_mask``: building the tree ``BlockMask`` at 32k (compiled, as ``view.block_mask`` does on
   CUDA): time and peak extra GPU memory, next to the bytes a dense (L, L) bool mask would take.
3. ``engine``: the torch engine decoding scripted width-4 and width-8 trees (``bench/engine.py``'s
   machinery) on the same 0.6B shape in bf16: branches batched vs the same tree with branches one
   after another, as a speed-up next to the ideal one.
4. ``papo``: one PAPO optimizer step on a random model (``npr train papo`` with fp32 master weights):
   step time, the weights' dtype after the step, and the largest change of a weight.

``--dry-run`` runs every section CPU-sized (a tiny model, 256/512 tokens, SDPA with the tree as an
additive mask since FlexAttention has no backward on CPU) so CI proves the script still runs. The
markdown it prints is appended to ``bench/RESULTS.md`` with ``--append``. Run on a GPU machine:

    bash bench/gpu.sh                  # ~6 min on one H200; appends to bench/RESULTS.md
    bash bench/gpu.sh --dry-run        # CPU, ~1 min, prints only
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

import engine as engine_bench  # noqa: E402  (bench/engine.py: scripted trees, timed modes)
import view as view_bench  # noqa: E402  (bench/view.py: synthetic trees of exactly L tokens)

from npr_toolkit.engine import TorchEngine  # noqa: E402
from npr_toolkit.toy import build_tokenizer  # noqa: E402
from npr_toolkit.view import build_view, causal_view, collate  # noqa: E402


def qwen3_06b(vocab_size: int, *, tiny: bool, attn: str):
    """A randomly initialised float32 model of Qwen3-0.6B's shape (or a tiny one for the dry run)."""
    from transformers import Qwen3Config, Qwen3ForCausalLM

    shape = (
        {"hidden_size": 64, "intermediate_size": 128, "num_hidden_layers": 2, "num_attention_heads": 4}
        | {"num_key_value_heads": 2, "head_dim": 16}
        if tiny
        else {"hidden_size": 1024, "intermediate_size": 3072, "num_hidden_layers": 28, "num_attention_heads": 16}
        | {"num_key_value_heads": 8, "head_dim": 128}
    )
    config = Qwen3Config(
        vocab_size=vocab_size if tiny else 151936,
        max_position_embeddings=40960,
        rope_theta=1_000_000.0,
        tie_word_embeddings=True,
        attn_implementation=attn,
        **shape,
    )
    torch.manual_seed(0)
    return Qwen3ForCausalLM(config)


def timed(function, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    function()
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def interleaved(arms: dict, repeats: int, device: torch.device) -> dict[str, float]:
    """Median seconds per arm; one warm-up each, then the arms take turns so drift hits all alike."""
    for run in arms.values():
        timed(run, device)
    times: dict[str, list[float]] = {name: [] for name in arms}
    for _ in range(repeats):
        for name, run in arms.items():
            times[name].append(timed(run, device))
    return {name: statistics.median(values) for name, values in times.items()}


# --- 1. SFT step -------------------------------------------------------------------------------------
def sft_steps(lengths: list[int], device: torch.device, dry: bool, repeats: int) -> list[dict]:
    tokenizer = build_tokenizer()
    model = qwen3_06b(len(tokenizer), tiny=dry, attn="sdpa").to(device).train()
    model.gradient_checkpointing_enable()
    tree_attention = "additive" if dry else "flex"
    rows = []
    for length in lengths:
        ids, prompt_length = view_bench.tree_ids(tokenizer, length, seed=0)
        tree = collate(
            [build_view(ids, tokenizer, prompt_length=prompt_length)], 0, attention=tree_attention, device=device
        )
        causal = collate([causal_view(ids, prompt_length)], 0, attention=tree_attention, device=device)

        def step(batch: dict, attn: str, masked: bool = True) -> None:
            model.set_attn_implementation(attn)
            model.zero_grad(set_to_none=True)
            mask = batch["attention_mask"] if masked else None
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                out = model(
                    input_ids=batch["input_ids"].to(device),
                    attention_mask=mask.to(device) if isinstance(mask, torch.Tensor) else mask,
                    position_ids=batch["position_ids"].to(device),
                    labels=batch["labels"].to(device),
                    use_cache=False,
                )
            out.loss.backward()

        kernel = "sdpa" if dry else "flex_attention"
        arms = {
            "tree": lambda tree=tree, kernel=kernel: step(tree, kernel),
            "causal_mask": lambda causal=causal, kernel=kernel: step(causal, kernel),
            "causal_sdpa": lambda causal=causal: step(causal, "sdpa", masked=False),
        }
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        medians = interleaved(arms, repeats, device)
        peak = torch.cuda.max_memory_allocated() / 2**30 if device.type == "cuda" else float("nan")
        rows.append({"length": length, **medians, "peak_gib": peak})
    return rows


# --- 2. BlockMask construction -----------------------------------------------------------------------
def block_mask_cost(length: int, device: torch.device, repeats: int) -> dict:
    tokenizer = build_tokenizer()
    ids, prompt_length = view_bench.tree_ids(tokenizer, length, seed=1)
    view = build_view(ids, tokenizer, prompt_length=prompt_length)
    view.block_mask(device)  # compile (CUDA) or warm up
    if device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    seconds = statistics.median(timed(lambda: view.block_mask(device), device) for _ in range(repeats))
    extra = (torch.cuda.max_memory_allocated() - before) / 2**20 if device.type == "cuda" else float("nan")
    return {"length": length, "seconds": seconds, "peak_extra_mib": extra, "dense_bool_mib": length * length / 2**20}


# --- 3. engine: batched vs serial branches -----------------------------------------------------------
def engine_speedup(widths: list[int], device: torch.device, dry: bool, repeats: int) -> list[dict]:
    tokenizer = build_tokenizer()
    dtype = torch.float32 if dry else torch.bfloat16
    model = qwen3_06b(len(tokenizer), tiny=dry, attn="sdpa").to(device=device, dtype=dtype).eval()
    engine = TorchEngine(model, tokenizer)
    prompts = [tokenizer.encode("Compute: (1+2)+(3+4)", add_special_tokens=False)]
    rows = []
    for width in widths:
        script = engine_bench.tree(width, branch=16 if dry else 128, trunk=4 if dry else 32)
        measured = engine_bench.measure(engine, prompts, script, repeats)
        parallel, serial = measured["parallel"], measured["serial"]
        rows.append(
            {
                "width": width,
                "parallel_s": parallel["wall"],
                "serial_s": serial["wall"],
                "speedup": serial["wall"] / parallel["wall"],
                "ideal": parallel["total"] / parallel["critical"],
            }
        )
    return rows


# --- 4. one PAPO step --------------------------------------------------------------------------------
def papo_step(device: torch.device, dry: bool) -> dict:
    from npr_toolkit.toy.task import PROMPT_TEMPLATE, make_problems
    from npr_toolkit.train.papo import run_papo

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        tokenizer = build_tokenizer()
        model = qwen3_06b(len(tokenizer), tiny=dry, attn="sdpa")
        model.save_pretrained(folder / "base")
        tokenizer.save_pretrained(folder / "base")
        before = {name: p.detach().clone() for name, p in model.named_parameters()}
        problems = make_problems(8, split="train", seed=0)
        (folder / "problems.jsonl").write_text("".join(json.dumps(p) + "\n" for p in problems))
        start = time.perf_counter()
        run_papo(
            folder / "base",
            folder / "problems.jsonl",
            folder / "papo",
            template=PROMPT_TEMPLATE,
            max_steps=1,
            num_generations=4,
            per_device_train_batch_size=8,
            max_completion_length=32 if dry else 256,
            learning_rate=1e-6,
            use_cpu=device.type != "cuda",
        )
        seconds = time.perf_counter() - start
        from transformers import AutoModelForCausalLM

        after = AutoModelForCausalLM.from_pretrained(folder / "papo", dtype="auto")
        dtypes = sorted({str(p.dtype) for p in after.parameters()})
        changed = max(
            (p.detach().float() - before[name][: p.shape[0]].float()).abs().max().item()
            for name, p in after.named_parameters()
            if name in before and before[name].shape[1:] == p.shape[1:]
        )
    return {"seconds": seconds, "saved_dtypes": dtypes, "max_weight_change": changed}


# --- report ------------------------------------------------------------------------------------------
def markdown(results: dict, device: torch.device, dry: bool) -> str:
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu"
    when = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        f"## GPU check ({'dry run, ' if dry else ''}{name}, torch {torch.__version__}, {when})",
        "",
        f"Command: `bash bench/gpu.sh{' --dry-run' if dry else ''}`. Medians of interleaved repeats.",
        "",
        "SFT step (fwd + tree NLL + bwd, fp32 master weights, bf16 autocast, activation checkpointing):",
        "",
        "| tokens | tree mask s | causal mask s | SDPA causal s | tree / causal mask | tree / SDPA | peak GiB |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results["sft"]:
        lines.append(
            f"| {r['length']} | {r['tree']:.3f} | {r['causal_mask']:.3f} | {r['causal_sdpa']:.3f} | "
            f"{r['tree'] / r['causal_mask']:.3f} | {r['tree'] / r['causal_sdpa']:.3f} | {r['peak_gib']:.1f} |"
        )
    b = results["block_mask"]
    lines += [
        "",
        f"BlockMask at {b['length']} tokens: {b['seconds'] * 1e3:.1f} ms, peak extra GPU memory "
        f"{b['peak_extra_mib']:.1f} MiB (a dense bool mask: {b['dense_bool_mib']:.0f} MiB).",
        "",
        "| width | batched branches s | serial branches s | measured speed-up | ideal |",
        "|---:|---:|---:|---:|---:|",
    ]
    for r in results["engine"]:
        lines.append(
            f"| {r['width']} | {r['parallel_s']:.3f} | {r['serial_s']:.3f} | {r['speedup']:.2f}x | {r['ideal']:.2f}x |"
        )
    p = results["papo"]
    lines += [
        "",
        f"One PAPO step: {p['seconds']:.1f} s end to end (load, rollouts, step, save); saved weights "
        f"{', '.join(p['saved_dtypes'])}; largest weight change {p['max_weight_change']:.2e}.",
        "",
    ]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry-run", action="store_true", help="CPU-sized run of every section (CI)")
    parser.add_argument("--append", action="store_true", help="append the markdown to bench/RESULTS.md")
    parser.add_argument("--repeats", type=int, default=None)
    args = parser.parse_args()
    dry = args.dry_run
    if not dry and not torch.cuda.is_available():
        parser.error("no CUDA device: run with --dry-run, or on a GPU machine")
    device = torch.device("cpu" if dry else "cuda")
    repeats = args.repeats or (2 if dry else 5)
    results = {}
    sections = (
        ("sft", lambda: sft_steps([256, 512] if dry else [4096, 16384, 32768], device, dry, repeats)),
        ("block_mask", lambda: block_mask_cost(512 if dry else 32768, device, repeats)),
        ("engine", lambda: engine_speedup([4, 8], device, dry, repeats)),
        ("papo", lambda: papo_step(device, dry)),
    )
    for name, run in sections:
        start = time.perf_counter()
        results[name] = run()
        print(f"[gpu-check] {name}: {time.perf_counter() - start:.1f} s", file=sys.stderr, flush=True)
    text = markdown(results, device, dry)
    print(text)
    if args.append:
        with (ROOT / "bench" / "RESULTS.md").open("a", encoding="utf-8") as handle:
            handle.write("\n" + text)


if __name__ == "__main__":
    main()
