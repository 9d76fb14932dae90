"""Recipe probes for the tiny model on basic synthetic rooms: does a change make the text read the video?

Trains the tiny Loc3R-VLM with the shared-prefix batches of `loc3r train` (8 videos x 8 questions a step) and
optional diagnostic variants, and prints every 25 steps the losses and `colour->category`: how often the LM,
after a colour word of the prompt ("the red ..."), predicts the category of the room's object of that colour, which
only the video tells (chance is about 1/5); every 100 steps it scores localization on 24 validation videos.

Variants (flags):
- --dense W     "seeing": the tied LM head on every vision token's final state predicts the colour and category
                words of the object the token shows (labels from depth and the synth boxes), weight W;
- --oracle      the same two words' embeddings are added onto each labelled vision token's LLM input (perfect
                seeing: what is left to learn is the LLM's use of it);
- --alltext     LM loss on every prompt token, not only the answers (so every "the red" is a retrieval example);
- --layout-from / --situation-from N   the step at which the layout / situation losses turn on;
- --kv-heads, --layers, --init          LLM key/value heads, depth and init std of the tiny preset.

    python benchmarks/recipe_probe.py --data DIR [--steps 600] [--oracle --alltext ...]

DIR is a `loc3r synth` data set (basic rooms; its train and val splits are used).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from transformers import get_cosine_schedule_with_warmup

from loc3r.constants import IGNORE_INDEX, ORI_TOKEN, POS_TOKEN
from loc3r.model.config import Loc3RConfig
from loc3r.model.loc3r import Loc3R
from loc3r.model.losses import circular_soft_argmax, gaussian_nll, kl_orientation, wrapped_gaussian_target
from loc3r.model.processor import Collator, make_dataset
from loc3r.synth.scene import BASIC_COLORS
from loc3r.train import micro_batch_indices, video_groups

sys.path.insert(0, str(Path(__file__).parent))
from probe_learning import token_objects  # noqa: E402


def word_labels(ds, tokenizer, config) -> dict[str, torch.Tensor]:
    """scene -> [T, n, 2] ids of the colour and category words of the object each vision token shows (-100: none)."""
    out = {}
    for scene_id in ds.scene_ids:
        labels, desc = token_objects(ds.data_root, scene_id, ds.scene(scene_id).frame_ids, config.frame_grid,
                                     config.frame_grid_extent)
        objects = {o["id"]: o for o in desc["objects"]}
        words = np.full(labels.shape + (2,), IGNORE_INDEX)
        for (t, k), oid in np.ndenumerate(labels):
            if oid >= 0:
                o = objects[int(oid)]
                words[t, k] = tokenizer.convert_tokens_to_ids([o["color"], o["category"]])
        out[scene_id] = torch.tensor(words)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--videos", type=int, default=8)
    p.add_argument("--questions", type=int, default=8)
    p.add_argument("--dense", type=float, default=0.0)
    p.add_argument("--oracle", action="store_true")
    p.add_argument("--alltext", action="store_true")
    p.add_argument("--layout-from", type=int, default=0)
    p.add_argument("--situation-from", type=int, default=100)
    p.add_argument("--kv-heads", type=int, default=2)
    p.add_argument("--layers", type=int, default=4)
    p.add_argument("--init", type=float, default=None, help="init std of the LLM (transformers' initializer_range)")
    p.add_argument("--seed", type=int, default=0)
    a = p.parse_args()
    torch.manual_seed(a.seed)

    config = Loc3RConfig.tiny()
    text = config.vlm["text_config"]
    text.update(num_key_value_heads=a.kv_heads, num_hidden_layers=a.layers, layer_types=["full_attention"] * a.layers)
    if a.init is not None:
        text["initializer_range"] = a.init
    model = Loc3R(config)
    tok = model.tokenizer
    train, val = make_dataset(config, a.data, "train"), make_dataset(config, a.data, "val")
    labels = {**word_labels(train, tok, config), **word_labels(val, tok, config)}
    current = {}
    if a.oracle:  # perfect seeing: the words' embeddings added onto the labelled vision tokens
        video_block = model.video_block

        def with_oracle(batch):
            v = video_block(batch)  # [B, Lv, D]
            w = current["labels"]  # [B, T, n, 2]
            B, T, n = w.shape[:3]
            e = model.vlm.get_input_embeddings().weight
            add = torch.where((w >= 0)[..., None], e[w.clamp(min=0)], 0).sum(-2)  # [B, T, n, D]
            frames = v[:, :T * (n + 1)].reshape(B, T, n + 1, -1)
            frames = torch.cat([frames[:, :, :1], frames[:, :, 1:] + add], 2)
            return torch.cat([frames.flatten(1, 2), v[:, T * (n + 1):]], 1)

        model.video_block = with_oracle

    collate = Collator(tok, config)
    units = video_groups([r.scene_id for r in train.records], a.questions, a.seed)
    val_units = video_groups([r.scene_id for r in val.records], 16, 0)[:24]
    colours = torch.tensor(tok.convert_tokens_to_ids(list(BASIC_COLORS)))
    special = torch.tensor(tok.convert_tokens_to_ids([POS_TOKEN, ORI_TOKEN]))
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=a.lr)
    scheduler = get_cosine_schedule_with_warmup(optimizer, 30, a.steps)
    c = config

    def losses(batch, step):
        current["labels"] = torch.stack([labels[sid] for sid in batch.scene_ids])
        video_hidden, text_hidden = model.shared_prefix_pass(batch)
        den = {k: v.clamp(min=1) for k, v in model.loss_counts(batch).items()}
        targets = batch.labels[:, 1:]
        supervised = targets != IGNORE_INDEX
        lm = F.cross_entropy(model.vlm.lm_head(text_hidden[:, :-1][supervised]).float(), targets[supervised],
                             reduction="sum") / supervised.sum().clamp(min=1)
        vision = model.vision_states(video_hidden, batch.input_ids)
        layout = gaussian_nll(*model.layout_head(vision), batch.layout_xy, batch.layout_valid, c.sigma_floor,
                              den["layout"])
        position, orientation = model.situation_heads(text_hidden, batch)
        situated = batch.has_situation
        pos = gaussian_nll(*position, batch.position_xy, situated, c.sigma_floor, den["position"])
        ori = kl_orientation(orientation, wrapped_gaussian_target(batch.yaw_rad, c.orientation_bins,
                                                                  c.orientation_sigma_rad), situated,
                             den["orientation"])
        w = current["labels"]
        seen = w[..., 0] >= 0
        dense = torch.zeros(())
        if seen.any():
            dense = -F.log_softmax(model.vlm.lm_head(vision[seen]).float(), -1).gather(1, w[seen]).mean()
        ids = batch.suffix_ids
        after_colour = torch.isin(ids[:, :-1], colours) & (batch.suffix_mask[:, 1:] == 1)
        with torch.no_grad():
            hit = model.vlm.lm_head(text_hidden[:, :-1][after_colour]).argmax(-1) == ids[:, 1:][after_colour]
        total = (lm + a.dense * dense + (layout if step >= a.layout_from else 0)
                 + (pos + c.lambda_orientation * ori if step >= a.situation_from else 0))
        return total, [lm, dense, layout, pos, ori, hit.float().mean() if hit.numel() else torch.zeros(())], \
            position, orientation

    def batch_of(groups):
        batch = collate.grouped(groups)
        batch.scene_ids = [g[0].scene_id for g in groups]
        if a.alltext:  # LM loss on every prompt token after the first (not <Pos> / <Ori>)
            prompt = torch.where((batch.suffix_mask == 1) & ~torch.isin(batch.suffix_ids, special),
                                 batch.suffix_ids, IGNORE_INDEX)
            prompt[:, 0] = IGNORE_INDEX
            batch.labels = torch.where(batch.labels != IGNORE_INDEX, batch.labels, prompt)
        return batch

    @torch.no_grad()
    def validate() -> str:
        model.eval()
        pos_err, yaw_err = [], []
        for u in val_units:
            batch = batch_of([[val[i] for i in u]])
            _, _, position, orientation = losses(batch, a.steps)
            s = batch.has_situation
            pos_err += (position.mu - batch.position_xy).norm(dim=-1)[s].tolist()
            yaw = circular_soft_argmax(torch.softmax(orientation, -1))
            yaw_err += (torch.remainder(yaw - batch.yaw_rad + math.pi, 2 * math.pi) - math.pi).abs()[s].tolist()
        model.train()
        pe, ye = np.array(pos_err), np.degrees(yaw_err)
        return f"val Acc@0.5m {100 * (pe < .5).mean():.1f} Acc@1.0m {100 * (pe < 1).mean():.1f} " \
               f"Acc@15 {100 * (ye < 15).mean():.1f} Acc@30 {100 * (ye < 30).mean():.1f}"

    names = ("lm", "dense", "layout", "position", "orientation", "colour->category")
    history, position, t0 = [], 0, time.perf_counter()
    for step in range(a.steps):
        idx = micro_batch_indices(position, len(units), a.seed, a.videos, 0, 1)
        position += a.videos
        loss, parts, _, _ = losses(batch_of([[train[i] for i in units[u]] for u in idx]), step)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.trainable_parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad()
        history.append([float(x.detach()) for x in parts])
        if (step + 1) % 25 == 0:
            mean = np.mean(history, 0)
            history = []
            line = f"{step + 1:5d} {time.perf_counter() - t0:5.0f}s " + " ".join(
                f"{n} {v:.3f}" for n, v in zip(names, mean))
            print(line + (" | " + validate() if (step + 1) % 100 == 0 else ""), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
