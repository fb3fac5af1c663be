"""Benchmark: how far re-prefill decoding (DESIGN §3b) drifts from the canonical semantics a model was trained on.

The SGLang backend (``engine/sglang_engine.py``) forks by sending one request per branch and joins
by re-prefilling the concatenated branches causally, as NPR's official engine does on vanilla
SGLang; the torch engine does the same in ``reprefill`` semantics. For a model trained on the
canonical view (DESIGN §3: siblings kept apart, positions restarted) both are an approximation, which
the SGLang backend accepts only with ``allow_approximate=True``. This script puts a number on it, on
the tiny model, float32, CPU:

1. a toy model is trained on the toy task's reference trajectories with the canonical training view
   (the same view ``npr train sft`` uses; a short plain-torch loop, ``--steps``), so that it writes
   the format by itself: ``npr serve`` has no logits processor. ``--model DIR`` skips the training
   (e.g. an ``npr demo`` SFT checkpoint);
2. ``npr serve`` runs in a thread on 127.0.0.1 over the torch engine (sequential mode);
3. the same held-out prompts are sampled by the torch engine in canonical semantics (exact), by the
   torch engine in reprefill semantics and by ``SGLangEngine`` against that server, with the same
   parameters (the last two compute the same semantics: their rows should agree within sampling noise);
4. every recorded log-probability is compared with the exact recomputation by the training view
   (``build_view(mode="canonical")``) of the same completion, split into trunk tokens before the
   first join, branch tokens, and trunk tokens after a join. For the SGLang backend it also reports
   the re-prefill check (recorded log-probabilities vs a plain causal forward of the flat text, which
   is what a re-prefill computes) and the KL divergence, exact || re-prefill, of the next-token
   distributions after a join;
5. format validity (strict profile) and accuracy of both backends on the same prompts.

    python bench/sglang_divergence.py                      # train 400 steps, 48 held-out prompts x 2
    python bench/sglang_divergence.py --model runs/demo/sft --problems 100 --json out.json

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

GROUPS = ("trunk before the first join", "branches before it", "after a join")


# --- the model ------------------------------------------------------------------------------------
def prompt_text(tokenizer, problem: str) -> str:
    messages = [{"role": "user", "content": PROMPT_TEMPLATE.format(problem=problem)}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def train(tokenizer, steps: int, batch: int, lr: float, seed: int) -> Any:
    """A toy model fitted on reference trajectories through the canonical view (tree targets and masks)."""
    model = build_model(tokenizer, seed=seed)
    views = []
    for record in make_problems(4000, split="train", seed=seed):
        ids, size = tokenize_completion(
            tokenizer, prompt_text(tokenizer, record["problem"]), reference_trajectory(record["problem"])
        )
        views.append(build_view([*ids, tokenizer.eos_token_id], tokenizer, prompt_length=size))
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


def closed_view(gen: Generation, tokenizer) -> tuple[Any, int] | None:
    """The canonical view of ``gen`` and how many completion tokens it covers, or None.

    A malformed or truncated completion is not a tree: its offending last token is dropped and the
    open structure closed with tags the engine would have to add; appended tokens come after every
    measured one, so (causal attention, positions fixed at the fork) they change none of them.
    """
    v = tag_vocab(tokenizer)
    size = len(gen.prompt_ids)
    keep = len(gen.completion_ids) - (gen.finish_reason == "malformed")
    ids, inserted = gen.prompt_ids + gen.completion_ids[:keep], [False] * size + gen.inserted[:keep]
    for suffix in ([], [v.takeaway_close], [v.step_close, v.takeaway_open, v.takeaway_close]):
        try:
            view = build_view(ids + suffix, tokenizer, prompt_length=size, inserted=inserted + [True] * len(suffix))
        except ViewError:
            continue
        return view, keep
    return None


def measure(model, tokenizer, gens: list[Generation], approximate: bool) -> dict[str, Any]:
    """Per-group |recorded - exact| log-probabilities; for re-prefill backends also the causal check and KL.

    The re-prefill check and the KL use trunk tokens only: a trunk request's context is the whole
    flat text so far, which a plain causal forward of the completion reproduces exactly.
    """
    join_open = tag_vocab(tokenizer).takeaway_open
    diffs: dict[str, list[float]] = {group: [] for group in GROUPS}
    causal_diffs: list[float] = []
    kls: list[float] = []
    skipped = 0
    for gen in gens:
        found = closed_view(gen, tokenizer)
        if found is None:
            skipped += 1
            continue
        view, keep = found
        size = len(gen.prompt_ids)
        batch = collate([view], pad_id=tokenizer.pad_token_id)
        ids = view.input_ids.tolist()
        exact = forward_logprobs(
            model, ids, attention_mask=batch["attention_mask"], position_ids=batch["position_ids"]
        )  # (L, V) the tree semantics
        flat = forward_logprobs(model, ids) if approximate else None  # (L, V) what a re-prefill computes
        first_join = gen.completion_ids.index(join_open) if join_open in gen.completion_ids else keep
        for j in range(keep):
            token, recorded = gen.completion_ids[j], gen.logprobs[j]
            if recorded is None:
                continue
            at = size + j - 1  # the position whose logits chose token j
            in_branch = bool((view.block_ids[:, size + j] >= 0).any())
            group = GROUPS[2] if j > first_join else GROUPS[1] if in_branch else GROUPS[0]
            diffs[group].append(abs(recorded - float(exact[at, token])))
            if flat is not None and not in_branch:
                causal_diffs.append(abs(recorded - float(flat[at, token])))
                if j > first_join:
                    p = exact[at].exp()
                    kls.append(float((p * (exact[at] - flat[at])).sum()))
    return {"diffs": diffs, "causal": causal_diffs, "kl": kls, "skipped": skipped}


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
    parser.add_argument("--save", type=Path, help="keep the trained model here (reuse it with --model)")
    parser.add_argument("--steps", type=int, default=400, help="training steps (canonical view)")
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

    with tempfile.TemporaryDirectory() as folder:
        if args.model:
            model_dir = args.model
            loaded = TorchEngine.from_pretrained(model_dir, device="cpu", dtype="float32")
            tokenizer, model = loaded.tokenizer, loaded.model
        else:
            tokenizer = build_tokenizer()
            print(f"training {args.steps} steps (batch {args.batch}, canonical view) ...", flush=True)
            model = train(tokenizer, args.steps, args.batch, args.lr, args.seed)
            model_dir = str(args.save or folder)
            model.save_pretrained(model_dir)
            tokenizer.save_pretrained(model_dir)
        engine = TorchEngine(model, tokenizer, semantics="canonical")

        records = make_problems(args.problems, split="heldout", seed=args.seed)
        prompts = [prompt_text(tokenizer, r["problem"]) for r in records]
        answers = [r["answer"] for r in records]
        params = SamplingParams(
            max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed, n=args.samples
        )
        with Server(engine, ServeConfig(port=0, max_queue=4096, max_outputs=4096)) as url:
            # A canonical checkpoint: the SGLang backend's approximation is what is measured.
            client = SGLangEngine(model_dir, server_url=url, allow_approximate=True)
            backends = {
                "torch (exact)": (engine, False),
                "torch reprefill": (TorchEngine(model, tokenizer, semantics="reprefill"), True),
                "sglang-style vs npr serve": (client, True),
            }
            rows, samples = {}, {}
            for name, (backend, approximate) in backends.items():
                started = time.perf_counter()
                gens = samples[name] = backend.generate(prompts, params)
                seconds = time.perf_counter() - started
                rows[name] = (measure(model, tokenizer, gens, approximate), quality(gens, answers), seconds)

    print(
        f"\n{platform.processor() or platform.machine()}, torch {torch.__version__}, float32, {args.threads} thread(s)"
    )
    print(
        f"{args.problems} held-out prompts x {args.samples} samples, temperature {args.temperature}, "
        f"max_new_tokens {args.max_new_tokens}, seed {args.seed}\n"
    )
    print("|logprob recorded - exact view|, mean / max (n tokens):")
    print(f"| backend | {' | '.join(GROUPS)} | re-prefill check (trunk) | KL after join, trunk (mean / max) |")
    print("|---|" + "---|" * (len(GROUPS) + 2))
    for name, (m, _, _) in rows.items():
        kl = f"{statistics.mean(m['kl']):.2e} / {max(m['kl']):.2e}" if m["kl"] else "-"
        cells = [summary(m["diffs"][g]) for g in GROUPS] + [summary(m["causal"]), kl]
        print(f"| {name} | {' | '.join(cells)} |")
    print("\n| backend | strict-valid | accuracy | stop | blocks/sample | no view (not measured above) | wall s |")
    print("|---|---|---|---|---|---|---|")
    for name, (m, q, seconds) in rows.items():
        print(
            f"| {name} | {q['valid']:.3f} | {q['accuracy']:.3f} | {q['finish_stop']:.3f} | "
            f"{q['blocks']:.2f} | {m['skipped']} | {seconds:.1f} |"
        )
    pairs = list(zip(samples["torch reprefill"], samples["sglang-style vs npr serve"], strict=True))
    alike = [(a, b) for a, b in pairs if a.completion_ids == b.completion_ids]
    gap = max(
        (abs(x - y) for a, b in alike for x, y in zip(a.logprobs, b.logprobs, strict=True) if x is not None),
        default=0.0,
    )
    print(
        f"\ntorch reprefill vs sglang-style: {len(alike)} of {len(pairs)} completions identical "
        f"(log-probabilities within {gap:.1e} on them)"
    )
    if args.json:
        out = {
            name: {
                "groups": {g: {"mean": statistics.mean(v), "max": max(v)} for g, v in m["diffs"].items() if v},
                "reprefill_check_max": max(m["causal"], default=None),
                "kl_after_join_mean": statistics.mean(m["kl"]) if m["kl"] else None,
                "quality": q,
                "wall_s": seconds,
                "skipped": m["skipped"],
            }
            for name, (m, q, seconds) in rows.items()
        }
        settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()}
        args.json.write_text(json.dumps({"args": settings, "rows": out}, indent=2))


if __name__ == "__main__":
    main()
