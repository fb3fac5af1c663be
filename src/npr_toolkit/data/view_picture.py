"""The training view of one trajectory as a picture: ``npr-data show FILE --mask OUT.png``.

For each semantics of ``view.build_view`` (``ViewMode``: every mode the view knows, so a new one is
drawn without a change here) one column: the attention mask (query token x key token, dark = may
attend) and, under it, the position of every token, with forks, branch ends and joins marked. It reads
only the view's dense mask, positions and length, so a mode whose sequence differs from the text
(a packed layout) is drawn the same way.
"""

from __future__ import annotations

import typing
from pathlib import Path
from typing import Any

from ..format import tags
from ..view import ViewError, build_view, tag_vocab, tokenize_completion
from ..view.build import ViewMode
from .io import InputError

MODES: tuple[str, ...] = typing.get_args(ViewMode)
TICK_TAGS = (tags.GUIDELINE_OPEN, tags.GUIDELINE_CLOSE, tags.STEP_CLOSE, tags.TAKEAWAY_OPEN)  # fork, branch ends, join
MAX_TICKS = 48  # more labels than this would be unreadable: the tags are then not labelled


def draw_views(completion: str, tokenizer: Any, out: str | Path, *, where: str = "") -> Path:
    """Draw the views of ``completion`` (tokenized as the engine emits it) into the PNG ``out``.

    Raises:
        InputError: the completion is not a tree the view can build (the message names the token).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ids, _ = tokenize_completion(tokenizer, "", completion)
    try:
        views = {mode: build_view(ids, tokenizer, mode=mode, prompt_length=0) for mode in MODES}
    except ViewError as exc:
        raise InputError(f"{where or 'the completion'}: no training view: {exc}") from None
    ticked = {tag_vocab(tokenizer).ids[tag] for tag in TICK_TAGS}
    figure, axes = plt.subplots(
        2, len(views), figsize=(5.5 * len(views), 7.5), squeeze=False, gridspec_kw={"height_ratios": [4, 1.3]}
    )
    for column, (mode, view) in enumerate(views.items()):
        tokens = view.input_ids.tolist()
        tag_at = [(i, tokenizer.convert_ids_to_tokens(t)) for i, t in enumerate(tokens) if t in ticked]
        mask_axes, position_axes = axes[0][column], axes[1][column]
        mask_axes.imshow(view.dense_mask().numpy(), cmap="Greys", interpolation="nearest", vmin=0, vmax=1)
        mask_axes.set_title(f"{mode}: {len(view)} tokens")
        mask_axes.set_xlabel("key token")
        mask_axes.set_ylabel("query token")
        position_axes.step(range(len(view)), view.position_ids.tolist(), where="mid", linewidth=1)
        position_axes.set_xlim(-0.5, len(view) - 0.5)
        position_axes.set_xlabel("token")
        position_axes.set_ylabel("position")
        if len(tag_at) <= MAX_TICKS:
            for target in (mask_axes, position_axes):
                target.set_xticks([i for i, _ in tag_at], [name for _, name in tag_at], rotation=90, fontsize=6)
            mask_axes.set_yticks([i for i, _ in tag_at], [name for _, name in tag_at], fontsize=6)
    figure.suptitle(f"training view of {where or 'a completion'} (mask: black where a query token may attend)")
    figure.tight_layout()
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)
    plt.close(figure)
    return out
