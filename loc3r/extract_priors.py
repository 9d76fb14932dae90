"""`loc3r extract-priors`: compute and cache each scene's CUT3R camera tokens, optionally checking CUT3R's poses.

For every scene under <data>/scans, the same T frames as the training cache (`sample_frame_ids` over the valid
poses) are read at full resolution, preprocessed as the official demo and run through CUT3R in video order.
Output, one file per scene, written atomically (an interrupted run leaves no partial file and resumes where it
stopped; scenes already cached are skipped):

    <data>/priors/cut3r/<scene_id>_T<T>.npz   camera_tokens float16 [T, D], frame_ids int64 [T]
                                               (+ camera_pose float32 [T, 7] with --check-poses)

`--check-poses` compares CUT3R's decoded trajectory with the scene's ground-truth poses, both expressed relative
to their first camera: median rotation error (degrees) and translation error (metres) per scene and overall, and
the scale ratio |t_gt| / |t_cut3r| (CUT3R is metric, but only approximately).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch

from loc3r.command import add_dataclass_arguments, dataclass_from_args
from loc3r.data.cache import source_fingerprint
from loc3r.data.scannet import ScanNetScene, list_scenes
from loc3r.errors import Loc3rError
from loc3r.io import write_npz
from loc3r.priors.cut3r import CUT3R_INPUTS, Cut3rPrior, pose_to_c2w, read_token_cache, token_cache_path

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class ExtractConfig:
    """The settings of `loc3r extract-priors` (its flags are generated from these fields and their comments)."""

    cut3r: Path  # converted CUT3R directory (from `loc3r convert-cut3r`)
    data: Path  # data root with scans/<scene_id>/ (ScanNet posed images)
    frames: int = 32  # frames per scene, as the training cache
    cut3r_input: str = "demo"  # frames CUT3R sees: demo (official demo, long side 512) | vlm3r (432 x 432)
    vlm_size: int = 384  # the VLM's frame size, for --cut3r-input vlm3r
    scenes: list[str] | None = None  # only these scene ids (default: all under <data>/scans)
    check_poses: bool = False  # also store CUT3R's camera poses and report their error against the ground truth
    device: str = "cuda" if torch.cuda.is_available() else "cpu"  # cpu | cuda
    dtype: str = "float32"  # compute dtype: float32 | float16 | bfloat16 (autocast; the pose MLP stays float32)

    CHOICES: ClassVar[dict] = {"cut3r_input": CUT3R_INPUTS, "device": ("cpu", "cuda"), "dtype": tuple(DTYPES)}

    def __post_init__(self):
        if self.frames < 1:
            raise Loc3rError(f"--frames must be >= 1, got {self.frames}")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(parser, ExtractConfig)


def relative_pose_errors(c2w_gt: np.ndarray, c2w_pred: np.ndarray) -> dict[str, np.ndarray]:
    """Both [T, 4, 4] trajectories relative to their first camera -> per-frame errors of frames 1..T-1.

    rot_deg: angle of R_pred^T R_gt; trans_m: |t_pred - t_gt|; norm_gt / norm_pred: |t| of each, for the scale.
    """
    rel_gt = np.linalg.inv(c2w_gt[0]) @ c2w_gt[1:]  # [T-1, 4, 4] in the first camera's frame
    rel_pred = np.linalg.inv(c2w_pred[0]) @ c2w_pred[1:]
    r = np.swapaxes(rel_pred[:, :3, :3], -1, -2) @ rel_gt[:, :3, :3]
    cos = np.clip((np.trace(r, axis1=-2, axis2=-1) - 1) / 2, -1.0, 1.0)
    t_gt, t_pred = rel_gt[:, :3, 3], rel_pred[:, :3, 3]
    return dict(rot_deg=np.degrees(np.arccos(cos)), trans_m=np.linalg.norm(t_pred - t_gt, axis=-1),
                norm_gt=np.linalg.norm(t_gt, axis=-1), norm_pred=np.linalg.norm(t_pred, axis=-1))


def _summary(errors: dict[str, np.ndarray]) -> str:
    scale = errors["norm_gt"].sum() / max(errors["norm_pred"].sum(), 1e-9)
    return (f"rotation {np.median(errors['rot_deg']):.2f} deg, translation {np.median(errors['trans_m']):.3f} m "
            f"(medians over {errors['rot_deg'].size} frames), scale gt/cut3r {scale:.2f}")


def _read_cache(path) -> dict[str, np.ndarray] | None:
    """The cached arrays, or None when the file is missing or unreadable (it is then recomputed)."""
    try:
        return read_token_cache(path)
    except Loc3rError:
        return None


def stale(arrays: dict[str, np.ndarray], args, scene_id: str, model: str) -> bool:
    """Whether a cache must be computed again: another input mode, another CUT3R (`model`: the fingerprint of this
    one), or other scan files."""
    scene = ScanNetScene(args.data, scene_id)
    return (str(arrays.get("input_mode", "demo")) != args.cut3r_input
            or str(arrays.get("model", "")) != model
            or str(arrays.get("source", "")) != source_fingerprint(scene, arrays["frame_ids"]))


def extract_scene(prior: Cut3rPrior, data_root, scene_id: str, num_frames: int, with_poses: bool) -> dict:
    """Run CUT3R on one scene's sampled frames and write its cache file; returns the cached arrays."""
    scene = ScanNetScene(data_root, scene_id)
    valid = len(scene.valid_frame_ids)
    if num_frames > valid:  # the uniform sample would repeat frames (and take minutes for nothing)
        raise Loc3rError(f"{scene.dir}: --frames {num_frames} is more than its {valid} frames with a valid pose")
    ids = scene.sampled_frame_ids(num_frames)
    frames = np.stack([scene.read_color(int(i)) for i in ids])  # [T, H, W, 3] uint8
    out = prior.run(frames)
    arrays = dict(camera_tokens=out.camera_tokens.float().cpu().numpy().astype(np.float16),
                  frame_ids=ids.astype(np.int64), input_mode=np.array(prior.input_mode),
                  source=np.array(source_fingerprint(scene, ids)), model=np.array(prior.fingerprint))
    if with_poses:
        arrays["camera_pose"] = out.camera_pose.cpu().numpy().astype(np.float32)
    write_npz(token_cache_path(data_root, scene_id, num_frames), **arrays)
    return arrays


def run(args: argparse.Namespace) -> int:
    args = dataclass_from_args(ExtractConfig, args)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise Loc3rError("--device cuda: no CUDA device is available (use --device cpu)")
    if args.check_poses and args.frames < 2:
        raise Loc3rError("--check-poses needs --frames >= 2 (errors are relative to the first frame)")
    scene_ids = args.scenes or list_scenes(args.data)
    prior = Cut3rPrior(args.cut3r, device=args.device, dtype=DTYPES[args.dtype], input_mode=args.cut3r_input,
                       vlm_size=args.vlm_size)
    print(f"CUT3R camera tokens (dim {prior.dim}) of {len(scene_ids)} scenes, {args.frames} frames each, "
          f"on {args.device} in {args.dtype}; ignored checkpoint parts: {', '.join(prior.model.ignored_prefixes)}")
    all_errors, failed = [], []
    for n, scene_id in enumerate(scene_ids, 1):
        path = token_cache_path(args.data, scene_id, args.frames)
        arrays = _read_cache(path)
        status = "cached"
        if (arrays is None or stale(arrays, args, scene_id, prior.fingerprint)
                or (args.check_poses and "camera_pose" not in arrays)):
            start = time.perf_counter()
            try:
                arrays = extract_scene(prior, args.data, scene_id, args.frames, args.check_poses)
            except Loc3rError as e:  # one bad scene must not stop the others
                print(f"[{n}/{len(scene_ids)}] {scene_id}: FAILED: {e}")
                failed.append(scene_id)
                continue
            status = f"{time.perf_counter() - start:.1f} s"
        line = f"[{n}/{len(scene_ids)}] {scene_id}: {status}"
        if args.check_poses:
            c2w_gt = ScanNetScene(args.data, scene_id).read_poses(arrays["frame_ids"])
            c2w_pred = pose_to_c2w(torch.from_numpy(arrays["camera_pose"])).double().numpy()
            errors = relative_pose_errors(c2w_gt, c2w_pred)
            all_errors.append(errors)
            line += f"; {_summary(errors)}"
        print(line)
    if all_errors:
        pooled = {k: np.concatenate([e[k] for e in all_errors]) for k in all_errors[0]}
        print(f"overall ({len(all_errors)} scenes): {_summary(pooled)}")
    if failed:
        raise Loc3rError(f"{len(failed)} of {len(scene_ids)} scenes failed: {', '.join(failed)}")
    return 0
