"""Where does the egocentric relation of a named object get lost? Linear probes of a checkpoint's states on the
relation questions (left / right, navigation, distance) of synthetic rooms.

For every relation question, one forward of its generation prompt; at each LLM layer's input (0: the embeddings,
the last: the final states) the states of four tokens are read:
    answer  the prompt's last token, where the answer's first word is predicted
    object  the last token of the question's object name ("... the red <sofa> on my left ...")
    pos     <Pos>,  ori  <Ori>
and ridge / logistic probes, fitted on the questions of `--fit` rooms and scored on `--data` rooms, say whether
each of these can be read from them:
    obj xy      the object's BEV position (the frame of the video's first camera)
    pose        the speaker's BEV position and (cos, sin) of the yaw
    obj ego     the object's position in the speaker's own frame (x ahead, y to the left), from the true pose
    answer      the question's answer (left / right; forward / left / right / backward; the distance word)
A relation the model answers needs obj ego at the answer token; obj xy at the object token and the pose at <Pos> /
<Ori> are its ingredients.

    python research/probe_relations.py --checkpoint RUN --fit TRAIN_ROOMS --data HELD_OUT_ROOMS [--scenes 200]
"""

from __future__ import annotations

import argparse
import collections
import json
import sys
from pathlib import Path

import numpy as np
import torch

from loc3r import geometry
from loc3r.model.processor import Collator, make_dataset
from loc3r.synth.grounding import read_scene
from loc3r.synth.language import object_names
from loc3r.synth.shapes import rotate_xy
from loc3r.synth.situations import RELATION_KINDS
from loc3r.train.checkpoint import load_model
from probe_learning import fit_probe, ridge_r2  # this folder's: run as python research/probe_relations.py


def find_last(seq: list[int], sub: list[int]) -> int:
    """Index of the last token of the last occurrence of sub in seq (-1 if none)."""
    for i in range(len(seq) - len(sub), -1, -1):
        if seq[i:i + len(sub)] == sub:
            return i + len(sub) - 1
    return -1


@torch.no_grad()
def collect(model, data: Path, split: str, scenes: int) -> dict:
    """Per question of RELATION_KINDS: the four tokens' states at every layer and the probes' targets."""
    ds = make_dataset(model.config, data, split)
    collate = Collator(model.tokenizer, model.config, for_generation=True)
    rows = collections.defaultdict(list)
    by_scene = collections.defaultdict(list)
    for i, r in enumerate(ds.records):
        by_scene[r.scene_id].append(i)
    for scene_id in list(by_scene)[:scenes]:
        desc = json.loads((data / "synth" / f"{scene_id}.json").read_text())
        specs = {q["question_id"]: q for q in desc["questions"]}
        scene = read_scene(data, scene_id)
        names = object_names(scene)
        index = {o.id: i for i, o in enumerate(scene.objects)}
        world_to_bev = ds.scene(scene_id).world_to_bev
        chosen = [i for i in by_scene[scene_id] if specs[ds.records[i].question_id]["question_type"] in RELATION_KINDS]
        if not chosen:
            continue
        samples = [ds[i] for i in chosen]
        batch = collate(samples)
        embeds = model.embed_inputs(batch)
        mask = batch.attention_mask
        out = model.vlm.model.language_model(inputs_embeds=embeds, attention_mask=mask,
                                             position_ids=(mask.cumsum(-1) - 1).clamp(min=0), output_hidden_states=True)
        hidden = torch.stack(out.hidden_states)  # [layers + 1, B, L, D]
        for q, s in enumerate(samples):
            spec = specs[s.question_id]
            obj = spec["spec"]["objects"][0]
            name_ids = model.tokenizer(names[obj], add_special_tokens=False).input_ids
            at = find_last(batch.input_ids[q].tolist(), name_ids)
            if at < 0:
                continue
            xy = geometry.world_to_bev_points(world_to_bev, scene.objects[index[obj]].center[None])[0, :2]
            p, yaw = s.position_xy.astype(np.float64), float(s.yaw_rad)
            ego = rotate_xy(xy - p, -yaw)  # the speaker's frame: x ahead, y to the left
            rows["kind"].append(spec["question_type"])
            rows["answer_word"].append(s.answer)
            rows["answer"].append(hidden[:, q, -1])
            rows["object"].append(hidden[:, q, at])
            rows["pos"].append(hidden[:, q, batch.pos_index[q]])
            rows["ori"].append(hidden[:, q, batch.ori_index[q]])
            rows["obj_xy"].append(torch.as_tensor(xy, dtype=torch.float32))
            rows["pose"].append(torch.tensor([p[0], p[1], np.cos(yaw), np.sin(yaw)], dtype=torch.float32))
            ego = np.asarray(ego, np.float64)
            rows["obj_ego"].append(torch.as_tensor(ego / max(np.linalg.norm(ego), 1e-6), dtype=torch.float32))
    return {k: v if k in ("kind", "answer_word") else torch.stack(v, 1 if k in ("answer", "object", "pos", "ori")
                                                                       else 0) for k, v in rows.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--fit", type=Path, required=True, help="rooms whose questions fit the probes (train split)")
    parser.add_argument("--data", type=Path, required=True, help="rooms the probes are scored on (test split)")
    parser.add_argument("--scenes", type=int, default=200)
    args = parser.parse_args()
    torch.manual_seed(0)
    model = load_model(args.checkpoint).eval()
    tr = collect(model, args.fit, "train", args.scenes)
    te = collect(model, args.data, "test", args.scenes)
    layers = tr["answer"].shape[0]
    print(f"{len(tr['kind'])} fitting questions, {len(te['kind'])} scored; layer inputs 0..{layers - 1}")
    for kind in RELATION_KINDS:
        mtr = np.array([k == kind for k in tr["kind"]])
        mte = np.array([k == kind for k in te["kind"]])
        if mtr.sum() < 20 or mte.sum() < 5:
            continue
        words = sorted(set(np.array(tr["answer_word"])[mtr]))
        ytr = np.array([words.index(w) if w in words else -1 for w in np.array(tr["answer_word"])[mtr]])
        yte = np.array([words.index(w) if w in words else -1 for w in np.array(te["answer_word"])[mte]])
        keep = yte >= 0
        prior = max(np.mean(yte[keep] == c) for c in range(len(words)))
        print(f"\n## {kind}: {mtr.sum()} / {mte.sum()} questions, answers {words}, prior on the scored {prior:.2f}")
        print("| probe | token | " + " | ".join(f"L{k}" for k in range(layers)) + " |")
        print("|---|---|" + "---|" * layers)
        for target, tokens in (("obj xy", ("object", "answer")), ("pose", ("pos", "ori", "answer")),
                               ("obj ego", ("object", "answer")), ("answer", ("answer",))):
            for token in tokens:
                xs_tr, xs_te = tr[token][:, torch.as_tensor(mtr)], te[token][:, torch.as_tensor(mte)]
                if target == "answer":
                    vals = [fit_probe(xs_tr[k], ytr, xs_te[k][torch.as_tensor(keep)], yte[keep])
                            for k in range(layers)]
                else:
                    key = {"obj xy": "obj_xy", "pose": "pose", "obj ego": "obj_ego"}[target]
                    vals = [ridge_r2(xs_tr[k], tr[key][mtr], xs_te[k], te[key][mte], alpha=10.0) for k in range(layers)]
                print(f"| {target} | {token} | " + " | ".join(f"{v:.2f}" for v in vals) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
