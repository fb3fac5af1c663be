"""A real tiny Qwen3 that writes the NPR format by itself (no logits processor needed).

Orthonormal token embeddings and an output head that reads them out as a bigram automaton of the
format (``<guideline>`` -> ``<plan>`` -> ``p``... -> ``</guideline>``; after a branch header ``s``...
``</step>``; after ``<takeaway>`` ``t``... ``</takeaway>`` then EOS or another block), with random sizes
at temperature 1. Its random attention and MLP layers still add context-dependent logits (a few
tenths), so a re-prefill at a join really changes the log-probabilities, as with a trained model.
Used by the server backends' tests (``test_sglang_engine.py``, ``tests/serve/``).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from npr_toolkit.toy import build_model
from npr_toolkit.view import tag_vocab
from npr_toolkit.view.semantics import SEMANTICS_KEY


def format_model(tokenizer, seed: int = 0, scale: float = 10.0):
    """A tiny Qwen3 whose output head is a bigram automaton of the NPR format (see the module doc)."""
    model = build_model(tokenizer, seed=seed, tie_word_embeddings=False)
    v = tag_vocab(tokenizer)
    size, hidden = len(tokenizer), model.config.hidden_size
    assert size <= hidden, "orthonormal embeddings need vocab <= hidden"

    def ch(c: str) -> int:
        return tokenizer.convert_tokens_to_ids(c)

    follow = {
        ch("\n"): {v.guideline_open: 1.0},  # the prompt ends with "assistant\n"
        v.guideline_open: {v.plan_open: 1.0},
        v.plan_open: {ch("p"): 1.0},
        ch("p"): {ch("p"): 0.5, v.plan_close: 0.5},
        v.plan_close: {v.plan_open: 0.5, v.guideline_close: 0.5},
        ch(":"): {ch("s"): 1.0},  # a branch header ends with "{i}:"
        ch("s"): {ch("s"): 0.75, v.step_close: 0.25},
        v.takeaway_open: {ch("t"): 1.0},
        ch("t"): {ch("t"): 0.5, v.takeaway_close: 0.5},
        v.takeaway_close: {ch("a"): 1.0},
        ch("a"): {ch("a"): 0.5, tokenizer.eos_token_id: 0.3, v.guideline_open: 0.2},
    }
    table = torch.full((size, size), -30.0)  # (V, V): row = current token, column = next token
    table[:, tokenizer.eos_token_id] = 0.0
    for token, nexts in follow.items():
        table[token] = -30.0
        for nxt, p in nexts.items():
            table[token, nxt] = math.log(p)
    generator = torch.Generator().manual_seed(seed)
    basis = torch.linalg.qr(torch.randn(hidden, hidden, generator=generator))[0][:size]  # (V, H) orthonormal
    with torch.no_grad():
        model.get_input_embeddings().weight[:size] = basis * scale
        model.get_output_embeddings().weight[:size] = table.T @ basis / math.sqrt(hidden)
    return model.eval()


def record_reprefill(folder) -> None:
    """Mark a saved checkpoint as trained with the reprefill semantics (what the client backends decode exactly),
    without touching the model object (fixtures share it)."""
    config = Path(folder) / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), SEMANTICS_KEY: "reprefill"}))
