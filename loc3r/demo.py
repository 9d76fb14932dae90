"""`loc3r demo`: the main job on the embedded default, end to end on a 2-core CPU in ~10 minutes (README).

1. synthetic rooms in the ScanNet / SQA3D formats (`loc3r synth`, its default basic rooms; the training rooms with
   the recipe's extra relation questions): training rooms from --seed, and held-out test rooms from a seed the
   model never sees (--seed + TEST_SEED_OFFSET); a bird's-eye view of two test rooms;
2. the tiny Loc3R-VLM trained on the training rooms with the recipe `tiny_situated` (the model that answers from
   the located viewpoint; --recipe tiny_demo: the localization recipe on the plain rooms, what `loc3r train
   --preset tiny` runs), from the pretrained tiny base shipped in loc3r/assets/tiny_base (pretrained on the
   training rooms of seed 0, never on held-out rooms);
3. evaluated on the held-out rooms with the official metrics, report and plots (`loc3r eval`);
4. one example inference on a held-out room's frames and poses (`loc3r infer`).
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from loc3r import geometry, show
from loc3r.command import add_dataclass_arguments, dataclass_from_args
from loc3r.data.scannet import ScanNetScene
from loc3r.data.sqa3d import read_sqa3d
from loc3r.errors import Loc3rError
from loc3r.evaluate.baselines import baselines
from loc3r.train.recipes import RECIPES, TINY_SITUATED

DEMO_ROOMS = {"scenes": 400, "test_scenes": 40}  # the recipes were measured on (docs/LOG.md)
TEST_SEED_OFFSET = 1000  # the held-out rooms' seed is --seed + this


@dataclass
class DemoConfig:
    """The settings of `loc3r demo` (its flags are generated from these fields and their comments)."""

    out: Path = Path("demo_out")  # output directory
    scenes: int = DEMO_ROOMS["scenes"]  # synthetic training rooms
    test_scenes: int = DEMO_ROOMS["test_scenes"]  # held-out rooms (from another seed)
    # the training recipe (train/recipes.py; its synthetic rooms too): tiny_situated (answers from the located
    # viewpoint), tiny_situated_long (the same for 1,200 steps: sharper, ~1.4x the time), or tiny_demo
    # (localization only, on the plain rooms)
    recipe: str = TINY_SITUATED.name
    steps: int | None = None  # training steps (default: the recipe's)
    batch_size: int | None = None  # videos per step (default: the recipe's)
    seed: int = 0  # training rooms and training; the held-out rooms use seed + 1000
    overwrite: bool = False  # run again in an --out that holds a previous demo (its run is replaced)

    CHOICES: ClassVar[dict] = {"recipe": tuple(name for name, r in RECIPES.items() if r.preset == "tiny")}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(p, DemoConfig)


def print_comparison(metrics: dict, references: dict) -> None:
    """The model's held-out scores beside what a model scores without looking at the video (loc3r.baselines)."""
    keys = ("acc_0.5m", "acc_1.0m", "acc_15deg", "acc_30deg")
    print(f"\n{'held-out rooms':<22}" + "".join(f"{k:>10}" for k in keys) + f"{'em1':>8}")
    for name, r in [("the trained model", metrics), *references.items()]:
        loc = r.get("localization")
        row = "".join(f"{loc[k]:>10.1f}" for k in keys) if loc else "".join(f"{'-':>10}" for _ in keys)
        print(f"{name:<22}{row}" + (f"{r['qa']['em1']:>8.1f}" if "qa" in r else f"{'-':>8}"))


def step(title: str) -> float:
    print(f"\n== {title}", flush=True)
    return time.perf_counter()


def run(args: argparse.Namespace) -> int:
    args = dataclass_from_args(DemoConfig, args)
    from loc3r import infer
    from loc3r.evaluate.evaluation import EvalConfig, evaluate, rounded
    from loc3r.synth import writer
    from loc3r.train.config import TrainConfig
    from loc3r.train.loop import train

    if args.out.exists() and (not args.out.is_dir() or any(args.out.iterdir())) and not args.overwrite:
        raise Loc3rError(f"{args.out}: is not empty (a previous demo?): pass --overwrite to run the demo again there "
                         "(make demo DEMO_FLAGS=--overwrite), or another --out")
    data, test_data = args.out / "data", args.out / "test_data"
    run_dir, eval_dir = args.out / "run", args.out / "eval"
    t0 = step(f"1/4 synthetic rooms -> {data} (training), {test_data} (held out)")
    rendering = dict(frames=24, size=64, workers=2)
    recipe = RECIPES[args.recipe]
    writer.generate(data, args.scenes, args.seed, **rendering, **recipe.rooms)
    writer.generate(test_data, args.test_scenes, args.seed + TEST_SEED_OFFSET, held_out=True, **rendering)
    print(f"wrote {args.scenes} training rooms to {data}, {args.test_scenes} held-out rooms to {test_data}")
    test = read_sqa3d(test_data, "test")
    for scene_id in sorted({r.scene_id for r in test})[:2]:
        show.render(test_data, scene_id, 0, args.out / "bev" / f"{scene_id}.png")
        print(f"bird's-eye view: {args.out / 'bev' / f'{scene_id}.png'}")

    steps = args.steps or recipe.settings["steps"]
    t1 = step(f"2/4 training the tiny Loc3R-VLM ({steps} steps, recipe {recipe.name}) -> {run_dir}")
    train(TrainConfig(data=data, out=run_dir, recipe=recipe.name, steps=steps, batch_size=args.batch_size,
                      seed=args.seed, save_every=steps, log_every=20, overwrite=args.overwrite))

    t2 = step(f"3/4 evaluation on the held-out rooms -> {eval_dir}")
    evaluate(EvalConfig(checkpoint=run_dir, data=test_data, split="test", out=eval_dir, card=True))

    t3 = step("4/4 example inference")
    example = next(r for r in test if r.situation.strip().rstrip(".") != "I am standing in the room")
    scene = ScanNetScene(test_data, example.scene_id)
    w2b = geometry.bev_frame_of_video(scene.read_poses(scene.valid_frame_ids))
    gt_xy, gt_yaw = example.pose_in_bev(w2b, scene.mesh_bbox_center)
    print(f"scene {example.scene_id}\nsituation: {example.situation}\nquestion:  {example.question}\n"
          f"reference: answer {example.answers[0]!r}, position x = {gt_xy[0]:.2f} m, y = {gt_xy[1]:.2f} m, "
          f"facing {np.degrees(gt_yaw):.1f} deg")
    query = infer.InferConfig(checkpoint=run_dir, frames=scene.dir / "color", poses=scene.dir / "pose",
                              situation=example.situation, question=example.question, plot=args.out / "example.png")
    infer.report(query, infer.infer(query))
    metrics = json.loads((eval_dir / "metrics.json").read_text())
    print(f"\nreport: {eval_dir / 'report.md'}, interactive: {eval_dir / 'view.html'}\n"
          f"example plot: {args.out / 'example.png'}")
    print(f"test localization: {json.dumps(rounded(metrics['localization']))}")
    print(f"test QA: EM@1 {metrics['qa']['em1']:.1f}, refined EM {metrics['qa']['em_refined']:.1f}")
    print_comparison(metrics, baselines(data, test_data, args.seed))
    t4 = time.perf_counter()
    print(f"time: data {t1 - t0:.0f} s, training {t2 - t1:.0f} s, evaluation {t3 - t2:.0f} s, "
          f"inference {t4 - t3:.0f} s, total {t4 - t0:.0f} s")
    return 0
