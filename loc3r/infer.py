"""`loc3r infer`: answer a situated question about a user's own video, and say where the speaker stands.

The video (PyAV) or a folder of frames is sampled to T frames uniformly. Positions and yaw are in the video's BEV
frame: metres, origin under the first sampled camera, +y its forward direction on the ground, yaw
counter-clockwise from +x (loc3r.geometry). Camera poses (`--poses DIR`, 4x4 camera-to-world txt per frame, +z up)
feed the `poses` prior; without them it sees every pose as unknown. The `cut3r` prior computes its tokens with
the converted CUT3R model given by `--cut3r DIR`.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from loc3r import geometry
from loc3r.checkpoint import resolve_checkpoint
from loc3r.data.collate import Collator
from loc3r.data.sample import NO_SITUATION, Sample
from loc3r.data.video import read_frame_dir, read_pose_dir, read_video, resize_frames, uniform_indices
from loc3r.errors import Loc3rError, naming


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", type=Path, required=True, help="a checkpoint directory or a run directory")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--video", type=Path, help="a video file (any format FFmpeg reads)")
    src.add_argument("--frames", type=Path, help="a folder of frames (sorted numerically / by name)")
    p.add_argument("--poses", type=Path, help="folder of 4x4 camera-to-world txt files named like the frames "
                   "(<index>.txt for a video's decoded frames)")
    p.add_argument("--cut3r", type=Path, help="converted CUT3R directory (loc3r convert-cut3r), for the cut3r prior")
    p.add_argument("--situation", required=True, help=f"the speaker's situation ('{NO_SITUATION}' if none)")
    p.add_argument("--question", required=True)
    p.add_argument("--json", action="store_true", help="print one JSON object")
    p.add_argument("--plot", type=Path, help="write a bird's-eye plot of the prediction (PNG)")
    p.add_argument("--max-new-tokens", type=int, default=32)
    p.add_argument("--device", default=None)


def load_frames(args, num_frames: int) -> tuple[np.ndarray, np.ndarray | None]:
    """[T, H, W, 3] uint8 frames and, with --poses, [T, 4, 4] camera-to-world poses."""
    if args.video is not None:
        frames, total = read_video(args.video, num_frames)
        names = [Path(f"{i}.jpg") for i in uniform_indices(total, num_frames)]
    else:
        frames, names = read_frame_dir(args.frames, num_frames)
    poses = read_pose_dir(args.poses, names) if args.poses is not None else None
    return frames, poses


def build_sample(frames: np.ndarray, c2w: np.ndarray | None, situation: str, question: str, config,
                 camera_tokens: np.ndarray | None = None, poses_dir: Path | None = None) -> Sample:
    """A prompt-only Sample of a user's video (no targets); poses_dir (where c2w came from) names the BEV frame's
    errors."""
    T, G = config.num_frames, config.tokens_per_frame
    if c2w is not None:
        with naming(poses_dir):  # the BEV frame needs a valid first pose that is not straight up or down
            world_to_bev = geometry.bev_frame_of_video(c2w)
        c2bev = geometry.poses_to_bev(world_to_bev, c2w).astype(np.float32)
    else:
        c2bev = np.full((T, 4, 4), np.nan, np.float32)  # unknown poses: the poses prior flags them invalid
    return Sample(scene_id="input", question_id=0, frames=resize_frames(frames, config.image_size),
                  camera_poses_bev=c2bev, layout_xy=np.zeros((T, G, 2), np.float32),
                  layout_valid=np.zeros((T, G), bool), situation=situation, question=question, answers=[""],
                  position_xy=np.zeros(2, np.float32), yaw_rad=0.0, has_situation=True,
                  camera_tokens=camera_tokens)


def infer(args) -> dict:
    """The prediction for the user's video as a dict (printed by run); with --plot, result["plot"] draws the
    bird's-eye plot when called (run calls it after printing the answer)."""
    from loc3r.model.loc3r import Loc3R

    if not args.situation.strip():
        raise Loc3rError(f"--situation is empty: describe the speaker's situation, or pass '{NO_SITUATION}'")
    if not args.question.strip():
        raise Loc3rError("--question is empty")
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    model = Loc3R.from_pretrained(resolve_checkpoint(args.checkpoint)).to(device).eval()
    config = model.config
    frames, c2w = load_frames(args, config.num_frames)
    tokens = None
    if config.prior == "cut3r":
        if args.cut3r is None:
            raise Loc3rError("this checkpoint uses the cut3r prior: pass --cut3r DIR (a converted CUT3R model)")
        from loc3r.priors.cut3r import Cut3rPrior

        prior = Cut3rPrior(args.cut3r, device=device)
        if prior.dim != config.cut3r_dim:
            raise Loc3rError(f"{args.cut3r}: CUT3R camera tokens of width {prior.dim}, the checkpoint was trained on "
                             f"{config.cut3r_dim}")
        tokens = prior.tokens_for_frames(frames).cpu().numpy()
    sample = build_sample(frames, c2w, args.situation.strip(), args.question.strip(), config, tokens, args.poses)
    batch = {k: v.to(device) for k, v in Collator(model.tokenizer, config, for_generation=True)([sample]).items()}
    pred = model.predict(batch, args.max_new_tokens)[0]
    result = {"answer": pred.answer, "position_xy_m": [float(v) for v in pred.position_xy],
              "position_sigma_m": [float(v) for v in pred.position_sigma],
              "yaw_deg": float(np.degrees(pred.yaw_rad)), "yaw_probs": [float(v) for v in pred.yaw_probs],
              "frame": "BEV of the video: origin under the first frame's camera, +y its forward direction"}
    if args.plot is not None:
        from loc3r.plots import draw_prediction, token_colors

        traj = sample.camera_poses_bev[:, :2, 3] if c2w is not None else None
        colors = token_colors(sample.frames, config.frame_grid, config.frame_grid_extent)
        result["plot"] = lambda: draw_prediction(  # drawn after the answer is printed (run)
            trajectory=traj, pred_xy=pred.position_xy, pred_sigma=pred.position_sigma, pred_yaw=pred.yaw_rad,
            yaw_probs=pred.yaw_probs, title=f"{args.situation}\nQ: {args.question}  A: {pred.answer}",
            out=args.plot, map_xy=pred.layout_xy.reshape(-1, 2), map_colors=colors.reshape(-1, 3))
    return result


def run(args: argparse.Namespace) -> int:
    r = infer(args)
    plot = r.pop("plot", None)
    if args.json:
        print(json.dumps(r))
    else:
        x, y = r["position_xy_m"]
        sx, sy = r["position_sigma_m"]
        print(f"answer:   {r['answer']}")
        print(f"position: x = {x:.2f} m (sigma {sx:.2f}), y = {y:.2f} m (sigma {sy:.2f})  [{r['frame']}]")
        print(f"facing:   {r['yaw_deg']:.1f} deg (counter-clockwise from +x)")
    if plot is not None:  # after the answer: a plot that cannot be written loses nothing computed
        sys.stdout.flush()
        plot()
    return 0
