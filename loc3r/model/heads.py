"""The spatial heads on the LLM's final hidden states (paper Sec. 3.2-3.3).

- `LayoutHead`: one linear layer on every vision token -> BEV (mu_x, mu_y) and (log sigma_x, log sigma_y).
- `PositionHead`: a two-layer MLP on the <Pos> token -> the same four numbers for the speaker's position.
- `OrientationHead`: a two-layer MLP on the <Ori> token -> logits over the orientation bins.
`mlp` also builds the camera projector (prior token -> LLM width), the same shape as LLaVA's projector.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import nn


class GaussianXY(NamedTuple):
    """A diagonal Gaussian over BEV (x, y) in metres."""

    mu: torch.Tensor  # [..., 2] mean (x, y), metres
    log_sigma: torch.Tensor  # [..., 2] log standard deviation per axis


def mlp(d_in: int, d_hidden: int, d_out: int) -> nn.Sequential:
    """Linear -> GELU -> Linear (the two-layer MLP of the situation heads and of the camera projector)."""
    return nn.Sequential(nn.Linear(d_in, d_hidden), nn.GELU(), nn.Linear(d_hidden, d_out))


def _zero_log_sigma(layer: nn.Linear) -> None:
    """Start the log-sigma outputs (rows 2 and 3) at exactly 0 (sigma 1 m). With PyTorch's default init they start
    at random values of either sign: measured on the tiny preset, a layout NLL of ~260 and gradient norms of ~1e4
    in the first steps (exp(-2 log sigma) of a negative draw), which clipping then hides from the other losses."""
    with torch.no_grad():
        layer.weight[2:4].zero_()
        layer.bias[2:4].zero_()


class LayoutHead(nn.Module):
    def __init__(self, hidden_size: int):
        super().__init__()
        self.proj = nn.Linear(hidden_size, 4)
        _zero_log_sigma(self.proj)

    def forward(self, hidden: torch.Tensor) -> GaussianXY:  # hidden [..., D]
        out = self.proj(hidden)  # [..., 4]
        return GaussianXY(out[..., :2], out[..., 2:])


class PositionHead(nn.Module):
    def __init__(self, hidden_size: int):
        super().__init__()
        self.mlp = mlp(hidden_size, hidden_size, 4)
        _zero_log_sigma(self.mlp[-1])

    def forward(self, hidden: torch.Tensor) -> GaussianXY:  # hidden [B, D]
        out = self.mlp(hidden)  # [B, 4]
        return GaussianXY(out[..., :2], out[..., 2:])


class OrientationHead(nn.Module):
    def __init__(self, hidden_size: int, bins: int):
        super().__init__()
        self.mlp = mlp(hidden_size, hidden_size, bins)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:  # hidden [B, D] -> logits [B, bins]
        return self.mlp(hidden)

