"""The toy world: an offline char-level tokenizer, a tiny Qwen3 model and a verifiable arithmetic task.

``npr demo`` and the tests of every stage run on these, so the whole recipe works without downloads.
"""

from .format_model import save_format_model
from .model import build_model, save_toy_model
from .tokenizer import build_tokenizer

__all__ = ["build_model", "build_tokenizer", "save_format_model", "save_toy_model"]
