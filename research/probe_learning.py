"""Probes of what the tiny model can and does learn on the synthetic rooms (issue: the embedded default must learn).

Prints one table per probe:
1. visibility  - of the situations of a split, the fraction whose anchor (the object the speaker stands next to)
                 and facing target are seen in the T frames the model gets, and the median number of vision tokens
                 that see the anchor. A token sees an object as everywhere in the package
                 (loc3r.synth.grounding.video_token_objects: the object whose footprint holds the token's median
                 depth point); probes 2 and 3 label the tokens the same way.
2. linear probe - can each vision token's object colour (or "none") be read linearly from the model's states:
                 logistic regression on the LLM input (after the projector) and on the final states of the vision
                 tokens, fitted on train scenes, scored on test scenes, against the majority class and the same
                 probe on the token's mean pixel colour.
3. attention   - does the <Pos> token attend to its anchor's tokens and <Ori> to its target's (and to the anchor,
                 where the speaker stands, as a facing direction is relative to it): per LLM layer, the
                 attention mass on those tokens divided by their share of the vision tokens (1 = no preference),
                 for the head that prefers them most; the control is the same for an object of the room that the
                 situation does not name.
4. readout     - where the geometry is: ridge R^2 per LLM layer of each vision token's BEV position, the speaker's
                 position from <Pos>, the facing direction and the anchor's and target's positions from <Ori>.
5. map per frame - the layout head's own map, per frame of the video: the median distance from each vision token's
                 predicted BEV position to its depth-derived one, and the median predicted sigma (the BEV frame is
                 the first camera's: a later frame's tokens need where that frame's camera is, which the camera
                 token gives and a model without it must infer from the frames).

    python research/probe_learning.py --data DIR --checkpoint RUN [--scenes 40]

The numbers of probe 1 (visibility) in docs/LOG.md, recorded before the move to research/, and the token labels of
probes 2 and 3 then, were measured with this script's own pixel-coverage definition: a token showed an object when
at least 30% of its pixels had their depth-unprojected point in the object's box (COVERED = 0.3). The synth
definition replaced it so that the repository has one; expect different numbers.
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
from loc3r.evaluate.plots import token_colors
from loc3r.model.loc3r import Loc3R
from loc3r.model.processor import Collator, make_dataset
from loc3r.synth.grounding import read_scene, video_token_objects
from loc3r.train.checkpoint import load_model


def situation_objects(desc: dict) -> dict[str, tuple[int, int]]:
    """situation text -> (anchor id, target id) for the basic rooms' "next to a, facing b" situations (object ids
    of the synth json)."""
    out = {}
    for s in desc["situations"]:
        if set(s["objects"]) == {"a", "b"}:
            for d in [s, *s["alternatives"]]:
                out[d["text"]] = (s["objects"]["a"], s["objects"]["b"])
    return out


def scene_labels(data: Path, scene_id: str, cache) -> tuple[np.ndarray, dict[str, tuple[int, int]]]:
    """[T, n] index into scene.objects of the object each vision token of the scene's video (cache: its
    SceneCache) sees, -1 none (loc3r.synth.grounding.video_token_objects), and situation text -> (anchor, target)
    as indices into scene.objects."""
    scene = read_scene(data, scene_id)
    desc = json.loads((Path(data) / "synth" / f"{scene_id}.json").read_text())
    index = {o.id: i for i, o in enumerate(scene.objects)}
    situations = {text: (index[a], index[b]) for text, (a, b) in situation_objects(desc).items()}
    return video_token_objects(scene, cache), situations


def visibility(data: Path, split: str, config, scenes: int) -> dict:
    ds = make_dataset(config, data, split)
    seen_a, seen_b, tokens_a = [], [], []
    for scene_id in ds.scene_ids[:scenes]:
        labels, situations = scene_labels(data, scene_id, ds.scene(scene_id))
        for a, b in situations.values():
            seen_a.append((labels == a).any())
            seen_b.append((labels == b).any())
            tokens_a.append((labels == a).sum())
    return {"situations": len(seen_a), "anchor seen": float(np.mean(seen_a)), "target seen": float(np.mean(seen_b)),
            "median anchor tokens": float(np.median(tokens_a))}


@torch.no_grad()
def states(model: Loc3R, ds, scene_ids, output_attentions=False, hidden=False):
    """Per scene: one forward of its first 16 questions -> (labels [T, n], inputs [T, n, D], finals [T, n, D],
    per-question attentions, the batch, its samples, the situations' anchor/target indices into scene.objects,
    every layer's states)."""
    collate = Collator(model.tokenizer, model.config)
    for scene_id in scene_ids:
        idx = [i for i, r in enumerate(ds.records) if r.scene_id == scene_id][:16]
        samples = [ds[i] for i in idx]
        labels, situations = scene_labels(ds.data_root, scene_id, ds.scene(scene_id))
        batch = collate([s for s in samples])
        embeds = model.embed_inputs(batch)
        mask = batch.attention_mask
        out = model.vlm.model.language_model(inputs_embeds=embeds, attention_mask=mask,
                                             position_ids=(mask.cumsum(-1) - 1).clamp(min=0),
                                             output_attentions=output_attentions, output_hidden_states=hidden)
        yield (labels, model.vision_states(embeds, batch.input_ids)[0], model.vision_states(out.last_hidden_state,
               batch.input_ids)[0], out.attentions, batch, samples, situations, out.hidden_states)


def fit_probe(x_train, y_train, x_test, y_test, steps: int = 300) -> float:
    x_train, x_test = (torch.as_tensor(v, dtype=torch.float32) for v in (x_train, x_test))
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mu) / sd, (x_test - mu) / sd
    classes = int(max(y_train.max(), y_test.max())) + 1
    w = torch.zeros(x_train.shape[1], classes, requires_grad=True)
    b = torch.zeros(classes, requires_grad=True)
    opt = torch.optim.Adam([w, b], lr=0.05)
    yt = torch.as_tensor(y_train)
    for _ in range(steps):
        loss = torch.nn.functional.cross_entropy(x_train @ w + b, yt) + 1e-3 * (w ** 2).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return float(((x_test @ w + b).argmax(1).numpy() == y_test).mean())


def linear_probe(model, data: Path, config, scenes: int) -> dict:
    colours = sorted({o["color"] for p in (data / "synth").glob("*.json")
                      for o in json.loads(p.read_text())["objects"]})
    out, sets, rgb = {}, {}, {}
    for split in ("train", "test"):
        ds = make_dataset(config, data, split)
        xs_in, xs_out, ys = [], [], []
        for labels, inp, fin, _, _, samples, _, _ in states(model, ds, ds.scene_ids[:scenes]):
            rgb.setdefault(split, []).append(token_colors(samples[0].frames, config.frame_grid,
                                                          config.frame_grid_extent).reshape(-1, 3))
            xs_in.append(inp.reshape(-1, inp.shape[-1]).numpy())
            xs_out.append(fin.reshape(-1, fin.shape[-1]).numpy())
            ys.append(labels.reshape(-1))
        sets[split] = (np.concatenate(xs_in), np.concatenate(xs_out), ys)
    for split in ("train", "test"):
        ds = make_dataset(config, data, split)
        y = []
        for scene_id, lab in zip(ds.scene_ids[:scenes], sets[split][2]):
            colour_of = {i: colours.index(o.color) for i, o in enumerate(read_scene(data, scene_id).objects)}
            y.append(np.array([colour_of.get(int(v), len(colours)) for v in lab]))
        sets[split] = (*sets[split][:2], np.concatenate(y))
    (tri, tro, ytr), (tei, teo, yte) = sets["train"], sets["test"]
    majority = float((yte == np.bincount(ytr).argmax()).mean())
    out["majority class"] = majority
    out["token mean RGB (reference)"] = fit_probe(np.concatenate(rgb["train"]), ytr, np.concatenate(rgb["test"]), yte)
    out["LLM input (projector)"] = fit_probe(tri, ytr, tei, yte)
    out["final vision states"] = fit_probe(tro, ytr, teo, yte)
    out["tokens"] = len(yte)
    return out


def attention_probe(model, data: Path, config, scenes: int) -> dict:
    ds = make_dataset(config, data, "test")
    model.vlm.set_attn_implementation("eager")
    c = model.config
    ratios = {"Pos->anchor": [], "Ori->target": [], "Ori->anchor": [], "Pos->unnamed (control)": [],
              "Ori->unnamed (control)": []}
    for labels, _, _, attentions, batch, samples, objects, _ in states(model, ds, ds.scene_ids[:scenes], True):
        video_pos = (batch.input_ids[0] == c.video_token_id).nonzero()[:, 0]
        vision_pos = video_pos[torch.from_numpy(c.vision_token_slots())]  # [T, n]
        flat_labels = labels.reshape(-1)
        for q, s in enumerate(samples):
            if s.situation not in objects:
                continue
            a, b = objects[s.situation]
            others = [int(o) for o in np.unique(flat_labels) if o >= 0 and o not in (a, b)]
            other = others[q % len(others)] if others else -2
            for key, token, obj in (("Pos->anchor", "pos_index", a), ("Ori->target", "ori_index", b),
                                    ("Ori->anchor", "ori_index", a),
                                    ("Pos->unnamed (control)", "pos_index", other),
                                    ("Ori->unnamed (control)", "ori_index", other)):
                hit = flat_labels == obj
                if not hit.any():
                    continue
                share = hit.mean()
                row = []
                for layer in attentions:  # [B, heads, L, L]
                    a = layer[q, :, getattr(batch, token)[q], vision_pos.reshape(-1)]  # [heads, n_vision]
                    a = a / a.sum(-1, keepdim=True).clamp(min=1e-12)
                    row.append(float(a[:, torch.as_tensor(hit)].sum(-1).max()) / share)  # best head
                ratios[key].append(row)
    return {k: np.mean(v, 0).round(2).tolist() for k, v in ratios.items() if v}


def ridge_r2(x_train, y_train, x_test, y_test, alpha: float = 1.0) -> float:
    """Held-out R^2 (mean over the target's columns) of a ridge regression on standardised features."""
    mu, sd = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = ((x - mu) / sd for x in (x_train, x_test))
    x_train, x_test = (torch.cat([x, torch.ones(len(x), 1)], 1) for x in (x_train, x_test))
    w = torch.linalg.solve(x_train.T @ x_train + alpha * torch.eye(x_train.shape[1]), x_train.T @ y_train)
    residual = ((x_test @ w - y_test) ** 2).sum(0)
    return float((1 - residual / ((y_test - y_train.mean(0)) ** 2).sum(0)).mean())


@torch.no_grad()
def readout_probe(model, data: Path, config, scenes: int) -> dict:
    """Where in the LLM the geometry is: ridge R^2 (fitted on train scenes, scored on test scenes) of each vision
    token's BEV position (the layout target), the speaker's position from the <Pos> state, the facing direction
    (cos, sin of the yaw) from the <Ori> state, and the BEV positions of the anchor and the target from the <Ori>
    state, per layer's input (index 0: the LLM's input embeddings; the last: the final states)."""
    sets = {}
    for split, n in (("train", 4 * scenes), ("test", scenes)):
        ds = make_dataset(config, data, split)
        rows = collections.defaultdict(list)
        for _, _, _, _, batch, samples, objects, hidden in states(model, ds, ds.scene_ids[:n], hidden=True):
            hidden = torch.stack(hidden)  # [layers + 1, B, L, D]
            valid = batch.layout_valid[0].reshape(-1)
            vision = torch.stack([model.vision_states(h, batch.input_ids)[0] for h in hidden])  # [layers+1, T, n, D]
            rows["vision"].append(vision.flatten(1, 2)[:, valid])
            rows["layout"].append(batch.layout_xy[0].reshape(-1, 2)[valid])
            world_to_bev = ds.scene(samples[0].scene_id).world_to_bev
            centre = {i: geometry.world_to_bev_points(world_to_bev, o.center[None])[0, :2]
                      for i, o in enumerate(read_scene(data, samples[0].scene_id).objects)}
            for q, s in enumerate(samples):
                if not s.has_situation or s.situation not in objects:
                    continue
                a, b = (centre[i] for i in objects[s.situation])
                rows["pos"].append(hidden[:, q, batch.pos_index[q]])
                rows["ori"].append(hidden[:, q, batch.ori_index[q]])
                rows["position"].append(batch.position_xy[q])
                rows["yaw"].append(torch.stack([torch.cos(batch.yaw_rad[q]), torch.sin(batch.yaw_rad[q])]))
                rows["anchor"].append(torch.as_tensor(a, dtype=torch.float32))
                rows["target"].append(torch.as_tensor(b, dtype=torch.float32))
        sets[split] = {k: torch.cat(v, 1) if k == "vision" else torch.cat(v) if k == "layout"
                       else torch.stack(v, 1 if k in ("pos", "ori") else 0) for k, v in rows.items()}
    tr, te = sets["train"], sets["test"]
    out = {}
    for name, x, y in (("vision token -> its BEV xy", "vision", "layout"), ("<Pos> -> position", "pos", "position"),
                       ("<Ori> -> cos, sin yaw", "ori", "yaw"), ("<Ori> -> anchor xy", "ori", "anchor"),
                       ("<Ori> -> target xy", "ori", "target")):
        out[name] = [round(ridge_r2(tr[x][k], tr[y], te[x][k], te[y]), 2) for k in range(len(tr[x]))]
    return out


def map_per_frame(model, data: Path, config, scenes: int) -> dict:
    """Per frame index: the median error (m) of the layout head's BEV means over the valid vision tokens of the test
    scenes, and the median predicted sigma (m, the geometric mean of the two axes')."""
    ds = make_dataset(config, data, "test")
    errors, sigmas = collections.defaultdict(list), collections.defaultdict(list)
    with torch.no_grad():
        for _, _, finals, _, batch, _, _, _ in states(model, ds, ds.scene_ids[:scenes]):
            layout = model.layout_head(finals)  # [T, n, 2] x2
            valid = batch.layout_valid[0]
            error = (layout.mu - batch.layout_xy[0]).norm(dim=-1)
            sigma = layout.log_sigma.mean(-1).exp()
            for t in range(valid.shape[0]):
                errors[t].append(error[t][valid[t]])
                sigmas[t].append(sigma[t][valid[t]])
    return {f"frame {t + 1}": (round(float(torch.cat(errors[t]).median()), 2),
                               round(float(torch.cat(sigmas[t]).median()), 2)) for t in sorted(errors)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--checkpoint", type=Path, required=True)
    p.add_argument("--scenes", type=int, default=30)
    args = p.parse_args()
    model = load_model(args.checkpoint).eval()
    config = model.config
    print("1. visibility of the named objects in the model's frames (test split)")
    for k, v in visibility(args.data, "test", config, args.scenes).items():
        print(f"   {k:<28} {v:.3g}")
    print("2. linear probe of each vision token's object colour (accuracy on test scenes)")
    for k, v in linear_probe(model, args.data, config, args.scenes).items():
        print(f"   {k:<28} {v:.3g}")
    print("3. attention to the named object's tokens / its share of the vision tokens, per LLM layer (best head)")
    for k, v in attention_probe(model, args.data, config, args.scenes).items():
        print(f"   {k:<28} {v}")
    print("4. linear readout (ridge R^2 on test scenes) per LLM layer input, the last the final states")
    for k, v in readout_probe(model, args.data, config, args.scenes).items():
        print(f"   {k:<28} {v}")
    print("5. the layout head's map per frame (test split): median error of a token's BEV position, median sigma (m)")
    for k, (error, sigma) in map_per_frame(model, args.data, config, args.scenes).items():
        print(f"   {k:<28} {error:.2f}  {sigma:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
