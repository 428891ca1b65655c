"""Reading checkpoint weights: safetensors, `pytorch_model.bin` (weights_only) and sharded index files."""
from __future__ import annotations

import json
from pathlib import Path

import torch

from ..exceptions import CheckpointFormatError

__all__ = ["find_weight_files", "has_weights", "load_state_dict"]

# In order of preference (safetensors first, as PyLate and transformers do).
_CANDIDATES = (
    "model.safetensors",
    "model.safetensors.index.json",
    "pytorch_model.bin",
    "pytorch_model.bin.index.json",
)


def find_weight_files(folder: Path) -> list[Path]:
    """The weight files of a checkpoint folder (one file, or all shards of an index), preferred format first."""
    folder = Path(folder)
    for name in _CANDIDATES:
        path = folder / name
        if not path.is_file():
            continue
        if name.endswith(".index.json"):
            try:
                index = json.loads(path.read_text(encoding="utf-8"))
                shards = sorted(set(index["weight_map"].values()))
            except (OSError, ValueError, KeyError, AttributeError) as exc:
                raise CheckpointFormatError(f"{path} is not a valid sharded-weights index: {exc}") from exc
            files = [folder / s for s in shards]
            missing = [str(f) for f in files if not f.is_file()]
            if missing:
                raise CheckpointFormatError(f"{path} names shard files that are missing: {', '.join(missing)}")
            return files
        return [path]
    return []


def has_weights(folder: Path) -> bool:
    return any((Path(folder) / name).is_file() for name in _CANDIDATES)


def _load_file(path: Path) -> dict[str, torch.Tensor]:
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        obj = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointFormatError(f"cannot read weights from {path}: {type(exc).__name__}: {exc}") from exc
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointFormatError(f"{path} does not hold a flat state dict of tensors")
    return obj


def load_state_dict(folder: Path) -> dict[str, torch.Tensor]:
    """All tensors of a checkpoint folder on CPU, in their stored dtype.

    Raises:
        CheckpointFormatError: no weight file, an unreadable file, or a key present in two shards.
    """
    files = find_weight_files(folder)
    if not files:
        raise CheckpointFormatError(
            f"no weights in {folder}: expected one of {', '.join(_CANDIDATES)}"
        )
    state: dict[str, torch.Tensor] = {}
    for path in files:
        part = _load_file(path)
        dup = state.keys() & part.keys()
        if dup:
            raise CheckpointFormatError(f"{path} repeats keys of another shard: {sorted(dup)[:5]}")
        state.update(part)
    return state
