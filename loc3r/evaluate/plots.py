"""Bird's-eye plots of a prediction: the model's own map of the room (every vision token at the BEV (x, y) its
layout head predicts, coloured by the token's pixels: the paper's "cognitive map"), the room's points from depth
(the truth), ground truth and predicted position (with its 1- and 2-sigma ellipses), facing arrows, and the
36-bin yaw distribution as a polar inset. Everything in BEV metres."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from loc3r import geometry
from loc3r.data.scannet import ScanNetScene
from loc3r.evaluate.report import degrees, mark, metres
from loc3r.io import atomic_path


def draw_pose(ax, xy, yaw_rad, color, label, length=0.5):
    """A position dot and a facing arrow (yaw counter-clockwise from +x) on BEV axes."""
    ax.plot(*xy, "o", color=color, ms=6, zorder=6, label=label)
    ax.arrow(xy[0], xy[1], length * np.cos(yaw_rad), length * np.sin(yaw_rad), width=0.035,
             color=color, length_includes_head=True, zorder=6)


def token_colors(frames: np.ndarray, grid_hw: tuple[int, int], extent: float = 1.0) -> np.ndarray:
    """[T, n, 3] mean colour in [0, 1] of the pixels each pooled vision token covers (frames [T, S, S, 3] uint8;
    cells as geometry.token_cell_index, the same ones the layout targets use)."""
    from loc3r import geometry

    T, H, W, _ = frames.shape
    cell = geometry.token_cell_index(H, W, grid_hw, extent).reshape(-1)  # [H * W]
    n = grid_hw[0] * grid_hw[1]
    inside = cell >= 0
    counts = np.bincount(cell[inside], minlength=n).astype(np.float64)
    out = np.zeros((T, n, 3))
    for t in range(T):
        pixels = frames[t].reshape(-1, 3)[inside].astype(np.float64)
        for k in range(3):
            out[t, :, k] = np.bincount(cell[inside], pixels[:, k], minlength=n)
    return out / np.maximum(counts, 1)[None, :, None] / 255.0


def objects_bev(root: Path, scene_id: str, world_to_bev) -> list[tuple[str, np.ndarray]]:
    """(label, BEV centre [2]) of the objects of a synthetic room's description, [] for other scans."""
    import json

    path = root / "synth" / f"{scene_id}.json"
    if not path.exists():
        return []
    desc = json.loads(path.read_text())
    out = []
    for obj in desc["objects"]:
        center = geometry.world_to_bev_points(world_to_bev, np.asarray(obj["center"], np.float64))
        out.append((f"{obj['color']} {obj['category']}", center[:2]))
    return out


def _situation_panel(ax, title: str, trajectory=None, pred_xy=None, pred_sigma=None, pred_yaw=None, gt_xy=None,
                     gt_yaw=None, trajectory_label: str = "camera path") -> None:
    """Camera path, ground-truth and predicted poses (1- and 2-sigma ellipses) on a BEV axes; every marker in the
    legend."""
    from matplotlib.patches import Ellipse

    if trajectory is not None and np.isfinite(trajectory).all():
        ax.plot(trajectory[:, 0], trajectory[:, 1], "-", color="tab:orange", lw=1.2, label=trajectory_label)
        ax.plot(*trajectory[0], "s", color="tab:orange", ms=5, label="first frame's camera")
    if gt_xy is not None:
        draw_pose(ax, gt_xy, gt_yaw, "tab:green", "ground truth (position, facing)")
    if pred_xy is not None:
        for k in (1, 2):
            ax.add_patch(Ellipse(pred_xy, 2 * k * pred_sigma[0], 2 * k * pred_sigma[1], fill=False, color="tab:red",
                                 lw=1.2, ls="-" if k == 1 else "--", zorder=5, label=f"predicted {k}σ"))
        draw_pose(ax, pred_xy, pred_yaw, "tab:red", "prediction (position, facing)")
    ax.set_aspect("equal")
    ax.set_xlabel("BEV x (m)")
    ax.set_ylabel("BEV y (m)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=6.5, framealpha=0.85)
    ax.set_title(title, fontsize=8)


def draw_prediction(points=None, colors=None, trajectory=None, pred_xy=None, pred_sigma=None, pred_yaw=None,
                    yaw_probs=None, gt_xy=None, gt_yaw=None, title: str = "", out: Path | None = None,
                    map_xy=None, map_colors=None, objects=(), errors: str = "",
                    trajectory_label: str = "camera path") -> None:
    """One figure; any part may be None. points [N, 3] / colors [N, 3] in [0, 1]: the room from depth (the
    truth); map_xy [M, 2] / map_colors [M, 3]: the model's own bird's-eye map, every vision token at the (x, y) its
    layout head predicts, coloured by the token's pixels (drawn as a panel of its own, left of the truth);
    trajectory [T, 2]; objects: (label, BEV (x, y)) written on the truth panel; errors: a line written on the figure
    (position and yaw error, the answer's mark)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [k for k, v in (("map", map_xy), ("truth", points)) if v is not None] or ["truth"]
    width = 0.62 if len(panels) == 1 else 0.36
    fig = plt.figure(figsize=(9 if len(panels) == 1 else 14, 6.5), dpi=110)
    axes = {}
    for k, name in enumerate(panels):
        axes[name] = fig.add_axes([0.06 + k * (width + 0.06), 0.08, width, 0.8])
    pose = dict(trajectory=trajectory, pred_xy=pred_xy, pred_sigma=pred_sigma, pred_yaw=pred_yaw,
                trajectory_label=trajectory_label)
    if "map" in axes:
        ax = axes["map"]
        ax.scatter(map_xy[:, 0], map_xy[:, 1], c=np.clip(map_colors, 0, 1), s=14, linewidths=0.3,
                   edgecolors="0.5", label="vision token (its pixels' colour)")
        _situation_panel(ax, "the model's map: each vision token at its predicted (x, y)", **pose)
    if "truth" in axes:
        ax = axes["truth"]
        if points is not None and len(points):
            keep = layout_mask(points)
            ax.scatter(points[keep, 0], points[keep, 1], c=colors[keep], s=1.2, linewidths=0,
                       label="room from depth")
        for label, c in objects:
            ax.annotate(label, c, fontsize=6.5, ha="center", color="black",
                        bbox=dict(boxstyle="round,pad=0.15", fc="white", alpha=0.7, lw=0))
        _situation_panel(ax, "the room from depth (ground truth)" if points is not None else "", gt_xy=gt_xy,
                         gt_yaw=gt_yaw, **pose)
        if "map" in axes:  # same metres on both panels
            xs = np.concatenate([axes[n].get_xlim() for n in axes])
            ys = np.concatenate([axes[n].get_ylim() for n in axes])
            for a in axes.values():
                a.set_xlim(xs.min(), xs.max())
                a.set_ylim(ys.min(), ys.max())
    fig.suptitle(title, fontsize=8)
    if errors:
        fig.text(0.5, 0.015, errors, ha="center", fontsize=9, color="black",
                 bbox=dict(boxstyle="round,pad=0.3", fc="lightyellow", lw=0.5))
    if yaw_probs is not None:
        facing_chart(fig, [0.80 if len(panels) > 1 else 0.74, 0.5, 0.18 if len(panels) > 1 else 0.24, 0.3],
                     yaw_probs, pred_yaw, gt_yaw)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(out) as tmp:
            fig.savefig(tmp, format="png")
    plt.close(fig)


def facing_chart(fig, rect, yaw_probs, pred_yaw=None, gt_yaw=None) -> None:
    """The predicted facing distribution as a polar bar chart (BEV angles: 0° = +x, 90° = +y, counter-clockwise),
    the predicted yaw (red) and the ground truth (green) marked."""
    ax = fig.add_axes(rect, projection="polar")
    bins = len(yaw_probs)
    top = float(max(yaw_probs))
    ax.bar(geometry.yaw_bin_centres(bins), yaw_probs, width=2 * np.pi / bins, color="tab:red", alpha=0.45,
           label="probability per bin")
    if pred_yaw is not None:
        ax.plot([pred_yaw, pred_yaw], [0, top], color="tab:red", lw=2, label="predicted facing")
    if gt_yaw is not None:
        ax.plot([gt_yaw, gt_yaw], [0, top], color="tab:green", lw=2, label="true facing")
    ax.set_xticks(np.radians([0, 90, 180, 270]))
    ax.set_xticklabels(["0° (+x)", "90° (+y)", "180°", "-90°"], fontsize=6.5)
    ax.set_yticklabels([])
    ax.set_title("facing (BEV yaw)", fontsize=7)
    ax.legend(loc="upper left", bbox_to_anchor=(-0.35, -0.05), fontsize=6, framealpha=0.85)


def errors_line(record: dict) -> str:
    """`position error 0.42 m · yaw error 12° · answer ✓` of an evaluation record."""
    parts = []
    if record.get("position_error_m") is not None:
        parts += [f"position error {metres(record['position_error_m'])}",
                  f"yaw error {degrees(record['yaw_error_deg'])}"]
    if record.get("answer_score") is not None:
        parts.append(f"answer {mark(record['answer_score'])}")
    return " · ".join(parts)


def situation_plot(data_root: Path, scene_id: str, world_to_bev: np.ndarray, record: dict, out: Path,
                   map_xy=None, map_colors=None) -> None:
    """An evaluation record (see loc3r.evaluate) drawn over its scene's points, beside the model's own map
    (map_xy [M, 2], map_colors [M, 3], see draw_prediction) when given."""
    scene = ScanNetScene(data_root, scene_id)
    points, colors = scene_points_bev(scene, world_to_bev, 12)
    traj = geometry.poses_to_bev(world_to_bev, scene.read_poses(scene.valid_frame_ids))[:, :2, 3]
    title = f"{scene_id}: {record['situation']}\nQ: {record['question']}  A: {(record['gt_answers'] or [''])[0]}  " \
            f"predicted: {record['answer']}"
    draw_prediction(points, colors, traj, np.array(record["position_xy_m"]), np.array(record["position_sigma_m"]),
                    np.radians(record["yaw_deg"]), np.array(record["yaw_probs"]), np.array(record["gt_position_xy_m"]),
                    np.radians(record["gt_yaw_deg"]), title, out, map_xy, map_colors,
                    objects_bev(data_root, scene_id, world_to_bev), errors_line(record), "camera path (given poses)")


def scene_points_bev(scene: ScanNetScene, world_to_bev, num_frames: int):
    """Coloured BEV points [N, 3] and colours [N, 3] in [0, 1] from T frames' depth (~100 x 75 pixels each)."""
    pts, cols = [], []
    for i in scene.sampled_frame_ids(num_frames):
        depth = scene.read_depth_m(int(i))
        stride = max(1, round(depth.shape[1] / 100))
        depth = depth[::stride, ::stride]
        H, W = depth.shape
        K = geometry.scale_intrinsics(scene.intrinsic_depth, (H * stride, W * stride), (H, W))
        rgb = np.asarray(Image.fromarray(scene.read_color(int(i))).resize((W, H), Image.BILINEAR)) / 255.0
        c2bev = world_to_bev @ scene.read_pose(int(i))
        p = geometry.depth_to_points(depth, K, c2bev)
        ok = depth > 0
        pts.append(p[ok])
        cols.append(rgb[ok])
    return np.concatenate(pts), np.concatenate(cols)


def layout_mask(points) -> np.ndarray:
    """Points [N, 3] that show the layout from above: floor (lowest 2%, + 10 cm) and ceiling (top 2%) dropped."""
    z = points[:, 2]
    return (z > np.percentile(z, 2) + 0.1) & (z < np.percentile(z, 98))


def frame_strip(frames: np.ndarray, out: Path) -> None:
    """The sampled frames [T, S, S, 3] of an example side by side, as a PNG (written atomically)."""
    strip = np.concatenate(list(frames), axis=1)
    with atomic_path(out) as tmp:
        Image.fromarray(strip).save(tmp, format="PNG")
