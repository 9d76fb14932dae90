"""The pose-prior interface: what fills the camera-token slot in front of each frame's vision tokens.

A prior is a frozen module with a width `dim` whose `forward(batch)` returns one token per frame,
[B, T, dim], or None when there is no camera token at all (the `none` ablation). The model projects the
tokens to the LLM width with its trainable `camera_projector` (paper Sec. 3.1).

- `PosesPrior` (poses.py): known camera poses encoded as translation + 6D rotation.
- `CachedTokensPrior` (here): tokens computed offline by a 3D foundation model (CUT3R's camera token, see
  cut3r.py) and cached per scene; the collate puts them in `batch.camera_tokens`.
- `NoPrior` (here): no camera token.
"""

from __future__ import annotations

import torch
from torch import nn

from loc3r.errors import Loc3rError


class PosePrior(nn.Module):
    """Frozen per-frame camera tokens: forward(batch) -> [B, T, dim] or None."""

    dim: int = 0  # width of one camera token

    def forward(self, batch) -> torch.Tensor | None:
        raise NotImplementedError


class NoPrior(PosePrior):
    """Ablation without camera tokens: the video block holds vision tokens only."""

    def forward(self, batch) -> None:
        return None


class CachedTokensPrior(PosePrior):
    """Camera tokens precomputed by a frozen model (CUT3R) and read from the batch."""

    def __init__(self, dim: int):
        super().__init__()
        self.dim = dim

    def forward(self, batch) -> torch.Tensor:
        tokens = batch.camera_tokens
        if tokens is None:
            raise Loc3rError("the cut3r prior needs cached camera tokens: the batch has no 'camera_tokens' "
                             "(compute the CUT3R cache of these scenes first)")
        if tokens.shape[-1] != self.dim:
            raise Loc3rError(f"camera tokens have width {tokens.shape[-1]}, the model expects {self.dim}")
        return tokens  # [B, T, dim]
