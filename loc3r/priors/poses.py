"""The `poses` prior: known camera poses (phone AR, SLAM, data-set poses) as the per-frame camera token.

Each frame's camera-to-BEV pose is encoded as translation (metres, 3) + the first two columns of its rotation
matrix (the continuous 6D rotation representation of Zhou et al. 2019, 6) + a validity flag (1). The BEV frame
is anchored to the first frame, so the BEV pose already is the pose relative to the first camera. Invalid
(non-finite) poses, as ScanNet writes where tracking was lost, become zeros with the flag 0.
"""

from __future__ import annotations

import torch

from loc3r.priors.base import PosePrior


class PosesPrior(PosePrior):
    dim = 10  # 3 translation + 6 rotation + 1 validity flag

    def forward(self, batch) -> torch.Tensor:
        c2bev = batch.camera_poses_bev.float()  # [B, T, 4, 4]
        valid = torch.isfinite(c2bev).all(-1).all(-1)  # [B, T]
        c2bev = torch.where(valid[..., None, None], c2bev, torch.zeros_like(c2bev))
        t = c2bev[..., :3, 3]  # [B, T, 3] metres
        rot6 = c2bev[..., :3, :2].transpose(-1, -2).flatten(-2)  # [B, T, 6]: column 0 then column 1
        return torch.cat([t, rot6, valid[..., None].float()], -1)  # [B, T, 10]
