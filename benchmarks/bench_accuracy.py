"""Accuracy on the synthetic rooms: the full model against baselines and the paper's ablations, one run, same data.

Trains and evaluates on held-out test scenes (scored per situation, as `loc3r eval`):
- random pose:          position uniform over the box of the training positions, yaw uniform
- blind (mean pose):    the mean training position and the circular mean training yaw
- trajectory centre:    the mean of the video's camera positions (what the poses alone say) and the mean yaw
- blind answers:        the most frequent training answer of the question's type (EM only; the answer prior)
- situation only:       Loc3R-VLM without camera token and without layout loss (prior none, lambda_layout 0)
- + layout:             with the layout reconstruction loss (prior none)
- + camera token:       the full model (poses prior + layout + situation)

    python benchmarks/bench_accuracy.py --scenes 200 --steps 3000 --out /tmp/bench_acc

Runs resume (`loc3r train --resume`): an interrupted benchmark continues, a finished run is not trained again.

Prints one table like the paper's ablation (Acc@0.5m, Acc@1.0m, Acc@15deg, Acc@30deg, EM@1) and writes it,
with every run's metrics, to OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np

from loc3r.cli import main as cli
from loc3r.data.dataset import SituatedQADataset
from loc3r.data.sqa3d import read_sqa3d
from loc3r.metrics import localization_metrics, qa_metrics, question_type
from loc3r.model.config import Loc3RConfig

ABLATIONS = [  # (name, extra training arguments)
    ("situation only", ["--prior", "none", "--no-layout"]),
    ("+ layout", ["--prior", "none"]),
    ("+ camera token (full)", []),
]


def situated_poses(data: Path, split: str, config: Loc3RConfig):
    """BEV positions [N, 2], yaws [N] and the mean camera position of the video [N, 2] of a split's distinct
    situations."""
    ds = SituatedQADataset(data, split, config.num_frames, config.image_size, config.frame_grid,
                           grid_extent=config.frame_grid_extent)
    seen, xy, yaw, cameras = set(), [], [], []
    for i, rec in enumerate(ds.records):
        key = (rec.scene_id, rec.situation)
        if key in seen:
            continue
        s = ds[i]
        if s.has_situation:
            seen.add(key)
            xy.append(s.position_xy)
            yaw.append(s.yaw_rad)
            cameras.append(s.camera_poses_bev[:, :2, 3].mean(0))
    return np.array(xy), np.array(yaw), np.array(cameras)


def answer_prior(data: Path) -> dict:
    """QA metrics on test of answering every question with the most frequent training answer of its type."""
    def kind(r):
        return r.question_type if r.question_type not in ("", "N/A") else question_type(r.question)

    counts: dict[str, Counter] = {}
    for r in read_sqa3d(data, "train"):
        counts.setdefault(kind(r), Counter())[r.answers[0]] += 1
    fallback = sum(counts.values(), Counter()).most_common(1)[0][0]
    test = read_sqa3d(data, "test")
    predictions = [counts[kind(r)].most_common(1)[0][0] if kind(r) in counts else fallback for r in test]
    return qa_metrics(predictions, [r.answers for r in test], [r.question for r in test])


def baselines(data: Path, seed: int) -> dict[str, dict]:
    config = Loc3RConfig.tiny()
    train_xy, train_yaw, _ = situated_poses(data, "train", config)
    test_xy, test_yaw, test_cameras = situated_poses(data, "test", config)
    rng = np.random.default_rng(seed)
    lo, hi = train_xy.min(0), train_xy.max(0)
    random_xy = rng.uniform(lo, hi, size=test_xy.shape)
    random_yaw = rng.uniform(-np.pi, np.pi, size=test_yaw.shape)
    mean_xy = np.broadcast_to(train_xy.mean(0), test_xy.shape)
    mean_yaw = np.full(test_yaw.shape, np.arctan2(np.sin(train_yaw).mean(), np.cos(train_yaw).mean()))
    return {"random pose": {"localization": localization_metrics(random_xy, test_xy, random_yaw, test_yaw)},
            "blind (mean pose)": {"localization": localization_metrics(mean_xy, test_xy, mean_yaw, test_yaw)},
            "trajectory centre": {"localization": localization_metrics(test_cameras, test_xy, mean_yaw, test_yaw)},
            "blind answers": {"qa": answer_prior(data)}}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("/tmp/loc3r_bench_accuracy"))
    p.add_argument("--scenes", type=int, default=200)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--only", nargs="*", help="run only these ablations (by name)")
    p.add_argument("--data", type=Path, default=None, help="an existing synthetic data set (default: OUT/data, made)")
    args = p.parse_args()

    data = args.data or args.out / "data"
    if not (data / "sqa_task").exists():
        cli(["synth", "--out", str(data), "--scenes", str(args.scenes), "--seed", str(args.seed), "--frames", "24",
             "--size", "64", "--workers", "2"])
    results = baselines(data, args.seed)
    for name, extra in ABLATIONS:
        if args.only and name not in args.only:
            continue
        slug = name.replace(" ", "_").replace("+", "plus").replace("(", "").replace(")", "")
        run, ev = args.out / "runs" / slug, args.out / "eval" / slug
        t0 = time.perf_counter()
        cli(["train", "--data", str(data), "--out", str(run), "--steps", str(args.steps), "--batch-size",
             str(args.batch_size), "--seed", str(args.seed), "--save-every", "500", "--quiet", "--resume", *extra])
        cli(["eval", "--checkpoint", str(run), "--data", str(data), "--split", "test", "--out", str(ev),
             "--plots", "4"])
        results[name] = json.loads((ev / "metrics.json").read_text())
        results[name]["train_seconds"] = time.perf_counter() - t0

    header = f"{'method':<24} {'Acc@0.5m':>9} {'Acc@1.0m':>9} {'Acc@15°':>8} {'Acc@30°':>8} {'EM@1':>6}"
    lines = [header, "-" * len(header)]
    for name, r in results.items():
        em = f"{r['qa']['em1']:6.1f}" if "qa" in r else f"{'-':>6}"
        if "localization" in r:
            loc = r["localization"]
            accs = f"{loc['acc_0.5m']:9.1f} {loc['acc_1.0m']:9.1f} {loc['acc_15deg']:8.1f} {loc['acc_30deg']:8.1f}"
        else:
            accs = f"{'-':>9} {'-':>9} {'-':>8} {'-':>8}"
        lines.append(f"{name:<24} {accs} {em}")
    n = next((r for r in results.values() if "n_situations" in r), None)
    lines.append(f"(test: {n['n_situations']} situations, {n['n']} questions; {args.steps} steps x batch "
                 f"{args.batch_size}; {args.scenes} scenes)" if n else "")
    print("\n".join(lines))
    (args.out / "results.json").write_text(json.dumps({"table": lines, "results": results}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
