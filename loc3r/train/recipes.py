"""Named training recipes: the `loc3r train` settings that have been measured to work, one object each.

`loc3r train --recipe NAME` applies one and flags override it; without --recipe a run takes its preset's recipe
(DEFAULT_RECIPE), so `loc3r train --preset tiny` runs `tiny_demo`. A recipe holds how to train (steps, batch,
schedule, data order, parallelism); the model and its losses are the preset's (Loc3RConfig.tiny / llava_video_7b),
and a flag such as --orientation-sigma or --nll-beta overrides them. The run writes the resolved settings to
RUN/settings.json. Measurements behind each recipe: docs/LOG.md.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from loc3r.model.config import Loc3RConfig
from loc3r.model.losses import yaw_blind_kl

# tiny_demo's loop starts join once the orientation loss (mean of the last 20 steps) is below this fraction of a
# yaw-blind head's KL: 0.6 at a 30 deg target, where the fraction was chosen; 0.22 at the tiny preset's 60 deg
LOOP_JOIN_FRACTION = 0.563


def loop_join_threshold(sigma_rad: float) -> float:
    """`--loop-starts-when` for an orientation target of this sigma: LOOP_JOIN_FRACTION of its yaw-blind KL
    (losses.yaw_blind_kl), to 4 decimals."""
    return round(LOOP_JOIN_FRACTION * yaw_blind_kl(sigma_rad, Loc3RConfig.orientation_bins), 4)


@dataclass(frozen=True)
class Recipe:
    name: str
    preset: str  # the model preset it trains
    summary: str  # one line for `loc3r train --help` and the README
    settings: dict  # TrainConfig field -> value (tests check every name and value against TrainConfig)
    # `loc3r synth` settings of the synthetic training rooms it was measured on, beyond the demo's (loc3r demo
    # --recipe NAME generates its rooms with them)
    rooms: dict = dataclasses.field(default_factory=dict)


TINY_DEMO = Recipe(
    name="tiny_demo", preset="tiny",
    summary="localization: the tiny model from its shipped base on the plain synthetic rooms, 900 steps on 2 CPU "
            "cores (what `loc3r train --preset tiny` runs)",
    # From the shipped base (its grounding heads' queries kept, its weights at 0.3 x the rate): 900 steps of 8
    # videos x 8 questions on their shared prefix; the peak rate held after a 3% warm-up, a cosine decay over the
    # last 30% (wsd); on the scans' own videos until the orientation has taken off, then every question also on the
    # scan's loop begun a third and two thirds of the way round, each in its own BEV frame (the synthetic walks are
    # closed loops; a real scan is not: --loop-starts 1). With the preset's beta-NLL 0.5 and 60 deg target, over
    # five training seeds: held-out Acc@1.0m 73.5-79.8, Acc@30deg 88.8-91.9 (docs/LOG.md).
    settings=dict(steps=900, batch_size=8, questions_per_video=8, grad_accum=1, lr=2e-3, warmup=0.03,
                  schedule="wsd", decay=0.3, loop_starts=3,
                  loop_starts_when=loop_join_threshold(Loc3RConfig.tiny().orientation_sigma_rad), parallel="ddp",
                  activation_checkpointing=False),
)

TINY_SITUATED = Recipe(
    name="tiny_situated", preset="tiny",
    summary="the demo's model: tiny_demo with two LLM layers added at the orientation's take-off and the staged "
            "relation readout, on rooms with more relation questions (loc3r synth --relations 6): answers from the "
            "located viewpoint; 900 steps, the rate decayed over the last 15%; 7-10 minutes on 2 CPU cores",
    # tiny_demo, and: two LLM layers added after the base's (starting as the identity, at the full rate) that run
    # from the loop starts' join on (until then the LLM is the base's 4 layers, ~1.5x faster a step); the relation
    # questions drawn from the join on; from then, training only, the relation heads in layer 4 of 6 and the staged
    # readout (a relation question's answer state gives the speaker's pose and the object's place at layer 4's
    # output, the object as the speaker sees it at the final state; docs/tiny_base.md). The join comes at step
    # ~300-400 and the readout's transition ~200-250 steps after it, at the peak rate (docs/LOG.md, "the added layers
    # at the join"), so the final decay is tiny_demo's half (the last 15% of the steps): with bf16 products, over
    # three seeds, distance 54.5 / 53.5 / 52.9 against 51.9 / 51.3 / 46.5 with the last 30%, the localization the
    # same (docs/LOG.md, 2026-12-08). On data without synthetic ground truth only the pose readout.
    settings={**TINY_DEMO.settings, **dict(steps=900, decay=0.15, added_layers=2, added_layers_join=True,
                                           relations_join=True, relation_weight=1.0, relation_layer=-2,
                                           relation_readout=True, relation_egocentric=True,
                                           relation_readout_layer=-2)},
    rooms=dict(relations=6),
)

TINY_SITUATED_LONG = Recipe(
    name="tiny_situated_long", preset="tiny",
    summary="tiny_situated for 1,200 steps instead of 900 (its decay over the last 30%): sharper positions and "
            "distances from the located viewpoint; 12-14 minutes of training on 2 CPU cores in fp32 (loc3r demo "
            "--recipe tiny_situated_long)",
    # The same settings and rooms as tiny_situated, a third more steps (the join at steps 285-430, so about half
    # again as many with the added layers and the relation readout) and the final decay over the last 30%, the
    # decay it was measured with (tiny_situated's was 30% too until 2026-12-08). The distance answers are what the
    # longer run buys: they grow with the training's compute (seed 2: 43.3 at 900 steps, 51.9 at 1,200 steps of 6
    # videos, 57.2 at 1,200 of 8), and so do Acc@0.5m and the model's own map (docs/LOG.md, "the distance answers
    # grow with the compute").
    settings={**TINY_SITUATED.settings, "steps": 1200, "decay": 0.3},
    rooms=TINY_SITUATED.rooms,
)

LLAVA_VIDEO_7B_PAPER = Recipe(
    name="llava_video_7b_paper", preset="llava_video_7b",
    summary="the paper's run: LLaVA-Video-7B, 32 frames at 384 px, AdamW lr 1e-5 cosine, global batch 64, one epoch",
    # Sec. 4.1 of the paper: one epoch, AdamW, cosine schedule, peak lr 1e-5, global batch 64 (--global-batch: the
    # gradient accumulation follows from the world size); SigLIP and CUT3R frozen, the cut3r prior, 32 frames at
    # 384 px, the paper's loss weights and plain NLL (the preset). FSDP2 with activation checkpointing, bf16; one
    # question per sequence (a shared prefix does not combine with activation checkpointing).
    settings=dict(epochs=1.0, global_batch=64, batch_size=1, questions_per_video=1, lr=1e-5, warmup=0.03,
                  schedule="cosine", loop_starts=1, loop_starts_when=0.0, parallel="fsdp",
                  activation_checkpointing=True),
)

RECIPES = {r.name: r for r in (TINY_DEMO, TINY_SITUATED, TINY_SITUATED_LONG, LLAVA_VIDEO_7B_PAPER)}
DEFAULT_RECIPE = {"tiny": TINY_DEMO.name, "llava_video_7b": LLAVA_VIDEO_7B_PAPER.name}
