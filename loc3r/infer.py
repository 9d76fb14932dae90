"""`loc3r infer`: answer a situated question about a user's own video, and say where the speaker stands.

The video (PyAV) or a folder of frames is sampled to T frames uniformly. Positions and yaw are in the video's BEV
frame: metres, origin under the first sampled camera, +y its forward direction on the ground, yaw
counter-clockwise from +x (loc3r.geometry). Camera poses (`--poses DIR`, 4x4 camera-to-world txt per frame, +z up)
feed the `poses` prior; without them it sees every pose as unknown. The `cut3r` prior computes its tokens with
the converted CUT3R model given by `--cut3r DIR`.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loc3r import geometry
from loc3r.command import add_dataclass_arguments, dataclass_from_args
from loc3r.constants import NO_SITUATION
from loc3r.data.sample import Sample
from loc3r.data.scannet import uniform_indices
from loc3r.data.video import frame_files, read_frame_dir, read_pose_dir, read_video, resize_frames, video_frame_rate
from loc3r.errors import Loc3rError, naming
from loc3r.model.config import read_config_json
from loc3r.model.processor import Collator, load_cut3r_prior
from loc3r.parallel import default_device


@dataclass
class InferConfig:
    """The settings of `loc3r infer` (its flags are generated from these fields and their comments)."""

    checkpoint: Path  # a checkpoint directory or a run directory (its newest checkpoint)
    video: Path | None = None  # a video file (any format FFmpeg reads); or --frames
    frames: Path | None = None  # a folder of frames (sorted numerically, else by name); or --video
    # folder of 4x4 camera-to-world txt files named like the frames (<index>.txt for a video): a checkpoint trained
    # with the poses prior (the tiny preset's) needs them; cut3r and none checkpoints take a plain video
    poses: Path | None = None
    cut3r: Path | None = None  # converted CUT3R directory (loc3r convert-cut3r), for a cut3r-prior checkpoint
    situation: str | None = None  # the speaker's situation ('I am standing in the room.' if none)
    question: str | None = None  # the question
    questions: Path | None = None  # JSONL of {"situation", "question"[, "id"]}, answered together (video computed once)
    allow_unknown_words: bool = False  # answer although some words are unknown to the model's tokenizer
    batch_size: int = 16  # questions answered together
    json: bool = False  # print one JSON object per question
    plot: Path | None = None  # write a bird's-eye plot (PNG); with several questions, one each: PLOT's stem + _<k>
    view: Path | None = None  # write the interactive page (one self-contained HTML file: frames, map, answers)
    max_new_tokens: int = 32  # longest generated answer
    device: str | None = None  # cpu, cuda, cuda:1 ... (default: the GPU when there is one)

    def __post_init__(self):
        if self.batch_size < 1:
            raise Loc3rError(f"--batch-size must be >= 1, got {self.batch_size}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(p, InferConfig)


@dataclass
class Video:
    frames: np.ndarray  # [T, H, W, 3] uint8, sampled uniformly
    c2w: np.ndarray | None  # [T, 4, 4] camera-to-world poses (--poses), else None
    frame_times: np.ndarray  # [T] seconds of the sampled frames
    duration_s: float  # the whole video's length
    available: int  # frames the video has (fewer than T: some are taken twice, as the training's sampling does)


def load_video(args, num_frames: int, fps: float) -> Video:
    """The sampled frames of --video or --frames, their poses (--poses) and timestamps: a video file's own frame
    rate (as LLaVA-NeXT's loader: index / average fps), `fps` for a folder of frames."""
    if args.video is not None:
        frames, total = read_video(args.video, num_frames)
        fps = video_frame_rate(args.video) or fps
        names = [Path(f"{i}.jpg") for i in uniform_indices(total, num_frames)]
    else:
        frames, names = read_frame_dir(args.frames, num_frames)
        total = len(frame_files(args.frames))
    poses = read_pose_dir(args.poses, names) if args.poses is not None else None
    return Video(frames, poses, uniform_indices(total, num_frames) / fps, total / fps, total)


def build_sample(video: Video, situation: str, question: str, config, camera_tokens: np.ndarray | None = None,
                 poses_dir: Path | None = None, question_id: int = 0, frames: np.ndarray | None = None) -> Sample:
    """A prompt-only Sample of a user's video (no targets); poses_dir (where the poses came from) names the BEV
    frame's errors; `frames`: the video's frames already resized for the model (shared by the samples of one
    video), else resized here."""
    T, G = config.num_frames, config.tokens_per_frame
    if frames is None:
        frames = resize_frames(video.frames, config.image_size)
    if video.c2w is not None:
        with naming(poses_dir):  # the BEV frame needs a valid first pose that is not straight up or down
            world_to_bev = geometry.bev_frame_of_video(video.c2w)
        c2bev = geometry.poses_to_bev(world_to_bev, video.c2w).astype(np.float32)
    else:
        c2bev = np.full((T, 4, 4), np.nan, np.float32)  # unknown poses: the poses prior flags them invalid
    return Sample(scene_id="input", question_id=question_id, frames=frames,
                  camera_poses_bev=c2bev, layout_xy=np.zeros((T, G, 2), np.float32),
                  layout_valid=np.zeros((T, G), bool), situation=situation, question=question, answers=[""],
                  position_xy=np.zeros(2, np.float32), yaw_rad=0.0, has_situation=True,
                  camera_tokens=camera_tokens, frame_times=video.frame_times, duration_s=video.duration_s)


def read_questions(args) -> list[dict]:
    """[{"situation", "question", "id"}]: --situation / --question, or every line of --questions FILE.jsonl."""
    if args.questions is None:
        if args.question is None:
            raise Loc3rError("pass --question (and --situation, the speaker's; without it the question is not "
                             "situated), or --questions FILE.jsonl")
        items = [{"situation": NO_SITUATION if args.situation is None else args.situation, "question": args.question}]
        where = ["--situation / --question"]
    else:
        if args.situation is not None or args.question is not None:
            raise Loc3rError("--questions replaces --situation / --question: pass one or the other")
        try:
            lines = [(n, line) for n, line in enumerate(args.questions.read_text().splitlines(), 1) if line.strip()]
        except (OSError, UnicodeDecodeError) as e:
            raise Loc3rError(f"{args.questions}: cannot read ({e})") from None
        items, where = [], []
        for n, line in lines:
            try:
                item = json.loads(line)
            except json.JSONDecodeError as e:
                raise Loc3rError(f"{args.questions}:{n}: not a JSON object ({e.msg})") from None
            if not isinstance(item, dict) or not isinstance(item.get("question"), str):
                raise Loc3rError(f'{args.questions}:{n}: expected {{"situation": ..., "question": ...}}')
            situation = NO_SITUATION if item.get("situation") is None else item["situation"]
            if not isinstance(situation, str):
                raise Loc3rError(f"{args.questions}:{n}: the situation must be text, got {type(situation).__name__}")
            items.append({**item, "situation": situation})
            where.append(f"{args.questions}:{n}")
        if not items:
            raise Loc3rError(f"{args.questions}: no questions")
    out = []
    for i, (item, w) in enumerate(zip(items, where)):
        situation, question = str(item["situation"]).strip(), item["question"].strip()
        if not situation:
            raise Loc3rError(f"{w}: the situation is empty: describe the speaker's situation, or use '{NO_SITUATION}'")
        if not question:
            raise Loc3rError(f"{w}: the question is empty")
        out.append({"id": item.get("id", i), "situation": situation, "question": question, "where": w})
    return out


def check_model_serves(checkpoint: Path, args) -> None:
    """Refuse, before anything is computed, what the checkpoint cannot answer: a tiny base never trained for
    localization; a poses-prior model on a video without --poses."""
    config = read_config_json(checkpoint / "config.json")
    if config.get("lambda_layout") == 0 and config.get("lambda_situation") == 0:
        raise Loc3rError(f"{checkpoint}: a base never trained for localization (its position and orientation heads "
                         "are untrained): train it first (loc3r train --init BASE)")
    if config.get("prior") == "poses" and args.poses is None:
        raise Loc3rError(f"{checkpoint}: trained with the poses prior, it needs a camera pose per frame: pass --poses "
                         "DIR (4x4 camera-to-world txt files named like the frames); a plain video needs a checkpoint "
                         "trained with the cut3r or none prior")


def unknown_words(tokenizer, texts: list[str]) -> list[str]:
    """The words of `texts` the tokenizer reads as its unknown token (a word-level vocabulary such as the tiny
    preset's; a byte-level tokenizer knows every word), in order of appearance."""
    unk = tokenizer.unk_token_id
    if unk is None:
        return []
    out = []
    for word in " ".join(texts).split():
        if word not in out and unk in tokenizer(word, add_special_tokens=False).input_ids:
            out.append(word)
    return out


def infer(args: InferConfig) -> list[dict]:
    """The predictions for the user's video, one dict per question (printed by run); the video's prefix (its
    frames through the LLM) is computed once for all questions. With --plot or --view, result["draw"] writes them
    when called (report calls it after printing the answers)."""
    from loc3r.train.checkpoint import load_model, resolve_checkpoint

    if (args.video is None) == (args.frames is None):
        raise Loc3rError("pass the video as --video FILE or as --frames DIR (one of them)")
    checkpoint = resolve_checkpoint(args.checkpoint)  # paths first, then what they hold
    for path in (args.video, args.frames, args.poses, args.questions):
        if path is not None and not path.exists():
            raise Loc3rError(f"{path}: no such file or directory")
    questions = read_questions(args)
    check_model_serves(checkpoint, args)
    device = default_device(args.device)
    model = load_model(checkpoint).to(device).eval()
    config = model.config
    unknown = unknown_words(model.tokenizer, [f"{q['situation']} {q['question']}" for q in questions])
    if unknown and not args.allow_unknown_words:
        raise Loc3rError(f"{checkpoint}: its tokenizer does not know {len(unknown)} word(s) of the questions "
                         f"({', '.join(unknown[:8])}): rephrase with the words it was trained on, or pass "
                         "--allow-unknown-words to answer anyway")
    if unknown:
        print(f"note: {len(unknown)} word(s) unknown to the model read as unknown: {', '.join(unknown[:8])}")
    video = load_video(args, config.num_frames, config.video_fps)
    source = args.video or args.frames
    if video.available < config.num_frames:
        print(f"note: {source} has {video.available} frames, the model takes {config.num_frames}: frames are "
              "repeated, as the uniform sampling of training does")
    height, width = video.frames.shape[1:3]
    if height != width:
        print(f"note: {width}x{height} frames are resized to {config.image_size}x{config.image_size} without "
              "cropping, as LLaVA-Video's video processor and training do")
    tokens, path, path_label = None, None, None  # path: the camera path drawn, [T, 2] in the video's BEV frame
    if config.prior == "cut3r":
        estimate = load_cut3r_prior(config, args.cut3r, device).run(video.frames)
        tokens = estimate.camera_tokens.float().cpu().numpy()
        path = geometry.ground_path_of_first_camera(estimate.c2w.float().cpu().numpy())
        path_label = "camera path (CUT3R's estimate, first camera's frame)"
    collate = Collator(model.tokenizer, config, for_generation=True)
    for q in questions:  # every text checked before any is answered, named by its file and line
        collate.check_text(q["situation"], q["question"], q["where"])
    frames = resize_frames(video.frames, config.image_size)  # once: the samples share it, memory flat in questions
    results, first = [], None  # first: the first sample and its prediction (the video's map, the same for all)
    for start in range(0, len(questions), args.batch_size):  # samples built a batch at a time
        chunk = [build_sample(video, questions[i]["situation"], questions[i]["question"], config, tokens, args.poses,
                              i, frames) for i in range(start, min(start + args.batch_size, len(questions)))]
        batch = collate.grouped([chunk]).to(device)
        for s, pred in zip(chunk, model.predict(batch, args.max_new_tokens)):
            results.append({"id": questions[s.question_id]["id"], "situation": s.situation, "question": s.question,
                            "situated": s.situation != NO_SITUATION, **pred.as_record(), "frame": BEV_FRAME})
            first = first or (s, pred)
    if video.c2w is not None:
        path, path_label = first[0].camera_poses_bev[:, :2, 3], "camera path (given poses)"
    if args.plot is not None or args.view is not None:
        grid, extent = config.frame_grid, config.frame_grid_extent
        results[0]["draw"] = lambda: draw(args, results, first, path, path_label, grid, extent)  # after printing
    return results


BEV_FRAME = "BEV of the video: origin under the first frame's camera, +y its forward direction"


def plot_paths(plot: Path, n: int) -> list[Path]:
    """--plot's file, or one file per question (PLOT's stem + _<k>) when there are several."""
    return [plot] if n == 1 else [plot.with_name(f"{plot.stem}_{k}{plot.suffix}") for k in range(n)]


def draw(args: InferConfig, results: list[dict], first, path, path_label, grid, extent) -> None:
    """The bird's-eye plot of each question (--plot) and the interactive page (--view); what was written is said on
    stderr with --json (stdout holds the JSON lines only)."""
    from loc3r.evaluate.plots import draw_prediction, token_colors
    from loc3r.evaluate.view import SceneView, write_view

    say = functools.partial(print, file=sys.stderr if args.json else sys.stdout)
    sample, pred = first
    colors = token_colors(sample.frames, grid, extent)
    if args.plot is not None:
        paths = plot_paths(args.plot, len(results))
        for r, out in zip(results, paths):
            pose = (dict(pred_xy=np.array(r["position_xy_m"]), pred_sigma=np.array(r["position_sigma_m"]),
                         pred_yaw=np.radians(r["yaw_deg"]), yaw_probs=np.array(r["yaw_probs"]))
                    if r["situated"] else {})  # no situation: no pose drawn
            draw_prediction(trajectory=path, title=f"{r['situation']}\nQ: {r['question']}  A: {r['answer']}",
                            out=out, map_xy=pred.layout_xy.reshape(-1, 2), map_colors=colors.reshape(-1, 3),
                            trajectory_label=path_label or "camera path", **pose)
        say(f"wrote {paths[0]}" if len(paths) == 1 else
            f"wrote {len(paths)} plots, one per question: {paths[0]} ... {paths[-1]}")
    if args.view is not None:
        source = (args.video or args.frames).resolve()
        name = source.name if args.video else f"{source.parent.name}/{source.name}"  # e.g. scene0003_00/color
        scene = SceneView(name=name, frames=sample.frames, grid=tuple(grid), extent=extent, map_xy=pred.layout_xy,
                          map_colors=colors, trajectory=path, trajectory_label=path_label or "camera path")
        records = [{**r, "scene_id": name} for r in results]
        write_view(args.view, f"loc3r infer: {name}", [scene], records, "answer")
        say(f"wrote {args.view} (interactive)")


def run(args: argparse.Namespace) -> int:
    cfg = dataclass_from_args(InferConfig, args)
    report(cfg, infer(cfg))
    return 0


def report(args: InferConfig, results: list[dict]) -> None:
    """Print the answers (JSON lines with --json), then draw the plots and the page: a plot that cannot be written
    loses nothing, and a reader that closes the output early (`| head`) does not stop the plots."""
    plot = results[0].pop("draw", None)
    try:
        print_results(args, results)
        sys.stdout.flush()
    except BrokenPipeError:  # the rest is not wanted: point stdout at nothing so that exit does not fail on it
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
    if plot is not None:  # after the answers: a plot that cannot be written loses nothing computed
        plot()


def print_results(args: InferConfig, results: list[dict]) -> None:
    for i, r in enumerate(results):
        if args.json:
            print(json.dumps(r if args.questions is not None else {k: v for k, v in r.items() if k != "id"}))
            continue
        x, y = r["position_xy_m"]
        sx, sy = r["position_sigma_m"]
        if args.questions is not None:
            print(f"{'' if i == 0 else chr(10)}[{r['id']}] {r['situation']} {r['question']}")
        print(f"answer:   {r['answer']}")
        if not r["situated"]:
            print("position: (no --situation: the question is not situated, so no position or facing is read)")
            continue
        print(f"position: x = {x:.2f} m (sigma {sx:.2f}), y = {y:.2f} m (sigma {sy:.2f})  [{r['frame']}]")
        print(f"facing:   {r['yaw_deg']:.1f} deg (counter-clockwise from +x)")
