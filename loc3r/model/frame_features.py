"""The features of a frozen vision tower kept by frame, so that a training run that sees its frames many times (the
tiny preset's 400 rooms, 900 steps of 64 frames) runs the tower once per distinct frame."""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import torch


class FrameFeatures:
    """Tower features [P, C] by frame, the frame known by a hash of its pixels, kept until `max_bytes` are held
    (frames past it are computed each time). Valid only for a tower that gives a frame the same features every time:
    no trainable weights, no dropout (Loc3R.tower_features' caller checks)."""

    def __init__(self, max_bytes: int):
        self.max_bytes = max_bytes
        self.held = 0
        self.store: dict[bytes, torch.Tensor] = {}

    def __call__(self, frames: torch.Tensor, compute: Callable[[torch.Tensor], torch.Tensor]) -> torch.Tensor:
        """The features [N, P, C] of frames [N, 3, S, S] (CPU tensors), `compute` run on the frames not yet held."""
        raw = frames.contiguous().view(torch.uint8).reshape(len(frames), -1).numpy()  # any dtype's bytes (bf16 too)
        keys = [hashlib.blake2b(f.tobytes(), digest_size=16).digest() for f in raw]
        found = {k: self.store[k] for k in keys if k in self.store}
        first = {k: i for i, k in reversed(list(enumerate(keys)))}  # each distinct frame's first index
        missing = [i for k, i in first.items() if k not in found]
        if missing:
            with torch.no_grad():
                computed = compute(frames[missing])
            for i, features in zip(missing, computed):
                found[keys[i]] = features
                size = features.numel() * features.element_size()
                if keys[i] not in self.store and self.held + size <= self.max_bytes:
                    self.store[keys[i]] = features.clone()  # not a view that keeps the whole batch alive
                    self.held += size
        return torch.stack([found[k] for k in keys])
