"""Accuracy on the synthetic rooms: the full model against baselines and the paper's ablations, same data, same
recipe as `loc3r demo`, over several training seeds.

Trains on `--scenes` rooms of `--data-seed` and evaluates on `--test-scenes` rooms generated from `--test-seed`
(a seed no model saw; scored per situation, as `loc3r eval`):
- random pose:          position uniform over the box of the training positions, yaw uniform
- blind (mean pose):    the mean training position and the circular mean training yaw
- trajectory centre:    the mean of the video's camera positions (what the poses alone say) and the mean yaw
- blind answers:        the most frequent training answer of the question's type (EM only; the answer prior)
- situation only:       Loc3R-VLM without camera token and without layout loss (prior none, lambda_layout 0)
- + layout:             with the layout reconstruction loss (prior none)
- + camera token:       the full model (poses prior + layout + situation)

Every variant trains with the recipe `tiny_demo` (what `loc3r demo` and `loc3r train --preset tiny` run: the wsd
schedule; its loop starts join once the orientation loss is below the recipe's threshold, so a variant whose
orientation does not learn trains on the scans' own videos only). The README's table:

    python benchmarks/bench_accuracy.py --seeds 0 1 2 --out /tmp/bench_acc

Runs resume (`loc3r train --resume`): an interrupted benchmark continues, a finished run is not trained again.

Prints the ablation table (Acc@0.5m, Acc@1.0m, Acc@15deg, Acc@30deg, the median position and yaw errors, EM@1;
mean +- half the range over the training seeds), Acc@1.0m / Acc@30deg by where the model's frames show the anchor
(the object the speaker stands next to: in the first frame, whose camera defines the BEV frame, only in later
frames, or in none), and EM per question family against the answer prior, and writes them with every run's metrics
to OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from loc3r.command import dataclass_from_args
from loc3r.demo import DEMO_ROOMS
from loc3r.evaluate.baselines import baselines
from loc3r.evaluate.evaluation import EvalConfig, evaluate, situation_localization, unique_situations
from loc3r.model.config import Loc3RConfig
from loc3r.model.processor import make_dataset
from loc3r.synth import writer
from loc3r.synth.grounding import read_scene, video_token_objects
from loc3r.train import loop
from loc3r.train.config import TrainConfig
from loc3r.train.recipes import TINY_DEMO

WHERE_SEEN = ("first frame", "later frames only", "not seen")

ABLATIONS = [  # (name, extra training arguments)
    ("situation only", ["--prior", "none", "--no-layout"]),
    ("+ layout", ["--prior", "none"]),
    ("+ camera token (full)", []),
]


def train_config(data: Path, out: Path, flags: list[str], **fields) -> TrainConfig:
    """A TrainConfig from `loc3r train` flags (the ablation's and --extra) and fields set here, on the recipe
    tiny_demo. A failing step raises, so the benchmark stops there (never reads a stale metrics.json)."""
    parser = argparse.ArgumentParser()
    loop.add_arguments(parser)
    args = parser.parse_args(["--data", str(data), "--out", str(out), "--recipe", TINY_DEMO.name, *flags])
    return dataclass_from_args(TrainConfig, argparse.Namespace(**(vars(args) | fields)))


def make_rooms(data: Path, scenes: int, seed: int, held_out: Path, held_out_scenes: int, held_out_seed: int) -> None:
    """The demo's training rooms and held-out rooms of another seed (every one in the test split); each set is
    generated once, then reused."""
    rendering = dict(frames=24, size=64, workers=2)  # the demo's
    if not (data / "sqa_task").exists():
        writer.generate(data, scenes, seed, **rendering)
    if not (held_out / "sqa_task").exists():
        writer.generate(held_out, held_out_scenes, held_out_seed, held_out=True, **rendering)


def anchor_seen(test_data: Path) -> dict[tuple[str, str], str]:
    """(scene, situation text) -> where the model's frames (the tiny preset's) show the situation's anchor, the
    object the speaker stands next to (synth.grounding.video_token_objects): in the first frame, only in later
    frames, or in none."""
    ds = make_dataset(Loc3RConfig.tiny(), test_data, "test")
    out = {}
    for scene_id in ds.scene_ids:
        scene = read_scene(test_data, scene_id)
        seen_by = video_token_objects(scene, ds.scene(scene_id))  # [T, n] index into scene.objects, -1: none
        index = {o.id: i for i, o in enumerate(scene.objects)}
        for text, anchor in situation_anchors(test_data, scene_id).items():
            seen = (seen_by == index[anchor]).any(-1)
            out[scene_id, text] = WHERE_SEEN[0 if seen[0] else 1 if seen.any() else 2]
    return out


def situation_anchors(data: Path, scene_id: str) -> dict[str, int]:
    """situation text -> the id of the object the speaker stands next to, for the basic rooms' "next to A, facing
    B" situations (synth/<scene>.json)."""
    desc = json.loads((data / "synth" / f"{scene_id}.json").read_text())
    return {d["text"]: s["objects"]["a"] for s in desc["situations"] if set(s["objects"]) == {"a", "b"}
            for d in [s, *s["alternatives"]]}


def by_where_seen(predictions: Path, where: dict[tuple[str, str], str]) -> dict[str, dict]:
    """Localization metrics of a run's situations (predictions.jsonl) per WHERE_SEEN group."""
    groups: dict[str, list[dict]] = {g: [] for g in WHERE_SEEN}
    records = [json.loads(line) for line in predictions.read_text().splitlines()]
    for r in unique_situations(records):
        groups[where[r["scene_id"], r["situation"]]].append(r)
    return {g: {"n": len(rs), **situation_localization(rs)} for g, rs in groups.items() if rs}


def cell(values: list[float], width: int, digits: int = 1) -> str:
    """mean +- half the range of one metric over the seeds."""
    if len(values) == 1:
        return f"{values[0]:>{width}.{digits}f}"
    return f"{np.mean(values):.{digits}f}±{(max(values) - min(values)) / 2:.{digits}f}".rjust(width)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path("/tmp/loc3r_bench_accuracy"))
    p.add_argument("--scenes", type=int, default=DEMO_ROOMS["scenes"], help="training rooms (the demo's)")
    p.add_argument("--test-scenes", type=int, default=DEMO_ROOMS["test_scenes"],
                   help="held-out rooms of --test-seed")
    p.add_argument("--steps", type=int, default=TINY_DEMO.settings["steps"])
    p.add_argument("--batch-size", type=int, default=TINY_DEMO.settings["batch_size"], help="videos per step")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--test-seed", type=int, default=1000)
    p.add_argument("--only", nargs="*", help="run only these ablations (by name)")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `loc3r train` arguments (last)")
    args = p.parse_args()

    data, test_data = args.out / "data", args.out / "test_data"
    make_rooms(data, args.scenes, args.data_seed, test_data, args.test_scenes, args.test_seed)
    results = baselines(data, test_data, args.data_seed)
    where = anchor_seen(test_data)
    runs: dict[str, list[dict]] = {}
    for name, extra in ABLATIONS:
        if args.only and name not in args.only:
            continue
        for seed in args.seeds:
            slug = name.replace(" ", "_").replace("+", "plus").replace("(", "").replace(")", "") + f"_seed{seed}"
            run, ev = args.out / "runs" / slug, args.out / "eval" / slug
            t0 = time.perf_counter()
            loop.train(train_config(data, run, [*extra, *args.extra], steps=args.steps, batch_size=args.batch_size,
                                    seed=seed, save_every=500, quiet=True, resume=True))
            t1 = time.perf_counter()
            evaluate(EvalConfig(checkpoint=run, data=test_data, split="test", out=ev, plots=4))
            r = json.loads((ev / "metrics.json").read_text())
            r["train_seconds"], r["seed"] = t1 - t0, seed
            r["by_where_anchor_seen"] = by_where_seen(ev / "predictions.jsonl", where)
            runs.setdefault(name, []).append(r)

    metrics = [("acc_0.5m", "Acc@0.5m", 1), ("acc_1.0m", "Acc@1.0m", 1), ("acc_15deg", "Acc@15°", 1),
               ("acc_30deg", "Acc@30°", 1), ("median_pos_err_m", "pos err m", 2),
               ("median_yaw_err_deg", "yaw err°", 1)]
    header = f"{'method':<24}" + "".join(f"{h:>11}" for _, h, _ in metrics) + f"{'EM@1':>11}"
    lines = [header, "-" * len(header)]
    for name, r in list(results.items()) + list(runs.items()):
        rs = r if isinstance(r, list) else [r]
        row = f"{name:<24}"
        for key, _, digits in metrics:
            row += cell([x["localization"][key] for x in rs], 11, digits) if "localization" in rs[0] else f"{'-':>11}"
        row += cell([x["qa"]["em1"] for x in rs], 11) if "qa" in rs[0] else f"{'-':>11}"
        lines.append(row)
    n = next(iter(runs.values()))[0] if runs else None
    lines.append(f"(held-out test: {n['n_situations']} situations, {n['n']} questions in {args.test_scenes} rooms of "
                 f"seed {args.test_seed}; {args.steps} steps x {args.batch_size} videos; {args.scenes} training "
                 f"rooms; seeds {' '.join(map(str, args.seeds))}: mean ± half the range)" if n else "")
    if runs:
        first = next(iter(runs.values()))[0]["by_where_anchor_seen"]
        lines += ["", "Acc@1.0m / Acc@30° by where the model's frames show the anchor (situations: "
                  + ", ".join(f"{g} {first[g]['n']}" for g in WHERE_SEEN if g in first) + ")",
                  f"{'method':<24}" + "".join(f"{g:>22}" for g in WHERE_SEEN if g in first)]
        for name, rs in runs.items():
            lines.append(f"{name:<24}" + "".join(
                f"{np.mean([x['by_where_anchor_seen'][g]['acc_1.0m'] for x in rs]):.1f} / "
                f"{np.mean([x['by_where_anchor_seen'][g]['acc_30deg'] for x in rs]):.1f}".rjust(22)
                for g in WHERE_SEEN if g in first))
    full = runs.get("+ camera token (full)")
    if full:
        prior = results["blind answers"]["qa"]["by_question_type"]
        lines += ["", f"{'question family':<16}{'n':>6}{'answer prior':>14}{'full model':>12}"]
        for family, v in prior.items():
            lines.append(f"{family:<16}{v['n']:>6}{v['em1']:>14.1f}"
                         + cell([x["qa"]["by_question_type"][family]["em1"] for x in full], 12))
    print("\n".join(lines))
    (args.out / "results.json").write_text(json.dumps({"table": lines, "baselines": results, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
