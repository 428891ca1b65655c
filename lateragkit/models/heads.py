"""Projection heads: Stanford `linear` (no bias) and PyLate / sentence-transformers Dense chains."""
from __future__ import annotations

import json
from pathlib import Path

import torch
from torch import nn

from ..exceptions import CheckpointFormatError
from .weights import load_state_dict

_ACTIVATIONS: dict[str, type[nn.Module]] = {
    "torch.nn.modules.linear.Identity": nn.Identity,
    "torch.nn.modules.activation.Tanh": nn.Tanh,
    "torch.nn.modules.activation.ReLU": nn.ReLU,
    "torch.nn.modules.activation.GELU": nn.GELU,
    "torch.nn.modules.activation.Sigmoid": nn.Sigmoid,
    "torch.nn.modules.activation.SiLU": nn.SiLU,
}


def stanford_linear(weight: torch.Tensor, hidden_size: int, where: str) -> nn.Linear:
    """`Linear(hidden, dim, bias=False)` from an HF_ColBERT `linear.weight` [dim, hidden]."""
    if weight.dim() != 2 or weight.shape[1] != hidden_size:
        raise CheckpointFormatError(
            f"{where}: linear.weight has shape {tuple(weight.shape)}, expected [dim, {hidden_size}]"
        )
    layer = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device="meta")
    layer.load_state_dict({"weight": weight.float()}, assign=True)
    return layer


class DenseLayer(nn.Module):
    """One PyLate Dense module: `act(linear(x))`, plus `x` or `residual(x)` when `use_residual`."""

    def __init__(self, linear: nn.Linear, activation: nn.Module, residual: nn.Module | None) -> None:
        super().__init__()
        self.linear = linear
        self.activation = activation
        self.residual = residual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.activation(self.linear(x))
        if self.residual is not None:
            y = y + self.residual(x)
        return y


def load_dense(folder: Path, in_features: int) -> DenseLayer:
    """A Dense module folder (`config.json` + weights) as written by PyLate / sentence-transformers."""
    cfg_path = folder / "config.json"
    try:
        cfg = json.loads(cfg_path.read_text(encoding="utf-8"))
        fin, fout = int(cfg["in_features"]), int(cfg["out_features"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise CheckpointFormatError(f"{cfg_path}: not a Dense module config ({exc})") from exc
    if fin != in_features:
        raise CheckpointFormatError(f"{cfg_path}: in_features {fin} does not follow the previous size {in_features}")
    act_name = str(cfg.get("activation_function", "torch.nn.modules.linear.Identity"))
    if act_name not in _ACTIVATIONS:
        raise CheckpointFormatError(f"{cfg_path}: activation {act_name!r} is not supported")
    state = load_state_dict(folder)
    bias = bool(cfg.get("bias", True))
    use_residual = bool(cfg.get("use_residual", False))
    expected = {"linear.weight"} | ({"linear.bias"} if bias else set())
    if use_residual and fin != fout:
        expected.add("residual.weight")
    if set(state) != expected:
        raise CheckpointFormatError(
            f"{folder}: Dense weights {sorted(state)} do not match its config ({sorted(expected)})"
        )
    linear = nn.Linear(fin, fout, bias=bias, device="meta")
    lin_state = {"weight": state["linear.weight"].float()}
    if bias:
        lin_state["bias"] = state["linear.bias"].float()
    try:
        linear.load_state_dict(lin_state, assign=True)
        residual: nn.Module | None = None
        if use_residual:
            if fin == fout:
                residual = nn.Identity()
            else:
                residual = nn.Linear(fin, fout, bias=False, device="meta")
                residual.load_state_dict({"weight": state["residual.weight"].float()}, assign=True)
    except RuntimeError as exc:  # size mismatch
        raise CheckpointFormatError(f"{folder}: Dense weight shapes do not match in/out features {fin}/{fout}") from exc
    return DenseLayer(linear, _ACTIVATIONS[act_name](), residual)


def pylate_head(root: Path, dense_dirs: list[str], hidden_size: int) -> tuple[nn.Module | None, int]:
    """The Dense chain of a PyLate model and its output size (None, hidden_size without Dense modules)."""
    if not dense_dirs:
        return None, hidden_size
    layers: list[nn.Module] = []
    size = hidden_size
    for sub in dense_dirs:
        layer = load_dense(root / sub, size)
        layers.append(layer)
        size = layer.linear.out_features
    return nn.Sequential(*layers), size
