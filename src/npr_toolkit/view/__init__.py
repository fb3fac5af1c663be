"""The training view (docs/design.md §3, §3b): token ids -> positions, targets and attention masks.

``build_view(ids, tokenizer, mode=..., prompt_length=...)`` gives what an engine computes for the
same text: ``canonical`` (the KV cache is spliced at a join), ``reprefill`` (a join re-reads the
branches, as a stock server does; trie-packed) or ``npr-compat`` (the official NPR-Beta training code).
``collate`` batches views of any mode; ``completion_values`` (``TreeView.gather`` per row) maps per-position
results, e.g. log-probs, back to the completion's tokens.
"""

from .batch import collate, completion_values
from .build import IGNORE, MODES, TreeView, ViewError, ViewMode, build_view, causal_view
from .masks import additive, dense, visible
from .tokens import TagVocab, add_tag_tokens, tag_token_ids, tag_vocab, tokenize_completion

__all__ = [
    "IGNORE",
    "MODES",
    "TagVocab",
    "TreeView",
    "ViewError",
    "ViewMode",
    "add_tag_tokens",
    "additive",
    "build_view",
    "causal_view",
    "collate",
    "completion_values",
    "dense",
    "tag_token_ids",
    "tag_vocab",
    "tokenize_completion",
    "visible",
]
