"""Accuracy on the synthetic rooms: the full model against baselines and the paper's ablations, same data, same
recipe as `loc3r demo` (or another), over several training seeds.

Trains on `--scenes` rooms of `--data-seed` and evaluates on `--test-scenes` rooms generated from `--test-seed`
(a seed no model saw; scored per situation, as `loc3r eval`):
- random pose:          position uniform over the box of the training positions, yaw uniform
- blind (mean pose):    the mean training position and the circular mean training yaw
- trajectory centre:    the mean of the video's camera positions (what the poses alone say) and the mean yaw
- blind answers:        the most frequent training answer of the question's type (EM only; the answer prior)
- situation only:       Loc3R-VLM without camera token and without layout loss (prior none, lambda_layout 0)
- + layout:             with the layout reconstruction loss (prior none)
- + camera token:       the full model (poses prior + layout + situation)

Every variant trains with the demo's recipe `tiny_situated` on its rooms (the wsd schedule; its loop starts, relation
questions and added LLM layers join once the orientation loss is below the recipe's threshold, so a variant whose
orientation does not learn trains on the scans' own videos only), or the one given by --recipe (`tiny_demo`: what
`loc3r train --preset tiny` runs, on the demo's plain rooms). The README's tables:

    python benchmarks/bench_accuracy.py --seeds 0 1 2 --out /tmp/bench_situated
    python benchmarks/bench_accuracy.py --recipe tiny_demo --seeds 0 1 2 --out /tmp/bench_acc

(--relations K: the training rooms with K more relation questions a situation, `loc3r synth --relations K`; default
the recipe's rooms, tiny_situated's 6; the held-out rooms are the demo's either way.)

Runs resume (`loc3r train --resume`): an interrupted benchmark continues, a finished run is not trained again, and
an evaluation written after its run's last checkpoint is not made again.

The situation ablation (does the answer come from where the speaker stands?), on the same runs' seeds:
- no situation loss:    the full model trained without the position and orientation losses (--no-situation) and
                        without the relation aids, which read the pose (--relation-weight 0); its relation
                        questions and added LLM layers from the first step (--no-relations-join,
                        --no-added-layers-join)
- <Pos>/<Ori> hidden:   the full model's runs, evaluated with no token attending to <Pos> / <Ori>
                        (`loc3r eval --hide-situation-tokens`): the answers read the situation from its words only;
                        its localization is the model's own (the situation heads read an unhidden pass)

Prints the ablation table (Acc@0.5m, Acc@1.0m, Acc@15deg, Acc@30deg, the median position and yaw errors, EM@1;
mean +- half the range over the training seeds), Acc@1.0m / Acc@30deg by where the model's frames show the anchor
(the object the speaker stands next to: in the first frame, whose camera defines the BEV frame, only in later
frames, or in none), and EM per question family: the answer prior on the same questions (the best constant answer
of the family), the full model per seed and their mean, and the situation ablation's two variants; the families
answered from the speaker's pose and the room together (left / right, navigation, distance) also split by whether
the situation's text names the question's object ("next to A, facing B": reaching B is "forward" from the words
alone). Writes them with every run's metrics to OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from loc3r.command import dataclass_from_args
from loc3r.demo import DEMO_ROOMS, DemoConfig
from loc3r.evaluate.baselines import baselines
from loc3r.evaluate.evaluation import EvalConfig, evaluate, situation_localization, unique_situations
from loc3r.model.config import Loc3RConfig
from loc3r.model.processor import make_dataset
from loc3r.synth import writer
from loc3r.synth.grounding import read_scene, video_token_objects
from loc3r.synth.situations import RELATION_KINDS
from loc3r.train import loop
from loc3r.train.config import TrainConfig
from loc3r.train.recipes import RECIPES

WHERE_SEEN = ("first frame", "later frames only", "not seen")

FULL = "+ camera token (full)"
HIDDEN = "<Pos>/<Ori> hidden"  # the full runs evaluated with hide_situation_tokens
ABLATIONS = [  # (name, extra training arguments)
    ("situation only", ["--prior", "none", "--no-layout"]),
    ("+ layout", ["--prior", "none"]),
    (FULL, []),
    # without the pose losses, and without the relation aids that read the pose (a recipe's); its relation questions
    # and its added LLM layers from the first step, as their join waits for an orientation this variant never learns
    ("no situation loss", ["--no-situation", "--relation-weight", "0", "--no-relations-join",
                           "--no-added-layers-join"]),
]


def train_config(data: Path, out: Path, flags: list[str], recipe: str = DemoConfig.recipe, **fields) -> TrainConfig:
    """A TrainConfig from `loc3r train` flags (the ablation's and --extra) and fields set here, on a recipe (the
    demo's). A failing step raises, so the benchmark stops there (never reads a stale metrics.json)."""
    parser = argparse.ArgumentParser()
    loop.add_arguments(parser)
    args = parser.parse_args(["--data", str(data), "--out", str(out), "--recipe", recipe, *flags])
    return dataclass_from_args(TrainConfig, argparse.Namespace(**(vars(args) | fields)))


def make_rooms(data: Path, scenes: int, seed: int, held_out: Path, held_out_scenes: int, held_out_seed: int,
               relations: int = 0) -> None:
    """The demo's training rooms (with `relations` more relation questions a situation: `loc3r synth --relations`)
    and held-out rooms of another seed (every one in the test split, the demo's questions); each set is generated
    once, then reused."""
    rendering = dict(frames=24, size=64, workers=2)  # the demo's
    if not (data / "sqa_task").exists():
        writer.generate(data, scenes, seed, relations=relations, **rendering)
    if not (held_out / "sqa_task").exists():
        writer.generate(held_out, held_out_scenes, held_out_seed, held_out=True, **rendering)


def evaluated(config: EvalConfig) -> None:
    """`loc3r eval` of a run, unless config.out holds an evaluation written after the run's newest checkpoint (a
    benchmark run again evaluates only what changed)."""
    done, latest = config.out / "metrics.json", Path(config.checkpoint) / "latest.json"
    if not (done.is_file() and done.stat().st_mtime > latest.stat().st_mtime):
        evaluate(config)


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


def named_in_situation(test_data: Path) -> dict[int, bool]:
    """question_id -> whether the situation's text names the question's object, for the questions of
    RELATION_KINDS (synth/<scene>.json: the question's spec objects against the situation's slots)."""
    out = {}
    for path in sorted((test_data / "synth").glob("*.json")):
        desc = json.loads(path.read_text())
        named = {s["id"]: set(s["objects"].values()) for s in desc["situations"]}
        for q in desc["questions"]:
            if q["question_type"] in RELATION_KINDS and q["situation_id"] is not None:
                out[q["question_id"]] = q["spec"]["objects"][0] in named[q["situation_id"]]
    return out


def family_scores(predictions: Path, named: dict[int, bool]) -> dict[str, dict]:
    """EM (percent) per question family of a run's predictions.jsonl, and of the relation families split by
    whether the situation names the object ("left_right, object named" / "... not named"), each with its answer
    prior on the same questions (the most frequent reference answer's EM) and its count."""
    groups: dict[str, list[dict]] = {}
    for r in (json.loads(line) for line in predictions.read_text().splitlines()):
        groups.setdefault(r["question_type"], []).append(r)
        if r["question_id"] in named:
            split = "object named" if named[r["question_id"]] else "not named"
            groups.setdefault(f"{r['question_type']}, {split}", []).append(r)
    out = {}
    for name, rs in groups.items():
        first = [r["gt_answers"][0] for r in rs]
        guess = max(set(first), key=first.count)
        out[name] = {"n": len(rs), "em1": 100.0 * float(np.mean([r["answer_score"] for r in rs])),
                     "prior": 100.0 * float(np.mean([guess in r["gt_answers"] for r in rs]))}
    return out


def family_table(runs: dict[str, list[dict]], seeds: list[int]) -> list[str]:
    """EM per family: the answer prior, the full model per seed and mean, its gain over the prior, the situation
    ablation's variants (means)."""
    full = runs[FULL]
    others = [name for name in ("no situation loss", HIDDEN) if name in runs]
    families = sorted(full[0]["families"], key=lambda f: (f.split(",")[0] not in RELATION_KINDS, f))
    header = (f"{'question family':<30}{'n':>5}{'prior':>7}" + "".join(f"{'seed ' + str(x['seed']):>8}" for x in full)
              + f"{'full':>11}{'gain':>7}" + "".join(f"{o:>20}" for o in others))
    lines = [header, "-" * len(header)]
    for f in families:
        v = full[0]["families"][f]
        em = [x["families"][f]["em1"] for x in full]
        lines.append(f"{f:<30}{v['n']:>5}{v['prior']:>7.1f}" + "".join(f"{e:>8.1f}" for e in em) + cell(em, 11)
                     + f"{np.mean(em) - v['prior']:>+7.1f}"
                     + "".join(cell([x["families"][f]["em1"] for x in runs[o] if f in x["families"]], 20)
                               for o in others))
    return lines


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
    p.add_argument("--recipe", default=DemoConfig.recipe,
                   choices=[r.name for r in RECIPES.values() if r.preset == "tiny"],
                   help="the recipe every variant trains with (its steps and batch unless given; default the demo's)")
    p.add_argument("--steps", type=int, help="training steps (default: the recipe's)")
    p.add_argument("--batch-size", type=int, help="videos per step (default: the recipe's)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds")
    p.add_argument("--data-seed", type=int, default=0)
    p.add_argument("--test-seed", type=int, default=1000)
    p.add_argument("--relations", type=int,
                   help="more relation questions a situation in the training rooms (loc3r synth --relations; "
                        "default: the recipe's rooms')")
    p.add_argument("--only", nargs="*", help="run only these ablations (by name)")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more `loc3r train` arguments (last)")
    args = p.parse_args()

    if args.relations is None:
        args.relations = RECIPES[args.recipe].rooms.get("relations", 0)
    data = args.out / ("data" if not args.relations else f"data_relations{args.relations}")
    test_data = args.out / "test_data"
    make_rooms(data, args.scenes, args.data_seed, test_data, args.test_scenes, args.test_seed, args.relations)
    results = baselines(data, test_data, args.data_seed)
    where = anchor_seen(test_data)
    named = named_in_situation(test_data)
    runs: dict[str, list[dict]] = {}

    def scored(ev: Path, seed: int, seconds: float | None = None) -> dict:
        r = json.loads((ev / "metrics.json").read_text())
        r["train_seconds"], r["seed"] = seconds, seed
        r["by_where_anchor_seen"] = by_where_seen(ev / "predictions.jsonl", where)
        r["families"] = family_scores(ev / "predictions.jsonl", named)
        return r

    config = None  # the last run's settings (steps and batch resolved from the recipe)
    for name, extra in ABLATIONS:
        if args.only and name not in args.only:
            continue
        for seed in args.seeds:
            slug = name.replace(" ", "_").replace("+", "plus").replace("(", "").replace(")", "") + f"_seed{seed}"
            run, ev = args.out / "runs" / slug, args.out / "eval" / slug
            t0 = time.perf_counter()
            config = train_config(data, run, [*extra, *args.extra], args.recipe, steps=args.steps,
                                  batch_size=args.batch_size, seed=seed, save_every=500, quiet=True, resume=True)
            latest = run / "latest.json"
            trained = latest.is_file() and json.loads(latest.read_text())["step"] == config.steps
            loop.train(config)
            seconds = None if trained else time.perf_counter() - t0  # a finished run's time is not measured again
            evaluated(EvalConfig(checkpoint=run, data=test_data, split="test", out=ev, plots=4, overwrite=True))
            runs.setdefault(name, []).append(scored(ev, seed, seconds))
            if name == FULL:  # the control: the same checkpoint, its answers kept from <Pos> / <Ori>
                hidden = args.out / "eval" / f"hidden_seed{seed}"
                evaluated(EvalConfig(checkpoint=run, data=test_data, split="test", out=hidden, plots=0,
                                     overwrite=True, hide_situation_tokens=True))
                runs.setdefault(HIDDEN, []).append(scored(hidden, seed))

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
    rooms = f"{args.scenes} training rooms" + (f" (--relations {args.relations})" if args.relations else "")
    lines.append(f"(held-out test: {n['n_situations']} situations, {n['n']} questions in {args.test_scenes} rooms of "
                 f"seed {args.test_seed}; recipe {args.recipe}, {config.steps} steps x {config.batch_size} videos; "
                 f"{rooms}; seeds "
                 f"{' '.join(map(str, args.seeds))}: mean ± half the range)" if n else "")
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
    if FULL in runs:
        lines += ["", "EM per question family (held-out rooms): answer prior on the same questions, the full model "
                  "per training seed and mean ± half the range, its gain, the situation ablation"]
        lines += family_table(runs, args.seeds)
    print("\n".join(lines))
    (args.out / "results.json").write_text(json.dumps({"table": lines, "baselines": results, "runs": runs}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
