"""Benchmark: what a reprefill join's re-read costs, against the decoding time batched branches save.

In ``reprefill`` semantics (docs/design.md §3b) a join re-reads branches 2..W after branch 1: a prefill of
their tokens, fed in the same forward as the join header's first token. A canonical join splices the
KV and re-reads nothing. Both semantics decode the same scripted tree (``bench/engine.py``'s: one
block of width W, greedy) in the same steps, so each join step is compared one to one:

- ``re-read ms``: the join step's forward in reprefill minus the same step's forward in canonical;
- ``saved ms``: the model time of the block decoded with serial branches minus batched branches
  (reprefill both): the decoding time that decoding the branches together saves;
- ``re-read / saved``: the share of that saving the re-read spends back;
- ``model time reprefill / canonical``: the whole generation's forwards, the re-read included.

One block per request; with several requests their blocks join in the same step, so the numbers are
per join step (all requests). Times are model forwards (engine overhead left out), each step the
median of ``--repeats``, the modes interleaved. Run:

    python bench/reread.py                          # vocab 109 and 32000, widths 2/4/8, 1 and 4 requests
    python bench/reread.py --vocab 109 --branch 48 128
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import torch
from engine import build, scripted, tree  # bench/engine.py: the same model builder and scripted tree

from npr_toolkit.engine import SamplingParams, TorchEngine

MODES = ("canonical", "reprefill", "reprefill serial")


class Forwards:
    """Wraps a model's forward: (query tokens, seconds) of every call."""

    def __init__(self, forward):
        self.forward, self.calls = forward, []

    def __call__(self, *args, **kwargs):
        start = time.perf_counter()
        out = self.forward(*args, **kwargs)
        self.calls.append((kwargs["input_ids"].shape[1], time.perf_counter() - start))
        return out


def run(model, tok, prompts, script, mode: str) -> list[tuple[int, float]]:
    """One greedy generate call in ``mode``: (query tokens, seconds) of each forward."""
    semantics = "canonical" if mode == "canonical" else "reprefill"
    engine = TorchEngine(model, tok, semantics=semantics)
    params = SamplingParams(max_new_tokens=4096, temperature=0, max_width=16, serial_branches=mode.endswith("serial"))
    forwards = model.forward = Forwards(model.forward)  # the instance attribute shadows the method
    try:
        gens = engine.generate(prompts, params, logits_processor=scripted.Steer(script, tok))
    finally:
        del model.forward
    assert all(g.finish_reason == "stop" for g in gens), [g.finish_detail for g in gens]
    return forwards.calls


def measure(model, tok, prompts, script, repeats: int) -> dict[str, float]:
    """Per-forward medians over the repeats (a greedy run takes the same steps every time), so a load
    spike on the shared machine moves one repeat of one step, not the result."""
    runs: dict[str, list] = {mode: [] for mode in MODES}
    for _ in range(repeats):
        for mode in MODES:
            runs[mode].append(run(model, tok, prompts, script, mode))
    steps = {}  # mode -> median seconds of each forward
    for mode, results in runs.items():
        seconds = [[t for _, t in calls] for calls in results]
        steps[mode] = [statistics.median(ts) for ts in zip(*seconds, strict=True)]
    queries = {mode: [q for q, _ in runs[mode][0]] for mode in MODES}
    canonical, reprefill = queries["canonical"], queries["reprefill"]
    assert len(canonical) == len(reprefill)  # the re-read adds no step
    joins = [k for k, (a, b) in enumerate(zip(canonical, reprefill, strict=True)) if a != b]
    assert len(joins) == 1, joins  # one block: one join step
    join = joins[0]
    model_ms = {mode: 1000 * sum(steps[mode]) for mode in MODES}
    return {
        "reread_tokens": (reprefill[join] - canonical[join]) * len(prompts),  # every request's block
        "step_ms": 1000 * statistics.median(t for q, t in zip(canonical, steps["canonical"], strict=True) if q == 1),
        "join_canonical_ms": 1000 * steps["canonical"][join],
        "reread_ms": 1000 * (steps["reprefill"][join] - steps["canonical"][join]),
        "saved_steps": len(queries["reprefill serial"]) - len(reprefill),
        "saved_ms": model_ms["reprefill serial"] - model_ms["reprefill"],
        "model_ratio": model_ms["reprefill"] / model_ms["canonical"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vocab", type=int, nargs="+", default=[109, 32000], help="model vocab sizes")
    parser.add_argument("--widths", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--branch", type=int, nargs="+", default=[48], help="content tokens per branch")
    parser.add_argument("--requests", type=int, nargs="+", default=[1, 4], help="prompts decoded together")
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--trunk", type=int, default=16, help="free trunk tokens before and after the block")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(
        f"# {platform.processor() or platform.machine()}, {os.cpu_count()} cpus, torch {torch.__version__}, "
        f"{args.threads} thread(s), load {os.getloadavg()[0]:.1f}; model hidden {args.hidden} x {args.layers} "
        f"layers, fp32, sdpa; greedy; one block per request, trunk 2 x {args.trunk}"
    )
    print(
        "| vocab | req | W | branch | re-read tok | decode step ms | join step ms (canonical) | re-read ms "
        "| re-read ms/tok | saved steps | saved ms | re-read / saved | model time reprefill / canonical |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for vocab in args.vocab:
        tok, model = build(vocab, args.hidden, args.layers)
        questions = ["1+2", "what is 3*4 + 5?", "x", "Compute (12+7)*(3-1)."]
        chats = [
            tok.apply_chat_template([{"role": "user", "content": q}], tokenize=False, add_generation_prompt=True)
            for q in questions
        ]
        run(model, tok, chats[:1], tree(2, 4, 4), "reprefill")  # warm-up
        for requests in args.requests:
            prompts = (chats * requests)[:requests]
            for branch in args.branch:
                for width in args.widths:
                    r = measure(model, tok, prompts, tree(width, branch, args.trunk), args.repeats)
                    print(
                        f"| {vocab} | {requests} | {width} | {branch} | {r['reread_tokens']} | {r['step_ms']:.1f} "
                        f"| {r['join_canonical_ms']:.1f} | {r['reread_ms']:.1f} "
                        f"| {r['reread_ms'] / r['reread_tokens']:.3f} | {r['saved_steps']} | {r['saved_ms']:.0f} "
                        f"| {r['reread_ms'] / r['saved_ms']:.3f} | {r['model_ratio']:.3f} |",
                        flush=True,
                    )


if __name__ == "__main__":
    main()
