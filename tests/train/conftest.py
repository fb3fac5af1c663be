"""Fixtures of the RL tests: a toy policy that already writes the format (so PAPO rollouts pass the filter)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
import torch

from npr_toolkit.toy import build_model, build_tokenizer
from npr_toolkit.toy.task import PROMPT_TEMPLATE, make_problems, reference_trajectory
from npr_toolkit.view import build_view, collate, tokenize_completion


@pytest.fixture(scope="session")
def format_model_dir(tmp_path_factory) -> Path:
    """The tiny model after 100 SFT steps on reference trajectories (~90% of its samples are valid trees).

    A random toy model never writes a block, so every PAPO rollout would be filtered and no step
    would have a gradient; this one gives real, mixed rollouts (valid, malformed, right, wrong).
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
    folder = tmp_path_factory.mktemp("format-model")
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder
