"""What limits "How far is the X from me?" (the distance family: the distance from the speaker to the object's
footprint, in whole metres)? For every distance question of held-out synthetic rooms, the checkpoint's answer against
what its own estimates would answer, each rounded as the question is:
    own position, true object     the footprint's distance from the position <Pos> predicts (the room's truth)
    own position, own map         ... from the footprint moved by the model's map of the object: the mean of the
                                  layout head's points of the vision tokens whose targets fall on the footprint,
                                  minus the mean of those targets (questions whose object no token shows: left out)
    answer state                  the norm of the object's place in the speaker's frame that the answer's state
                                  gives through the position head (what the egocentric relation readout trains it
                                  to give; `loc3r train --relation-egocentric`)
and how often the answer is the answer state's own distance, rounded. The first two bound what reasoning from the
model's perception can answer; the last says how well the answer's state holds the relation.

    python research/distance_bounds.py --checkpoint RUN --data HELD_OUT_ROOMS
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from loc3r.evaluate.evaluation import predict_dataset
from loc3r.model.processor import make_benchmark_dataset
from loc3r.synth import shapes
from loc3r.synth.language import NUMBER_WORDS
from loc3r.synth.scene import Scene
from loc3r.tiny.relation_data import object_place
from loc3r.train.checkpoint import load_model

ON_FOOTPRINT_M = 0.05  # a vision token shows the object when its target is this close to the footprint


def answer_states(model) -> tuple[list, callable]:
    """The states [B, D] the first answer token is predicted from, one tensor per generate() call (a hook on the LM
    head that keeps its first call after each generate)."""
    states, first = [], [False]
    generate = model.generate

    def marked(*args, **kwargs):
        first[0] = True
        return generate(*args, **kwargs)

    def keep(module, args, output):
        if first[0]:
            states.append(args[0].detach())
            first[0] = False

    model.generate = marked
    handle = model.vlm.lm_head.register_forward_hook(keep)
    return states, handle.remove


def metres(answer: str | None) -> int:
    words = (answer or "").split()
    return NUMBER_WORDS.index(words[0]) if words and words[0] in NUMBER_WORDS else -1


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--data", type=Path, required=True, help="held-out synthetic rooms (loc3r synth)")
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    model = load_model(args.checkpoint)
    dataset = make_benchmark_dataset(model.config, "sqa3d", args.data, "test", None, None)
    states, unhook = answer_states(model)
    maps: dict = {}
    records = predict_dataset(model, dataset, 64, 4, torch.device("cpu"), maps=maps)
    unhook()
    states = torch.cat(states)
    with torch.no_grad():
        seen = model.position_head(states).mu.double().numpy()  # [N, 2] the object in the speaker's frame
    rows, unseen, scenes = [], 0, {}
    for i, r in enumerate(records):
        if r["question_type"] != "distance":
            continue
        sample = dataset[i]
        if r["scene_id"] not in scenes:
            desc = json.loads((args.data / "synth" / f"{r['scene_id']}.json").read_text())
            scenes[r["scene_id"]] = Scene.from_json(desc), {q["question_id"]: q for q in desc["questions"]}
        scene, spec = scenes[r["scene_id"]]
        q = spec[r["question_id"]]
        obj = next(o for o in scene.objects if o.id == q["spec"]["objects"][0])
        # the object's footprint in the video's BEV frame (the room's frame turned as the speaker's pose is)
        centre = object_place(sample, (np.asarray(q["position"]), q["yaw"], obj.center[:2], 0.0)).astype(np.float64)
        half, yaw = obj.size[None, :2] / 2, np.array([obj.yaw + float(sample.yaw_rad) - q["yaw"]])

        def distance(from_xy, at=centre):
            return max(float(shapes.footprint_distance(np.asarray(from_xy)[None], at[None], half, yaw)[0, 0]), 0.0)

        predicted = np.asarray(r["position_xy_m"])
        targets = np.asarray(sample.layout_xy, np.float64).reshape(-1, 2)
        points = np.asarray(maps[sample.question_id][0], np.float64).reshape(-1, 2)
        on = np.asarray(sample.layout_valid).reshape(-1) & (
            shapes.footprint_distance(targets, centre[None], half, yaw)[:, 0] <= ON_FOOTPRINT_M)
        own_map = distance(predicted, centre + points[on].mean(0) - targets[on].mean(0)) if on.any() else np.nan
        unseen += not on.any()
        rows.append((metres(r["gt_answers"][0]), metres(r["answer"]), distance(predicted), own_map,
                     float(np.linalg.norm(seen[i]))))
    a = np.array(rows)
    truth, answer = a[:, 0], a[:, 1]
    shown = np.isfinite(a[:, 3])

    def em(x, where=slice(None)):
        return 100 * float(np.mean(np.round(x[where]) == truth[where]))

    print(f"{args.checkpoint}: {len(a)} distance questions ({unseen} whose object no vision token shows)")
    print(f"  the model's answers                  {em(answer):5.1f}   (on the shown objects {em(answer, shown):.1f})")
    print(f"  own position, true object            {em(a[:, 2]):5.1f}")
    print(f"  own position, own map of the object  {em(a[:, 3], shown):5.1f}   (shown objects only)")
    print(f"  the answer state's relation          {em(a[:, 4]):5.1f}   the answers are its rounding: "
          f"{100 * float(np.mean(answer == np.round(a[:, 4]))):.1f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
