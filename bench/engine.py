"""Benchmark: the exact torch engine decoding NPR trees, batched branches vs serial branches vs sequential.

Same model, same prompts, same trees, same token budget. A random Qwen3-shaped model (no download)
is steered by the engine tests' scripted processor (``tests/engine/scripted.py``) into one block of
width W with fixed plan, branch and takeaway lengths, decoded greedily, so every mode writes a tree of
exactly the same shape:

- ``parallel``: the engine as shipped (all branches of all requests in one forward per step);
- ``serial``: ``serial_branches=True``, the same tree with siblings one after another (the fair baseline);
- ``sequential``: ``parallel=False``, plain autoregressive decoding of the same text (NPR-Zero style).

The table reports wall time (median of ``--repeats``), tokens/s over all tokens of the tree, forward
steps, the ideal speed-up (total / critical-path tokens) and the measured speed-up of ``parallel`` over
each baseline with its ratio to the ideal. No assertions. Run:

    python bench/engine.py                       # toy vocab (109) and a 32k-vocab variant, widths 2/4/8
    python bench/engine.py --vocab 109 --profile # + cProfile of the parallel engine at the widest width
    python bench/engine.py --vocab 109 --widths 8 --requests 1 --mask-cost  # + tree-mask cost at R=64
"""

from __future__ import annotations

import argparse
import cProfile
import importlib.util
import io
import os
import platform
import pstats
import sys
import time
from pathlib import Path

import torch

from npr_toolkit.engine import SamplingParams, TorchEngine
from npr_toolkit.engine.torch_engine import step_mask
from npr_toolkit.toy import build_model, build_tokenizer
from npr_toolkit.view import additive

ROOT = Path(__file__).resolve().parents[1]
MODES = ("parallel", "serial", "sequential")


def _scripted():
    """The tests' scripted processor module (loaded by path: ``tests`` is not a package on sys.path)."""
    spec = importlib.util.spec_from_file_location("scripted", ROOT / "tests" / "engine" / "scripted.py")
    module = sys.modules["scripted"] = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


scripted = _scripted()


class Timed:
    """Wraps a callable (the processor, the model's forward) and accumulates the time spent in it."""

    def __init__(self, function):
        self.function, self.seconds = function, 0.0

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        out = self.function(*args, **kwargs)
        self.seconds += time.perf_counter() - start
        return out


def build(vocab: int, hidden: int, layers: int):
    """The toy tokenizer and a random model of ``hidden`` x ``layers``; embeddings padded to ``vocab`` rows."""
    tok = build_tokenizer()
    model = build_model(
        tok, seed=0, hidden_size=hidden, num_layers=layers, num_heads=4, num_kv_heads=2, intermediate_size=4 * hidden
    )
    if vocab > len(tok):
        model.resize_token_embeddings(vocab, mean_resizing=False)
    return tok, model.eval()


def tree(width: int, branch: int, trunk: int) -> scripted.Script:
    """Trunk text, one width-``width`` block with ``branch`` content tokens per branch, trunk text, EOS."""
    block = scripted.Block(plans=(4,) * width, takeaway=8)
    return scripted.Script(trunk=[trunk, block, trunk], branches={i: [branch] for i in range(1, width + 1)})


def run(engine, prompts, script, mode: str) -> tuple[float, float, float, list]:
    """One timed generate call in ``mode``: (wall, model forward, processor) seconds and the generations."""
    parallel, serial = mode != "sequential", mode == "serial"
    params = SamplingParams(max_new_tokens=4096, temperature=0, max_width=16, parallel=parallel, serial_branches=serial)
    steer = Timed(scripted.Steer(script, engine.tokenizer, sequential=mode == "sequential"))
    model = engine.model.forward = Timed(engine.model.forward)  # the instance attribute shadows the method
    try:
        start = time.perf_counter()
        gens = engine.generate(prompts, params, logits_processor=steer)
        wall = time.perf_counter() - start
    finally:
        del engine.model.forward
    assert all(g.finish_reason == "stop" for g in gens), [g.finish_detail for g in gens]
    return wall, model.seconds, steer.seconds, gens


def measure(engine, prompts, script, repeats: int) -> dict[str, dict]:
    """Median wall time per mode; the modes are interleaved in every repeat so load drift hits all alike."""
    runs: dict[str, list] = {mode: [] for mode in MODES}
    for _ in range(repeats):
        for mode in MODES:
            runs[mode].append(run(engine, prompts, script, mode))
    rows = {}
    for mode, results in runs.items():
        gens = results[0][3]
        middle = sorted(results, key=lambda r: r[0])[len(results) // 2]  # the median run by wall time
        total = sum(g.stats.total_tokens for g in gens)
        wall = middle[0]
        rows[mode] = {
            "wall": wall,
            "model": middle[1],
            "engine": wall - middle[1] - middle[2],
            "proc": middle[2],
            "total": total,
            "critical": sum(g.stats.critical_path_tokens for g in gens),
            "steps": max(g.stats.steps for g in gens),
            "tps": total / wall,
        }
    return rows


def mask_cost(requests: int, lanes: int, slots: int, repeats: int = 5) -> float:
    """Milliseconds per decode step the engine spends on its tree mask on the CPU (``TorchEngine._step``:
    ``step_mask`` from the slots' segments, then ``additive``) for ``requests`` rows of ``slots`` cached
    tokens and ``lanes`` queries each (the trunk, then one segment per branch of one block)."""
    segments = torch.zeros(requests, slots, dtype=torch.long)
    segments[:, slots // 2 :] = torch.arange(slots - slots // 2) % lanes + 1  # the branches' slots
    sees = torch.eye(lanes + 1, dtype=torch.bool).expand(requests, -1, -1).clone()
    sees[:, :, 0] = True  # every segment sees the trunk
    q_segment = (torch.arange(lanes) + 1).repeat(requests, 1)  # (R, q), contiguous as the engine's
    q_lane, q_order = torch.arange(lanes).repeat(requests, 1), torch.zeros(requests, lanes, dtype=torch.long)
    start = time.perf_counter()
    for _ in range(repeats):
        additive(step_mask(segments, sees, q_segment, q_lane, q_order), torch.bfloat16)[:, None]
    return (time.perf_counter() - start) / repeats * 1000


def profile(engine, prompts, script, top: int) -> str:
    params = SamplingParams(max_new_tokens=4096, temperature=0.0, max_width=16)
    steer = scripted.Steer(script, engine.tokenizer)
    profiler = cProfile.Profile()
    profiler.enable()
    engine.generate(prompts, params, logits_processor=steer)
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(top)
    return out.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, nargs="+", default=[109, 32000], help="model vocab sizes")
    parser.add_argument("--widths", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--requests", type=int, nargs="+", default=[1, 4], help="prompts decoded together")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--branch", type=int, default=48, help="content tokens per branch")
    parser.add_argument("--trunk", type=int, default=16, help="free trunk tokens before and after the block")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile", action="store_true", help="cProfile the parallel engine at the widest width")
    parser.add_argument("--mask-cost", action="store_true", help="per-step tree-mask cost at GPU-like batch sizes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
        f"{args.threads} threads, load {os.getloadavg()[0]:.1f}; model hidden {args.hidden} x {args.layers} layers, "
        f"fp32, sdpa; greedy; branch {args.branch} tokens, trunk 2 x {args.trunk}"
    )
    print(
        "| vocab | req | W | total | crit | ideal | mode | steps | wall s | model s | engine s | proc s | ms/step "
        "| tok/s | speed-up | / ideal |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    for vocab in args.vocab:
        tok, model = build(vocab, args.hidden, args.layers)
        engine = TorchEngine(model, tok)
        questions = ["1+2", "what is 3*4 + 5?", "x", "Compute (12+7)*(3-1)."]
        chats = [engine.format_chat([{"role": "user", "content": q}]) for q in questions]
        engine.generate(chats[:1], SamplingParams(max_new_tokens=8, temperature=0.0))  # warm-up
        for requests in args.requests:
            prompts = (chats * requests)[:requests]
            for width in args.widths:
                script = tree(width, args.branch, args.trunk)
                rows = measure(engine, prompts, script, args.repeats)
                ideal = rows["parallel"]["total"] / rows["parallel"]["critical"]
                for mode, r in rows.items():
                    speed = r["wall"] / rows["parallel"]["wall"] if mode != "parallel" else 1.0
                    shown = f"{speed:.2f}x" if mode != "parallel" else "-"
                    ratio = f"{speed / ideal:.2f}" if mode != "parallel" else "-"
                    print(
                        f"| {vocab} | {requests} | {width} | {r['total']} | {r['critical']} | {ideal:.2f} | {mode} "
                        f"| {r['steps']} | {r['wall']:.2f} | {r['model']:.2f} | {r['engine']:.2f} | {r['proc']:.2f} "
                        f"| {1000 * r['wall'] / r['steps']:.1f} | {r['tps']:.0f} | {shown} | {ratio} |"
                    )
        if args.profile:
            print(f"\n## cProfile: parallel, vocab {vocab}, {args.requests[-1]} requests, width {args.widths[-1]}\n")
            prompts = (chats * args.requests[-1])[: args.requests[-1]]
            print(profile(engine, prompts, tree(args.widths[-1], args.branch, args.trunk), 25))
    if args.mask_cost:
        print("\n| requests | lanes | cached slots | mask ms/step (CPU) | mask MB (bf16) |\n|---|---|---|---|---|")
        for requests, lanes, slots in [(4, 8, 600), (64, 1, 4096), (64, 8, 4096), (64, 8, 16384)]:
            size = requests * lanes * (slots + lanes) * 2 / 1e6
            print(f"| {requests} | {lanes} | {slots} | {mask_cost(requests, lanes, slots):.1f} | {size:.1f} |")


if __name__ == "__main__":
    main()
