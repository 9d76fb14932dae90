"""The orientation target's sigma, picked on validation rooms (the paper does not publish it).

The <Ori> head is trained against a wrapped Gaussian over its yaw bins (`--orientation-sigma`, radians; the tiny
preset's default, 60°, is what this sweep picked). It trains the recipe tiny_demo (train/recipes.py) once
per sigma and training seed on the demo's training rooms and scores every run on validation rooms of `--val-seed`:
rooms neither the training (`--data-seed`) nor the demo's and bench_accuracy's test rooms (`--data-seed` +
TEST_SEED_OFFSET) come from, so picking sigma here never looks at the test set. The recipe's `--loop-starts-when`
is a threshold on the orientation loss, whose scale depends on sigma (a yaw-blind head's KL, losses.yaw_blind_kl:
2.17 at 10°, 1.07 at 30°, 0.39 at 60°): each sigma gets the demo's LOOP_JOIN_FRACTION of its own
(recipes.loop_join_threshold). docs/LOG.md's table is the defaults':

    python benchmarks/sweep_orientation_sigma.py --out /tmp/sweep_sigma

Runs resume (`loc3r train --resume`); a finished run is not trained again. Prints, per sigma (mean ± half the range
over the seeds): Acc@15°, Acc@30°, the median yaw error, Acc@1.0m and EM@1, and the sigma with the best mean of
Acc@15° and Acc@30°; writes every run's metrics to OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np
from bench_accuracy import cell, make_rooms, train_config

from loc3r.demo import DEMO_ROOMS, TEST_SEED_OFFSET
from loc3r.evaluate.evaluation import EvalConfig, evaluate
from loc3r.train.loop import train
from loc3r.train.recipes import TINY_DEMO, loop_join_threshold

METRICS = [("acc_15deg", "Acc@15°"), ("acc_30deg", "Acc@30°"), ("median_yaw_err_deg", "yaw err°"),
           ("acc_1.0m", "Acc@1.0m")]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("/tmp/loc3r_sweep_sigma"))
    p.add_argument("--sigmas", type=float, nargs="+", default=[10, 30, 60], help="sigmas to try, degrees")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds")
    p.add_argument("--scenes", type=int, default=DEMO_ROOMS["scenes"], help="training rooms (the demo's)")
    p.add_argument("--val-scenes", type=int, default=DEMO_ROOMS["test_scenes"], help="validation rooms")
    p.add_argument("--steps", type=int, default=TINY_DEMO.settings["steps"])
    p.add_argument("--batch-size", type=int, default=TINY_DEMO.settings["batch_size"], help="videos per step")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--val-seed", type=int, default=2000, help="validation rooms' seed (not the test rooms')")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `loc3r train` arguments (last)")
    args = p.parse_args()
    if args.val_seed in (args.data_seed, args.data_seed + TEST_SEED_OFFSET):
        p.error(f"--val-seed {args.val_seed} is the training or the test rooms' seed: pick another")

    data, val_data = args.out / "data", args.out / "val_data"
    make_rooms(data, args.scenes, args.data_seed, val_data, args.val_scenes, args.val_seed)
    runs: dict[float, list[dict]] = {}
    for sigma in args.sigmas:
        for seed in args.seeds:
            slug = f"sigma{sigma:g}_seed{seed}"
            run, ev = args.out / "runs" / slug, args.out / "eval" / slug
            t0 = time.perf_counter()
            train(train_config(data, run, args.extra, steps=args.steps, batch_size=args.batch_size, seed=seed,
                               orientation_sigma=math.radians(sigma), save_every=500, quiet=True, resume=True,
                               loop_starts_when=loop_join_threshold(math.radians(sigma))))
            t1 = time.perf_counter()
            evaluate(EvalConfig(checkpoint=run, data=val_data, split="test", out=ev, plots=0))
            r = json.loads((ev / "metrics.json").read_text())
            r["train_seconds"], r["seed"], r["sigma_deg"] = t1 - t0, seed, sigma
            runs.setdefault(sigma, []).append(r)

    header = f"{'sigma':<10}" + "".join(f"{h:>12}" for _, h in METRICS) + f"{'EM@1':>12}"
    lines = [header, "-" * len(header)]
    for sigma, rs in runs.items():
        lines.append(f"{sigma:<10g}" + "".join(cell([r["localization"][k] for r in rs], 12) for k, _ in METRICS)
                     + cell([r["qa"]["em1"] for r in rs], 12))
    score = {s: np.mean([(r["localization"]["acc_15deg"] + r["localization"]["acc_30deg"]) / 2 for r in rs])
             for s, rs in runs.items()}
    best = max(score, key=score.get)
    n = next(iter(runs.values()))[0]
    lines += [f"(validation: {n['n_situations']} situations in {args.val_scenes} rooms of seed {args.val_seed}; "
              f"{args.steps} steps x {args.batch_size} videos; seeds {' '.join(map(str, args.seeds))}: "
              f"mean ± half the range)",
              f"best mean of Acc@15° and Acc@30°: sigma {best:g}° ({math.radians(best):.3f} rad)"]
    print("\n".join(lines))
    (args.out / "results.json").write_text(json.dumps({"table": lines, "runs": {str(k): v for k, v in runs.items()},
                                                       "best_sigma_deg": best}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
