"""`loc3r pretrain-base`: the tiny preset's pretrained base, as the paper starts Loc3R from a pretrained VLM.

LLaVA-Video sees and names objects before Loc3R fine-tunes it; the tiny model's random SigLIP + Qwen2 does not,
and trained from scratch on Loc3R's objectives it never learns to find the named object in the video (README,
"Where the tiny model stands"). Its base is pretrained on synthetic *training* rooms with frame-space supervision
only (loc3r/synth/grounding.py, loc3r/tiny/):
- every vision token that sees an object reads as its colour and category words (at the LLM's input and output,
  through the tied word embeddings);
- many questions answered from the video alone ("What is the red object?" -> "bed") with the LM loss, each after a
  situation text naming two of the room's objects ("I am standing next to the red bed, facing the blue sofa.");
  with --copy-questions also choices answered by copying a name from the prompt ("Which is in the room, the red
  bed or the red sofa?" -> "red bed") and questions about what the situation text says ("Which object am I
  facing?" -> "sofa"; read, with no pose), and in one head (layer 3, head 3) the state predicting an answer word
  attends to where that word stands in the prompt (tiny.losses.copy_attention_loss: in-context recall supervised
  densely, as research/toy_recall.py found a tiny LLM needs); --embed-scale S makes the text embeddings enter the
  LLM S x larger (TinyBaseConfig.text_embed_scale), so that a prompt word keeps its identity through the layers;
- one attention head (tiny.losses.grounding_attention_loss) of every word naming an object's colour or category attends
  to the vision tokens that see it, and so do the <Pos> / <Ori> tokens to the objects their situation names; in a
  head of the next layer <Ori> attends to the object the speaker stands by (a facing direction is relative to where
  one stands: from the two, the Loc3R stage can compose the direction).
No BEV or world-coordinate target and no speaker pose: the layout and situation objectives stay what the paper's
ablation isolates. No camera tokens (prior none): the base never sees a pose. `loc3r train` starts tiny runs from
it (`--init BASE`; the shipped one by default). `pretrain-base --init BASE` continues a base's pretraining with a
fresh optimizer and schedule (the shipped base: step 1000 of a run from random weights, then step 400 of one
continued with --copy-questions --embed-scale 32; docs/tiny_base.md and loc3r/assets/tiny_base/provenance.json).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from loc3r.command import add_dataclass_arguments, dataclass_from_args
from loc3r.errors import Loc3rError
from loc3r.model.processor import make_dataset
from loc3r.tiny.grounding_data import GroundingDataset, grounding_records
from loc3r.train.config import SCRATCH, RunSettings, TrainConfig, model_config
from loc3r.train.loop import train

# --copy-questions: the head whose attention is supervised to copy (tiny.losses.copy_attention_loss): the last layer,
# a head of the key/value head the grounding and anchor heads do not share (tiny: 6 heads, 2 key/value heads)
COPY_LAYER, COPY_HEAD = -1, 3


@dataclass
class PretrainConfig(RunSettings):
    """The settings of `loc3r pretrain-base` (its flags are generated from these fields and their comments)."""

    data: list[str]  # synthetic rooms (`loc3r synth`, basic): their train split is the pretraining data
    out: Path  # the base's run directory (checkpoints/step_*/ is the base `train --init` takes)
    steps: int = 3000  # optimizer steps (warm-up, cosine decay)
    batch_size: int = 8  # videos per step
    questions_per_video: int = 16  # grounding questions of a video sharing its computed prefix
    lr: float = 2e-3  # peak learning rate
    save_every: int = 1000  # checkpoint every N steps (and at the end)
    log_every: int = 20  # steps between log.jsonl records
    # continue from this base (its weights and tokenizer; a fresh optimizer and schedule, its vision tower frozen
    # and its grounding heads' queries and keys kept); default: random weights
    init: Path | None = None
    # add choices between two names ("Which is in the room, the red bed or the red sofa?") and questions about the
    # situation text ("Which object am I facing?"), and supervise one head to copy the answer's words from the
    # prompt (tiny.losses.copy_attention_loss)
    copy_questions: bool = False
    copy_weight: float = 1.0  # with --copy-questions: the weight of the copy head's two losses (lambda_copy)
    # the text embeddings enter the LLM multiplied by this (TinyBaseConfig.text_embed_scale); default: the --init
    # base's, 1 from random weights
    embed_scale: float | None = None
    # the layer of the grounding head (and, with --anchor-layer, of the anchor head), counted from the end when
    # negative (TinyBaseConfig.grounding_layer / anchor_layer); default: the --init base's, -2 and -1 from random
    # weights. Earlier heads leave the layers after them to what the Loc3R stage composes from their results
    grounding_layer: int | None = None
    anchor_layer: int | None = None
    # the LLM's matrix products (train --autocast): auto is bf16 on a CPU with AMX tiles; the shipped base was
    # pretrained in fp32 (off)
    autocast: str = "auto"

    CHOICES: ClassVar[dict] = {"autocast": TrainConfig.CHOICES["autocast"]}

    def __post_init__(self):
        super().__post_init__()
        if len(self.data) != 1:
            raise Loc3rError(f"--data: pretrain-base takes one directory of synthetic rooms, got {len(self.data)}")
        if self.embed_scale is not None and not self.embed_scale > 0:
            raise Loc3rError(f"--embed-scale must be > 0, got {self.embed_scale}")
        if not self.copy_weight >= 0:
            raise Loc3rError(f"--copy-weight must be >= 0, got {self.copy_weight}")
        if self.copy_weight != 1.0 and not self.copy_questions:
            raise Loc3rError("--copy-weight weighs the copy head's losses: it needs --copy-questions")

    def training(self) -> TrainConfig:
        """The training run it is: prior none, no layout or situation loss, the cosine schedule, one loop start; a
        base's weights at the full rate."""
        shared = {f: getattr(self, f) for f in RunSettings.__dataclass_fields__}
        return TrainConfig(**shared, recipe="tiny_demo", init=SCRATCH if self.init is None else str(self.init),
                           init_lr=None if self.init is None else self.lr, prior="none", no_layout=True,
                           no_situation=True, schedule="cosine", loop_starts=1, loop_starts_when=0.0,
                           autocast=self.autocast)

    def base_settings(self) -> dict:
        """The TinyBaseConfig fields this pretraining sets (on top of an --init base's)."""
        settings = ({"copy_layer": COPY_LAYER, "copy_head": COPY_HEAD, "lambda_copy": self.copy_weight}
                    if self.copy_questions else {})
        if self.embed_scale is not None:
            settings["text_embed_scale"] = self.embed_scale
        for name in ("grounding_layer", "anchor_layer"):
            if getattr(self, name) is not None:
                settings[name] = getattr(self, name)
        return settings


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(p, PretrainConfig)


def run(args: argparse.Namespace) -> int:
    args = dataclass_from_args(PretrainConfig, args)
    run = args.training()
    data = Path(args.data[0])
    records, scenes = grounding_records(data, "train", args.seed, args.copy_questions)
    dataset = GroundingDataset(make_dataset(model_config(run), data, "train", args.cache_dir, records), scenes)
    # a continued pretraining keeps where the base's heads look, keys too (as the shipped base was made)
    final = train(run, dataset=dataset, base_settings=args.base_settings(), keep_keys=args.init is not None)
    print(f"base: {final} (loc3r train --init {final})")
    return 0
