"""The toy model taught the format: 100 SFT steps on the toy task's reference trajectories.

A random toy model never writes a block, so every PAPO rollout would be filtered and no RL step would
have a gradient; this one gives real, mixed rollouts (~90% valid trees, right and wrong answers). The
RL tests (``tests/conftest.py``'s ``format_model_dir``) and ``bench/rl_onpolicy.py`` start from it.
"""

from __future__ import annotations

import random
from pathlib import Path

import torch

from ..view import build_view, collate, tokenize_completion
from .model import build_model
from .task import PROMPT_TEMPLATE, make_problems, reference_trajectory
from .tokenizer import build_tokenizer


def save_format_model(out: str | Path) -> Path:
    """Fit a fresh toy model (seed 0) for 100 SFT steps on reference trajectories; save it with its tokenizer.

    Batches of 16 of 400 training problems through the canonical view, AdamW at lr 3e-3, all seeded:
    the same folder every time.
    """
    tokenizer = build_tokenizer()
    model = build_model(tokenizer, seed=0)
    views = []
    for problem in make_problems(400, seed=0):
        messages = [{"role": "user", "content": PROMPT_TEMPLATE.format(problem=problem["problem"])}]
        prompt = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        completion = reference_trajectory(problem["problem"]) + tokenizer.eos_token
        ids, prompt_length = tokenize_completion(tokenizer, prompt, completion)
        views.append(build_view(ids, tokenizer, prompt_length=prompt_length))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3, weight_decay=0.0)
    rng = random.Random(0)
    model.train()
    for _ in range(100):
        batch = collate(rng.sample(views, 16), tokenizer.pad_token_id)
        model(**batch).loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    out = Path(out)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out
