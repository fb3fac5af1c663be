"""Loading a model checkpoint or tokenizer (a folder or a hub id) with errors a user can act on.

Every command that loads a model goes through here: the torch engine (``npr generate``, ``npr eval``,
``npr serve``), training (``train/loading.py``) and the tokenizer options (``--tokenizer``). A failure
is one ``InputError`` line naming the path and what is wrong with it: no such directory, a folder that
holds no model (or no tokenizer), truncated or corrupt weights, a hub id that cannot be fetched.
Loading bars are kept out of the output.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Any

from .errors import InputError

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "tokenizer.model", "vocab.json", "vocab.txt")


def _looks_like_a_path(name: str) -> bool:
    """A hub id is ``name`` or ``org/name``; anything else that does not exist was meant as a local path."""
    return name.startswith(("/", ".", "~")) or name.count("/") > 1 or "\\" in name or name.endswith("/")


def _folder(name: str, kind: str) -> Path | None:
    """The local folder ``name`` names, or None for a hub id."""
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        raise InputError(f"{name}: cannot load {kind}: a file, not a folder")
    if _looks_like_a_path(name):
        raise InputError(f"{name}: cannot load {kind}: no such directory")
    return None


def _reason(exc: Exception) -> str:
    """The first line of a library's error; safetensors' own errors mean the weights file is damaged."""
    text = str(exc).strip().splitlines()
    first = text[0] if text else type(exc).__name__
    if type(exc).__name__ == "SafetensorError":
        return f"the weights are truncated or corrupt ({first})"
    return first


@contextmanager
def _quiet() -> Iterator[None]:
    """No "Loading weights" bars while loading (they are noise in a command's output)."""
    from transformers.utils import logging

    shown = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        yield
    finally:
        if shown:
            logging.enable_progress_bar()


def _load(kind: str, name: str, folder: Path | None, load: Callable[[], Any]) -> Any:
    try:
        with _quiet():
            return load()
    except Exception as exc:  # transformers raises OSError, ValueError, ImportError, SafetensorError, ...
        where = "" if folder is not None else "no local folder of that name, and from the Hugging Face hub: "
        raise InputError(f"{name}: cannot load {kind}: {where}{_reason(exc)}") from None


def load_tokenizer(name: str | Path, kind: str = "tokenizer") -> Any:
    """The tokenizer of a folder or hub id (``kind`` names what is being loaded in errors).

    Raises:
        InputError: no such directory, a folder without tokenizer files, or any failure to load it.
    """
    from transformers import AutoTokenizer

    name = str(name)
    folder = _folder(name, kind)
    if folder is not None and not any((folder / file).is_file() for file in TOKENIZER_FILES):
        files = " or ".join(TOKENIZER_FILES[:2])
        raise InputError(f"{name}: cannot load {kind}: no tokenizer in the folder (no {files})")
    return _load(kind, name, folder, partial(AutoTokenizer.from_pretrained, name))


def load_checkpoint(
    name: str | Path, *, dtype: Any = None, attn_implementation: str = "sdpa", device: str | None = None
) -> tuple[Any, Any]:
    """(model, tokenizer) of a causal LM checkpoint, the model in ``dtype`` on ``device`` (if given).

    Raises:
        InputError: no such directory, a folder that holds no model, damaged weights, an unknown hub
            id, or any other failure to load it (the message names the checkpoint).
    """
    from transformers import AutoModelForCausalLM

    name = str(name)
    folder = _folder(name, "model")
    if folder is not None and not (folder / "config.json").is_file():
        raise InputError(f"{name}: cannot load model: not a model folder (no config.json)")
    tokenizer = load_tokenizer(name, kind="model")
    load = partial(AutoModelForCausalLM.from_pretrained, name, dtype=dtype, attn_implementation=attn_implementation)
    model = _load("model", name, folder, load)
    return (model if device is None else model.to(device)), tokenizer
