"""The served model's tensors by name: check an update against them, copy it in, read one back.

Names are the model's ``state_dict`` keys, the Hugging Face names SGLang's loaders take too. Tied
parameters (``lm_head.weight`` and ``model.embed_tokens.weight`` when embeddings are tied) are one
tensor under two names: either name updates it. An update is checked as a whole before anything is
copied (every name known, every shape equal, and for a checkpoint every parameter present), so a
refused update leaves the model as it was.

``CheckpointFolder`` reads the tensors of a folder of ``*.safetensors`` files (what ``save_pretrained``
writes, one file or shards) lazily: the shapes first, then one tensor at a time while copying.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open


class TensorError(ValueError):
    """An update that does not fit the model (names, shapes), or a folder that holds no checkpoint."""


class ModelTensors:
    """Name -> tensor of one model (its parameters and persistent buffers)."""

    def __init__(self, model: torch.nn.Module):
        self.by_name: dict[str, torch.Tensor] = dict(model.state_dict(keep_vars=True))
        storages: dict[int, str] = {}
        for name, param in model.named_parameters():  # named_parameters lists a tied parameter once
            storages.setdefault(param.data_ptr(), name)
        self.parameters = storages  # data_ptr -> one name of every distinct parameter

    def check(self, shapes: Mapping[str, Sequence[int]], *, complete: bool) -> None:
        """Refuse an update whose names or shapes do not fit (``complete``: it must cover every parameter).

        Two names of one tied tensor in an update are refused: the model that sent them is untied, and
        whichever came last would silently win.

        Raises:
            TensorError: the first few problems, each with its name.
        """
        problems = [f"unknown tensor {name!r}" for name in shapes if name not in self.by_name]
        problems += [
            f"{name}: shape {list(shape)}, the model's is {list(self.by_name[name].shape)}"
            for name, shape in shapes.items()
            if name in self.by_name and tuple(shape) != tuple(self.by_name[name].shape)
        ]
        names_of: dict[int, list[str]] = {}
        for name in shapes:
            if name in self.by_name:
                names_of.setdefault(self.by_name[name].data_ptr(), []).append(name)
        problems += [
            f"{' and '.join(names)} are one tensor on this server (tied), sent separately"
            for names in names_of.values()
            if len(names) > 1
        ]
        if complete and not problems:
            covered = set(names_of)
            problems += [f"missing tensor {name!r}" for ptr, name in self.parameters.items() if ptr not in covered]
        if problems:
            more = f" (and {len(problems) - 5} more)" if len(problems) > 5 else ""
            raise TensorError("; ".join(problems[:5]) + more)

    @torch.no_grad()
    def copy(self, tensors: Iterable[tuple[str, torch.Tensor]]) -> int:
        """Copy checked tensors into the model (cast to its dtype and device); returns how many."""
        count = 0
        for name, tensor in tensors:
            self.by_name[name].copy_(tensor)
            count += 1
        return count

    def read(self, name: str, truncate_size: int) -> list[Any]:
        """The first ``truncate_size`` rows of a tensor as nested lists (SGLang's ``/get_weights_by_name``).

        Raises:
            TensorError: no tensor of that name.
        """
        if name not in self.by_name:
            raise TensorError(f"Get parameter by name failed: the model has no tensor {name!r}")
        return self.by_name[name].detach()[:truncate_size].float().cpu().tolist()


class CheckpointFolder:
    """The tensors of a folder of ``*.safetensors`` files, read lazily."""

    def __init__(self, path: str | Path):
        folder = Path(path)
        if not folder.is_dir():
            raise TensorError(f"no such folder: {path}")
        files = sorted(folder.glob("*.safetensors"))
        if not files:
            raise TensorError(f"{path} holds no *.safetensors file (npr serve reads safetensors checkpoints)")
        self.files: dict[str, Path] = {}  # tensor name -> its file
        self.shapes: dict[str, list[int]] = {}
        for file in files:
            for name, shape in _shapes(file):
                if name in self.files:
                    raise TensorError(f"{name!r} is in both {self.files[name].name} and {file.name}")
                self.files[name], self.shapes[name] = file, shape

    def tensors(self) -> Iterable[tuple[str, torch.Tensor]]:
        """(name, tensor) of every tensor, one file open at a time."""
        for file in sorted(set(self.files.values())):
            with safe_open(file, framework="pt") as reader:
                for name in reader.keys():  # noqa: SIM118
                    yield name, reader.get_tensor(name)


def _shapes(file: Path) -> list[tuple[str, list[int]]]:
    try:
        with safe_open(file, framework="pt") as reader:
            return [(name, list(reader.get_slice(name).get_shape())) for name in reader.keys()]  # noqa: SIM118
    except (OSError, SafetensorError) as error:
        raise TensorError(f"{file}: not a readable safetensors file ({error})") from None
