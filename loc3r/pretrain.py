"""`loc3r pretrain-base`: the tiny preset's pretrained base, as the paper starts Loc3R from a pretrained VLM.

LLaVA-Video sees and names objects before Loc3R fine-tunes it; the tiny model's random SigLIP + Qwen2 does not,
and trained from scratch on Loc3R's objectives it never learns to find the named object in the video (README,
"Where the tiny model stands"). Its base is pretrained on synthetic *training* rooms with frame-space supervision
only (loc3r/synth/grounding.py):
- every vision token that sees an object reads as its colour and category words (at the LLM's input and output,
  through the tied word embeddings);
- many questions answered from the video alone ("What is the red object?" -> "bed") with the LM loss, each after a
  situation text naming two of the room's objects ("I am standing next to the red bed, facing the blue sofa.");
  with --copy-questions also choices answered by copying a name from the prompt ("Which is in the room, the red
  bed or the red sofa?" -> "red bed") and questions about what the situation text says ("Which object am I
  facing?" -> "sofa"; read, with no pose), and in one head (layer 3, head 3) the state predicting an answer word
  attends to where that word stands in the prompt (Loc3R.copy_attention_loss: in-context recall supervised
  densely, as benchmarks/toy_recall.py found a tiny LLM needs); --embed-scale S makes the text embeddings enter the
  LLM S x larger (Loc3RConfig.text_embed_scale), so that a prompt word keeps its identity through the layers;
- one attention head (Loc3R.grounding_attention_loss) of every word naming an object's colour or category attends
  to the vision tokens that see it, and so do the <Pos> / <Ori> tokens to the objects their situation names; in a
  head of the next layer <Ori> attends to the object the speaker stands by (a facing direction is relative to where
  one stands: from the two, the Loc3R stage can compose the direction).
No BEV or world-coordinate target and no speaker pose: the layout and situation objectives stay what the paper's
ablation isolates. No camera tokens (prior none): the base never sees a pose. `loc3r train` starts tiny runs from
it (`--init BASE`; the shipped one by default). `pretrain-base --init BASE` continues a base's pretraining with a
fresh optimizer and schedule (the shipped base: step 1000 of a run from random weights, then step 400 of one
continued with --copy-questions --embed-scale 32; README and loc3r/assets/tiny_base/provenance.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loc3r.command import add_dataclass_arguments, dataclass_from_args
from loc3r.constants import IGNORE_INDEX, NO_SITUATION
from loc3r.data.benchmarks import QARecord
from loc3r.data.sample import Sample
from loc3r.data.sqa3d import read_sqa3d
from loc3r.errors import Loc3rError
from loc3r.model.processor import make_dataset
from loc3r.synth.grounding import (READING_QUESTIONS, grounding_questions, grounding_situation, reading_questions,
                                   token_objects)
from loc3r.synth.language import tokenize
from loc3r.synth.scene import Scene

WORDS_PER_TOKEN = 3  # a colour and a category of up to two words ("trash can")
READINGS_PER_ROOM = 2 * len(READING_QUESTIONS)  # questions about what a situation text says, per room
# --copy-questions: the head whose attention is supervised to copy (Loc3R.copy_attention_loss): the last layer, a
# head of the key/value head the grounding and anchor heads do not share (tiny: 6 heads, 2 key/value heads)
COPY_LAYER, COPY_HEAD = -1, 3


@dataclass
class PretrainConfig:
    """The settings of `loc3r pretrain-base` (its flags are generated from these fields and their comments)."""

    data: Path  # synthetic rooms (`loc3r synth`, basic): their train split is the pretraining data
    out: Path  # the base's run directory (checkpoints/step_*/ is the base `train --init` takes)
    steps: int = 3000  # optimizer steps
    batch_size: int = 8  # videos per step
    questions_per_video: int = 16  # grounding questions of a video sharing its computed prefix
    lr: float = 2e-3  # peak learning rate (warm-up, cosine decay)
    seed: int = 0  # model initialisation, question sampling and data order
    # continue from this base (its weights and tokenizer; a fresh optimizer and schedule, its vision tower frozen
    # and its grounding heads' queries / keys kept, as `loc3r train --init` does); default: random weights
    init: Path | None = None
    # add choices between two names ("Which is in the room, the red bed or the red sofa?") and questions about the
    # situation text ("Which object am I facing?"), and supervise one head to copy the answer's words from the
    # prompt (Loc3R.copy_attention_loss)
    copy_questions: bool = False
    copy_weight: float = 1.0  # with --copy-questions: the weight of the copy head's two losses (lambda_copy)
    # the text embeddings enter the LLM multiplied by this (Loc3RConfig.text_embed_scale); default: the --init
    # base's, 1 from random weights
    embed_scale: float | None = None
    cache_dir: Path | None = None  # per-scene caches (default <data>/cache)
    save_every: int = 1000  # checkpoint every N steps (and at the end)
    log_every: int = 20  # steps between log.jsonl records
    resume: bool = False  # continue from the newest checkpoint in --out
    quiet: bool = False  # no progress bar

    def __post_init__(self):
        if self.embed_scale is not None and not self.embed_scale > 0:
            raise Loc3rError(f"--embed-scale must be > 0, got {self.embed_scale}")
        if not self.copy_weight >= 0:
            raise Loc3rError(f"--copy-weight must be >= 0, got {self.copy_weight}")
        if self.copy_weight != 1.0 and not self.copy_questions:
            raise Loc3rError("--copy-weight weighs the copy head's losses: it needs --copy-questions")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(p, PretrainConfig)


def grounding_records(data: Path, split: str, seed: int, copy_questions: bool = False
                      ) -> tuple[list[QARecord], dict[str, Scene]]:
    """The pretraining questions of a split's synthetic rooms (its SQA3D file names the scenes; each room's truth is
    synth/<scene>.json), and the rooms; `copy_questions`: with the choices between two names and the questions
    about the situation text."""
    scene_ids = sorted({r.scene_id for r in read_sqa3d(data, split)})
    records, scenes = [], {}
    for k, scene_id in enumerate(scene_ids):
        path = data / "synth" / f"{scene_id}.json"
        try:
            scene = Scene.from_json(json.loads(path.read_text()))
        except FileNotFoundError:
            raise Loc3rError(f"{path}: no such file (pretrain-base needs rooms written by `loc3r synth`)") from None
        except (json.JSONDecodeError, KeyError, TypeError) as e:
            raise Loc3rError(f"{path}: not a synthetic room description ({e})") from None
        try:
            questions = grounding_questions(scene, np.random.default_rng([seed, k]), choices=copy_questions)
        except ValueError as e:
            raise Loc3rError(f"{path}: {e}") from None
        scenes[scene_id] = scene
        rng = np.random.default_rng([seed, k, 1])
        for i, (q, a, kind) in enumerate(questions):
            text, near, faced = grounding_situation(scene, rng)
            records.append(QARecord("grounding", f"{scene_id}_g{i}", scene_id, NO_SITUATION, q, [a], kind,
                                    extra={"situation": text, "situation_objects": (near, faced)}))
        for i in range(READINGS_PER_ROOM if copy_questions else 0):
            text, near, faced = grounding_situation(scene, rng)
            q, a, kind = reading_questions(scene, near, faced)[i % len(READING_QUESTIONS)]
            records.append(QARecord("grounding", f"{scene_id}_r{i}", scene_id, NO_SITUATION, q, [a], kind,
                                    extra={"situation": text, "situation_objects": (near, faced)}))
    return records, scenes


class GroundingDataset:
    """The grounding questions of the training rooms, each Sample with `token_words`: the word ids of the colour and
    category of the object each vision token sees (-100 where it sees none). Wraps SituatedQADataset."""

    def __init__(self, questions, scenes: dict[str, Scene]):
        self.questions, self.scenes = questions, scenes
        self.word_ids = None  # {word: id}, set by bind(tokenizer) before samples are read
        self._words: dict[str, np.ndarray] = {}

    def bind(self, tokenizer) -> None:
        self.word_ids = tokenizer.get_vocab()
        self._words.clear()

    def __len__(self) -> int:
        return len(self.questions)

    def __getattr__(self, name):  # records, video_keys, scene_ids, prepare, scene ...
        return getattr(self.questions, name)

    def token_words(self, scene_id: str) -> np.ndarray:
        """[T, G, WORDS_PER_TOKEN] word ids of what each vision token of the scene's video sees."""
        if scene_id not in self._words:
            if self.word_ids is None:
                raise RuntimeError("GroundingDataset.bind(tokenizer) first")
            cache, scene = self.questions.scene(scene_id), self.scenes[scene_id]
            bev_to_world = np.linalg.inv(cache.world_to_bev)
            xy = cache.layout_xy.astype(np.float64)
            world = xy @ bev_to_world[:2, :2].T + bev_to_world[:2, 3]  # the ground plane's rotation and shift
            seen = token_objects(scene, world, cache.layout_valid)  # [T, G]
            table = np.full((len(scene.objects) + 1, WORDS_PER_TOKEN), IGNORE_INDEX, np.int64)  # row -1: nothing seen
            for i, o in enumerate(scene.objects):
                ids = [self.word_ids[w] for w in tokenize(f"{o.color} {o.category}")]
                table[i, :len(ids)] = ids
            self._words[scene_id] = table[seen]
        return self._words[scene_id]

    def __getitem__(self, index: int) -> Sample:
        """The question's sample with its situation text (no pose: has_situation stays False), the words of what
        each vision token sees, and the colours of the objects the situation names (what <Pos> / <Ori> ground to)."""
        sample, record = self.questions[index], self.questions.records[index]
        token_words = self.token_words(sample.scene_id)  # checks that a tokenizer is bound
        objects = self.scenes[sample.scene_id].objects
        words = np.array([self.word_ids[objects[i].color] for i in record.extra["situation_objects"]], np.int64)
        return dataclasses.replace(sample, situation=record.extra["situation"], token_words=token_words,
                                   situation_words=words)


def run(args: argparse.Namespace) -> int:
    args = dataclass_from_args(PretrainConfig, args)
    from loc3r import train

    run = train.TrainConfig(data=args.data, out=args.out, steps=args.steps, batch_size=args.batch_size,
                            questions_per_video=args.questions_per_video, lr=args.lr, seed=args.seed,
                            init=train.SCRATCH if args.init is None else str(args.init),
                            init_lr=None if args.init is None else args.lr,  # a base's weights at the full rate
                            # a continued pretraining keeps where the base's heads look, keys too (the shipped base)
                            keep_heads=None if args.init is None else "query_key",
                            prior="none", no_layout=True, no_situation=True,
                            cache_dir=args.cache_dir, save_every=args.save_every, log_every=args.log_every,
                            resume=args.resume, quiet=args.quiet)
    records, scenes = grounding_records(args.data, "train", args.seed, args.copy_questions)
    dataset = GroundingDataset(make_dataset(train.model_config(run), args.data, "train", args.cache_dir, records),
                               scenes)
    settings = ({"copy_layer": COPY_LAYER, "copy_head": COPY_HEAD, "lambda_copy": args.copy_weight}
                if args.copy_questions else {})
    if args.embed_scale is not None:
        settings["text_embed_scale"] = args.embed_scale
    final = train.train(run, dataset=dataset, model_settings=settings)
    print(f"base: {final} (loc3r train --init {final})")
    return 0
