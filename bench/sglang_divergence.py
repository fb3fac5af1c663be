"""Benchmark: each semantics decoded by each engine, against the semantics the model was trained in.

A model trained on the canonical view (docs/design.md §3) and decoded by a client of a stock server
(the SGLang backend: joins re-read the branches causally) sees contexts it never saw in training; a
model trained on the reprefill view (§3b) is decoded exactly there. This script puts numbers on both,
on the tiny model, float32, CPU:

1. one toy model per ``--semantics`` is trained on the toy task's reference trajectories through that
   semantics' training view (a short plain-torch loop, ``--steps``), so that it writes the format by
   itself (``npr serve`` has no logits processor); ``--model DIR`` uses a trained checkpoint instead;
2. ``npr serve`` runs in a thread on 127.0.0.1 over the torch engine (its ``/generate`` is sequential);
3. the same held-out prompts are sampled by the torch engine in canonical semantics, by the torch
   engine in reprefill semantics and by ``SGLangEngine`` against that server, with the same parameters
   (the last two compute the same semantics: their rows should agree within sampling noise);
4. every recorded log-probability is compared with the recomputation by the training view of the
   semantics the model was trained in, split into trunk tokens before the first join, branch tokens,
   and tokens after a join (where the two semantics differ);
5. format validity (strict profile) and accuracy of every decoder on the same prompts.

    python bench/sglang_divergence.py                      # train 400 steps per semantics, 48 prompts x 2
    python bench/sglang_divergence.py --model runs/demo/sft --semantics canonical --problems 100

Prints a table; no assertions. Results: ``bench/RESULTS.md`` (section "sglang backend divergence").
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from npr_toolkit.engine import Generation, SamplingParams, TorchEngine
from npr_toolkit.engine.sglang_engine import SGLangEngine
from npr_toolkit.format import extract_boxed, validate
from npr_toolkit.serve import ServeConfig, Server
from npr_toolkit.toy import build_model, build_tokenizer
from npr_toolkit.toy.task import PROMPT_TEMPLATE, make_problems, reference_trajectory
from npr_toolkit.view import ViewError, build_view, collate, tag_vocab, tokenize_completion
from npr_toolkit.view.semantics import record_semantics

GROUPS = ("trunk before the first join", "branches before it", "after a join")


# --- the model ------------------------------------------------------------------------------------
def prompt_text(tokenizer, problem: str) -> str:
    messages = [{"role": "user", "content": PROMPT_TEMPLATE.format(problem=problem)}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def train(tokenizer, steps: int, batch: int, lr: float, seed: int, semantics: str) -> Any:
    """A toy model fitted on reference trajectories through the training view of ``semantics``."""
    model = build_model(tokenizer, seed=seed)
    views = []
    for record in make_problems(4000, split="train", seed=seed):
        ids, size = tokenize_completion(
            tokenizer, prompt_text(tokenizer, record["problem"]), reference_trajectory(record["problem"])
        )
        views.append(build_view([*ids, tokenizer.eos_token_id], tokenizer, mode=semantics, prompt_length=size))
    optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=0.0)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, lambda s: 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(s, steps) / steps))
    )
    rng = random.Random(seed)
    model.train()
    started = time.perf_counter()
    for step in range(steps):
        inputs = collate(rng.sample(views, batch), pad_id=tokenizer.pad_token_id)
        loss = model(
            input_ids=inputs["input_ids"],
            attention_mask=inputs["attention_mask"],
            position_ids=inputs["position_ids"],
            labels=inputs["labels"],
        ).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
        if step % 50 == 0 or step == steps - 1:
            print(f"  step {step:4d}  loss {loss.item():.4f}  {time.perf_counter() - started:.0f} s", flush=True)
    return model.eval()


# --- measuring ------------------------------------------------------------------------------------
def forward_logprobs(model, ids: list[int], **inputs: torch.Tensor) -> torch.Tensor:
    """(L, V) next-token log-probabilities of one sequence."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids]), **inputs).logits[0]
    return torch.log_softmax(logits.float(), -1)


def closed_view(gen: Generation, tokenizer, semantics: str) -> tuple[Any, int] | None:
    """The ``semantics`` view of ``gen`` and how many completion tokens it covers, or None.

    A malformed or truncated completion is not a tree: its offending last token is dropped and the
    open structure closed with tags the engine would have to add; appended tokens come after every
    measured one, so (causal within a request, positions fixed at the fork) they change none of them.
    """
    v = tag_vocab(tokenizer)
    size = len(gen.prompt_ids)
    keep = len(gen.completion_ids) - (gen.finish_reason == "malformed")
    ids, inserted = gen.prompt_ids + gen.completion_ids[:keep], [False] * size + gen.inserted[:keep]
    for suffix in ([], [v.takeaway_close], [v.step_close, v.takeaway_open, v.takeaway_close]):
        try:
            view = build_view(
                ids + suffix, tokenizer, mode=semantics, prompt_length=size, inserted=inserted + [True] * len(suffix)
            )
        except ViewError:
            continue
        return view, keep
    return None


def token_groups(gen: Generation, tokenizer) -> list[str]:
    """Each completion token's group: trunk before the first join, inside a branch, or after a join."""
    v = tag_vocab(tokenizer)
    groups, depth, joined = [], 0, False
    for token in gen.completion_ids:
        groups.append(GROUPS[1] if depth and not joined else GROUPS[2] if joined else GROUPS[0])
        if token == v.step_open:
            depth += 1
        elif token == v.step_close:
            depth -= 1
        elif token == v.takeaway_open:
            joined = True
    return groups


def measure(model, tokenizer, gens: list[Generation], semantics: str) -> dict[str, Any]:
    """Per-group |recorded - exact| log-probabilities, exact = the view of the model's ``semantics``."""
    diffs: dict[str, list[float]] = {group: [] for group in GROUPS}
    skipped = 0
    for gen in gens:
        found = closed_view(gen, tokenizer, semantics)
        if found is None:
            skipped += 1
            continue
        view, keep = found
        size = len(gen.prompt_ids)
        batch = collate([view], pad_id=tokenizer.pad_token_id)
        exact = forward_logprobs(
            model, view.input_ids.tolist(), attention_mask=batch["attention_mask"], position_ids=batch["position_ids"]
        )  # (N, V) the model's own semantics
        scored = view.gather(exact.gather(-1, view.labels.clamp(min=0)[:, None])[:, 0])  # per original token
        for j, group in enumerate(token_groups(gen, tokenizer)[:keep]):
            if gen.logprobs[j] is not None:
                diffs[group].append(abs(gen.logprobs[j] - float(scored[size + j])))
    return {"diffs": diffs, "skipped": skipped}


def quality(gens: list[Generation], answers: list[str]) -> dict[str, float]:
    n = len(gens) // len(answers)
    valid = [validate(g.text).valid for g in gens]
    correct = [extract_boxed(g.text) == answers[i // n] for i, g in enumerate(gens)]
    return {
        "valid": sum(valid) / len(gens),
        "accuracy": sum(correct) / len(gens),
        "blocks": statistics.mean(g.stats.blocks for g in gens),
        "finish_stop": sum(g.finish_reason == "stop" for g in gens) / len(gens),
    }


def summary(values: list[float]) -> str:
    if not values:
        return "-"
    return f"{statistics.mean(values):.2e} / {max(values):.2e} (n={len(values)})"


# --- main -----------------------------------------------------------------------------------------
def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", help="a trained toy checkpoint (skips training)")
    parser.add_argument("--save", type=Path, help="keep the trained models here, one folder per semantics")
    parser.add_argument(
        "--semantics",
        nargs="+",
        default=["canonical", "reprefill"],
        choices=["canonical", "reprefill"],
        help="train one model per semantics (with --model: the semantics that checkpoint was trained in)",
    )
    parser.add_argument("--steps", type=int, default=400, help="training steps")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--problems", type=int, default=48, help="held-out prompts")
    parser.add_argument("--samples", type=int, default=2, help="samples per prompt")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1 is fastest for the tiny model)")
    parser.add_argument("--json", type=Path, help="also write the numbers here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    records = make_problems(args.problems, split="heldout", seed=args.seed)
    answers = [r["answer"] for r in records]
    params = SamplingParams(
        max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed, n=args.samples
    )
    rows, samples = {}, {}
    for semantics in args.semantics:
        with tempfile.TemporaryDirectory() as folder:
            if args.model:
                model_dir = args.model
                loaded = TorchEngine.from_pretrained(model_dir, device="cpu", dtype="float32")
                tokenizer, model = loaded.tokenizer, loaded.model
            else:
                tokenizer = build_tokenizer()
                print(f"training {args.steps} steps (batch {args.batch}, {semantics} view) ...", flush=True)
                model = train(tokenizer, args.steps, args.batch, args.lr, args.seed, semantics)
                record_semantics(model.config, semantics)
                model_dir = str(args.save / semantics if args.save else folder)
                model.save_pretrained(model_dir)
                tokenizer.save_pretrained(model_dir)
            prompts = [prompt_text(tokenizer, r["problem"]) for r in records]
            server_engine = TorchEngine(model, tokenizer)
            with Server(server_engine, ServeConfig(port=0, max_queue=4096, max_outputs=4096)) as url:
                # For a canonical model the SGLang backend's approximation is what is measured.
                client = SGLangEngine(model_dir, server_url=url, allow_approximate=True)
                backends = {
                    "torch canonical": TorchEngine(model, tokenizer, semantics="canonical"),
                    "torch reprefill": TorchEngine(model, tokenizer, semantics="reprefill"),
                    "sglang-style vs npr serve": client,
                }
                for name, backend in backends.items():
                    started = time.perf_counter()
                    gens = samples[semantics, name] = backend.generate(prompts, params)
                    seconds = time.perf_counter() - started
                    rows[semantics, name] = (
                        measure(model, tokenizer, gens, semantics),
                        quality(gens, answers),
                        seconds,
                    )

    print(
        f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}, float32, {args.threads} thread(s)"
    )
    print(
        f"{args.problems} held-out prompts x {args.samples} samples, temperature {args.temperature}, "
        f"max_new_tokens {args.max_new_tokens}, seed {args.seed}\n"
    )
    print("|logprob recorded - the trained view's recomputation|, mean / max (n tokens):\n")
    print(f"| trained | decoded by | {' | '.join(GROUPS)} | strict-valid | accuracy | stop | blocks | wall s |")
    print("|---|---|" + "---|" * (len(GROUPS) + 5))
    for (semantics, name), (m, q, seconds) in rows.items():
        cells = [summary(m["diffs"][g]) for g in GROUPS]
        print(
            f"| {semantics} | {name} | {' | '.join(cells)} | {q['valid']:.3f} | {q['accuracy']:.3f} | "
            f"{q['finish_stop']:.3f} | {q['blocks']:.2f} | {seconds:.1f} |"
        )
    for semantics in args.semantics:
        reprefill, client = samples[semantics, "torch reprefill"], samples[semantics, "sglang-style vs npr serve"]
        pairs = list(zip(reprefill, client, strict=True))
        alike = [(a, b) for a, b in pairs if a.completion_ids == b.completion_ids]
        gap = max(
            (abs(x - y) for a, b in alike for x, y in zip(a.logprobs, b.logprobs, strict=True) if x is not None),
            default=0.0,
        )
        print(
            f"\n{semantics}-trained model, torch reprefill vs sglang-style: {len(alike)} of {len(pairs)} completions "
            f"identical (log-probabilities within {gap:.1e} on them)"
        )
    if args.json:
        out = {
            f"{semantics}/{name}": {
                "groups": {g: {"mean": statistics.mean(v), "max": max(v)} for g, v in m["diffs"].items() if v},
                "quality": q,
                "wall_s": seconds,
                "skipped": m["skipped"],
            }
            for (semantics, name), (m, q, seconds) in rows.items()
        }
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        args.json.write_text(json.dumps({"args": settings, "rows": out}, indent=2))


if __name__ == "__main__":
    main()
