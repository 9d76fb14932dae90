"""`loc3r show`: a scene's bird's-eye view in the BEV frame of its video.

Draws the room's points unprojected from depth (coloured by RGB), the camera trajectory, object labels (when
the scene has a synthetic-room description), and optionally one SQA3D situation: its position and facing arrow.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loc3r import geometry
from loc3r.command import add_dataclass_arguments, dataclass_from_args
from loc3r.data.dataset import is_situated
from loc3r.data.scannet import ScanNetScene
from loc3r.data.sqa3d import SPLITS, SQA3DRecord, read_sqa3d, sqa3d_paths
from loc3r.errors import Loc3rError
from loc3r.evaluate.plots import draw_pose, layout_mask, objects_bev, scene_points_bev
from loc3r.io import atomic_path


@dataclass
class ShowConfig:
    """The settings of `loc3r show` (its flags are generated from these fields and their comments)."""

    data: Path  # data root (scans/ and sqa_task/ inside)
    scene: str  # scene id, e.g. scene0000_00
    out: Path  # output PNG file
    situation: int | None = None  # index of the scene's situation to draw (0-based)
    frames: int = 16  # frames unprojected for the point cloud


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(p, ShowConfig)


def scene_records(root: Path, scene_id: str) -> list[SQA3DRecord]:
    """The scene's situated SQA3D records over all splits present, one per distinct situation text."""
    out, seen = [], set()
    for split in SPLITS:
        if sqa3d_paths(root, split)[0].exists():
            for r in read_sqa3d(root, split):
                if r.scene_id == scene_id and is_situated(r.situation) and r.situation not in seen:
                    seen.add(r.situation)
                    out.append(r)
    return out


def render(root: Path, scene_id: str, situation: int | None, out: Path, num_frames: int = 16) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    scene = ScanNetScene(root, scene_id)
    if not scene.valid_frame_ids:
        raise Loc3rError(f"{scene.pose_dir}: no frame has a valid (finite) pose: nothing to draw a bird's-eye "
                         "view from")
    poses = scene.read_poses(scene.valid_frame_ids)
    w2b = geometry.bev_frame_of_video(poses)
    pts, cols = scene_points_bev(scene, w2b, num_frames)
    if len(pts) == 0:
        raise Loc3rError(f"{scene.files.depth(0).parent}: every depth pixel of the sampled frames is zero (no valid "
                         "depth): nothing to draw")
    keep = layout_mask(pts)
    traj = geometry.poses_to_bev(w2b, poses)[:, :2, 3]

    fig, ax = plt.subplots(figsize=(7, 7), dpi=120)
    ax.scatter(pts[keep, 0], pts[keep, 1], c=cols[keep], s=2, linewidths=0)
    ax.plot(traj[:, 0], traj[:, 1], "-", color="tab:orange", lw=1.5, label="camera trajectory")
    draw_pose(ax, traj[0], np.pi / 2, "tab:orange", "first frame (BEV origin)", length=0.4)
    for label, c in objects_bev(root, scene_id, w2b):
        ax.annotate(label, c, fontsize=7, ha="center", color="black",
                    bbox=dict(boxstyle="round,pad=0.15", fc="white", alpha=0.7, lw=0))
    title = scene_id
    if situation is not None:
        records = scene_records(root, scene_id)
        if not records:
            raise Loc3rError(f"{root / 'sqa_task' / 'balanced'}: no situated question of {scene_id} in any split "
                             "(--situation needs the SQA3D files)")
        if not 0 <= situation < len(records):
            raise Loc3rError(f"{root / 'sqa_task' / 'balanced'}: {scene_id} has {len(records)} situations, "
                             f"--situation {situation} is out of range")
        rec = records[situation]
        if not scene.mesh_path.exists():
            raise Loc3rError(f"{scene.mesh_path}: file not found (SQA3D positions are relative to the mesh centre)")
        xy, yaw = rec.pose_in_bev(w2b, scene.mesh_bbox_center)
        draw_pose(ax, xy, yaw, "tab:red", "situation", length=0.6)
        title += f"\n{rec.situation}"
    ax.set_title(title, fontsize=9, wrap=True)
    ax.set_xlabel("BEV x (m)")
    ax.set_ylabel("BEV y (m)")
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper right", fontsize=7)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def run(args: argparse.Namespace) -> int:
    c = dataclass_from_args(ShowConfig, args)
    render(c.data, c.scene, c.situation, c.out, c.frames)
    print(f"wrote {c.out}")
    return 0
