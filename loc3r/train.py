"""`loc3r train` / `torchrun --nproc_per_node N -m loc3r.train ...`: the training loop.

One code path for one process and for torchrun (DDP, or FSDP2 for the 7B: loc3r.parallel does the wrapping).
AdamW on the trainable parameters (frozen parts per the config), linear warm-up then cosine decay (transformers'
get_cosine_schedule_with_warmup; or with --schedule wsd the peak rate held until a final cosine decay,
get_wsd_schedule), gradient clipping, gradient accumulation. Choices that make runs reproducible and resumable:
- The data order is a pure function of (seed, sample position): epoch e uses permutation(seed + e) of the
  training set, and an optimizer step consumes `batch_size * world_size * grad_accum` consecutive positions, rank r
  taking the r-th slice of each micro-batch. A resumed run continues at the saved position, and one process with
  batch 2B sees exactly the samples of two processes with batch B.
- Every loss is normalised by its count over the whole optimizer step (all micro-batches, all ranks), so
  gradient accumulation and data parallelism give the gradient of one big batch.
- Checkpoints (model + optimizer + scheduler + RNG + data position) are written atomically every
  `--save-every` steps and at the end; `--resume` continues from the newest one.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.distributed as dist
from transformers import get_cosine_schedule_with_warmup, get_wsd_schedule

from loc3r import parallel
from loc3r.assets import TINY_BASE
from loc3r.checkpoint import (LORA_STATE, latest_checkpoint, load_lora_run, load_trainer_state, prune_checkpoints,
                              save_checkpoint)
from loc3r.command import add_dataclass_arguments, dataclass_from_args
from loc3r.errors import Loc3rError
from loc3r.io import atomic_path, write_json
from loc3r.model.config import PRIORS, Loc3RConfig
from loc3r.model.loc3r import Loc3R
from loc3r.model.processor import Batch, Collator, MixtureDataset, Source, make_training_set
from loc3r.model.tokenizer import build_tiny_tokenizer, load_tokenizer
from loc3r.parallel import print0
from loc3r.priors.cut3r import CUT3R_INPUTS

SCRATCH = "scratch"  # --init value: no base
KEEP_HEADS = ("query_key", "query", "none")  # --keep-heads
JOIN_WINDOW = 20  # --loop-starts-when: steps of orientation loss averaged

# ---------------------------------------------------------------------------------------------------------
# Settings
# ---------------------------------------------------------------------------------------------------------


@dataclass
class TrainConfig:
    """The settings of one training run; `loc3r train`'s flags are generated from these fields and their comments
    (loc3r.command.add_dataclass_arguments). None: the preset's default."""

    data: list[str]  # data: DIR (SQA3D), or name=DIR[:fraction] of sqa3d, scanqa, msqa, vsibench; repeat to mix
    out: Path  # run directory (checkpoints, log.jsonl)
    preset: str = "tiny"  # tiny | llava_video_7b
    base: Path | None = None  # local LLaVA-Video-7B-Qwen2 directory (transformers format), for the 7B
    # tiny: the pretrained base to start from (`loc3r pretrain-base`: its weights and tokenizer); default: the base
    # shipped in loc3r/assets/tiny_base; "scratch": random weights and a tokenizer of the training data's words
    init: str | None = None
    init_lr: float | None = None  # peak lr of a base's weights (default 0.3 x --lr; camera projector, heads: --lr)
    steps: int = 1000  # optimizer steps
    batch_size: int = 8  # videos per process and micro-batch
    questions_per_video: int | None = None  # questions of a video sharing its computed prefix (tiny 8; 7B 1)
    grad_accum: int = 1  # micro-batches per optimizer step
    lr: float | None = None  # peak learning rate (tiny 2e-3; 7B 1e-5, the paper's)
    warmup: float = 0.03  # warm-up steps, or a fraction of --steps when < 1
    # cosine: linear warm-up, cosine decay to 0 over the rest; wsd: linear warm-up, the peak rate held, then a cosine
    # decay to 0 over the last --decay steps (warmup-stable-decay)
    schedule: str = "cosine"
    decay: float = 0.3  # --schedule wsd: steps of the final decay, or a fraction of --steps when < 1
    weight_decay: float = 0.0  # AdamW weight decay
    clip: float = 1.0  # gradient-norm clipping (0: off)
    frames: int | None = None  # T frames per video (tiny 8, 7B 32)
    prior: str | None = None  # camera-token prior: poses | cut3r | none (tiny poses, 7B cut3r)
    cut3r_dim: int | None = None  # width of the CUT3R camera tokens (default: that of the cached tokens)
    cut3r_input: str | None = None  # frames CUT3R saw (extract-priors --cut3r-input): demo | vlm3r
    no_layout: bool = False  # ablation: no layout reconstruction loss
    no_situation: bool = False  # ablation: no position / orientation loss
    orientation_sigma: float | None = None  # wrapped-Gaussian yaw target sigma, radians (tiny 1.047 = 60°; 7B 0.175)
    lambda_layout: float | None = None  # layout loss weight (paper and 7B 0.05; tiny 1)
    lambda_situation: float | None = None  # situation loss weight (paper and 7B 0.075; tiny 1)
    nll_beta: float | None = None  # beta-NLL of the layout / position losses (0: the paper's NLL)
    situation_start: float | None = None  # situation losses off for N steps, or a fraction (0; tiny --init scratch 0.2)
    # a curriculum of repeated rooms first: the first --curriculum-steps steps draw only the videos of the first N
    # training scenes (in sorted order); 0: off
    curriculum_scenes: int = 0
    curriculum_steps: float = 0  # the curriculum's steps, N or a fraction of --steps (with --curriculum-scenes)
    # scans that are closed loops (loc3r synth's rooms): every question on K videos of its scan, begun at K points
    # spread round the loop, each with its own BEV frame (data.dataset.LoopStarts); 1: the scan's own video only
    loop_starts: int = 1
    loop_starts_after: float = 0  # the first N steps (or a fraction of --steps) on the scans' own videos only
    # the scans' own videos only until the orientation loss, averaged over the last 20 steps, falls below this;
    # then every loop start (with --loop-starts K > 1; 0: off)
    loop_starts_when: float = 0
    # from a base, without --lora: where its grounding / anchor heads look is kept (train.keep_grounding_heads):
    # query (their query rows get no gradient; the default) | query_key (and their key/value head's key rows) | none
    keep_heads: str | None = None
    head_input_norm: str | None = None  # none (the paper's heads) | batch (standardise the heads' inputs)
    lora: int | None = None  # LoRA rank: adapters (peft) on the LLM instead of full fine-tuning
    lora_alpha: float | None = None  # LoRA alpha (default 2 x rank)
    seed: int = 0  # model initialisation and data order
    resume: bool = False  # continue from the newest checkpoint in --out
    save_every: int = 500  # checkpoint every N steps (and at the end)
    keep: int = 2  # checkpoints kept (the newest ones)
    log_every: int = 10  # steps between log.jsonl records
    workers: int | None = None  # data-loading processes (default: 2 with a GPU, 0 on a CPU)
    device: str | None = None  # cpu, cuda, cuda:1 ... (default: cuda:<local rank> when there is a GPU)
    parallel: str | None = None  # ddp | fsdp (tiny ddp, 7B fsdp)
    activation_checkpointing: bool = False  # recompute activations in the backward pass (always on for the 7B)
    cache_dir: Path | None = None  # per-scene caches (default <data>/cache)
    quiet: bool = False  # no progress bar

    CHOICES: ClassVar[dict] = {"preset": ("tiny", "llava_video_7b"), "prior": PRIORS, "cut3r_input": CUT3R_INPUTS,
                               "parallel": ("ddp", "fsdp"), "head_input_norm": ("none", "batch"), "schedule": ("cosine", "wsd"),
                               "keep_heads": KEEP_HEADS}

    @property
    def decay_steps(self) -> int:
        """--schedule wsd: the final decay's steps; a fraction of a short run keeps at least one."""
        return max(1, step_count(self.decay, self.steps)) if 0 < self.decay < 1 else step_count(self.decay, self.steps)

    def __post_init__(self):
        self.data = [str(self.data)] if isinstance(self.data, (str, Path)) else [str(d) for d in self.data]
        if self.loop_starts < 1 or self.loop_starts_after < 0:
            raise Loc3rError(f"--loop-starts must be >= 1 and --loop-starts-after >= 0, got {self.loop_starts} and "
                             f"{self.loop_starts_after}")
        if self.schedule == "wsd" and not 0 < self.decay_steps <= self.steps - step_count(self.warmup, self.steps):
            raise Loc3rError(f"--decay {self.decay:g} is {self.decay_steps} of {self.steps} steps: it must be above 0 "
                             "and leave the warm-up's steps")
        if self.loop_starts_when < 0:
            raise Loc3rError(f"--loop-starts-when must be >= 0, got {self.loop_starts_when}")
        if self.nll_beta is not None and not 0 <= self.nll_beta <= 1:
            raise Loc3rError(f"--nll-beta must be in [0, 1], got {self.nll_beta:g}")
        if (self.loop_starts_after or self.loop_starts_when) and (
                self.loop_starts == 1 or self.curriculum_scenes or (self.loop_starts_after and self.loop_starts_when)):
            raise Loc3rError("--loop-starts-after / --loop-starts-when: with --loop-starts K > 1, not with "
                             "--curriculum-scenes, and only one of the two")
        if self.curriculum_scenes < 0 or self.curriculum_steps < 0:
            raise Loc3rError(f"--curriculum-scenes and --curriculum-steps must be >= 0, got {self.curriculum_scenes} "
                             f"and {self.curriculum_steps}")

    @property
    def sources(self) -> list[Source]:
        return [Source.parse(d) for d in self.data]

    @property
    def is_7b(self) -> bool:
        return self.preset == "llava_video_7b"

    @property
    def init_base(self) -> Path | None:
        """The base directory the run starts from (None: random weights, or the 7B's --base)."""
        if self.init == SCRATCH or self.is_7b:
            if self.is_7b and self.init not in (None, SCRATCH):
                raise Loc3rError(f"{self.init}: --init starts a tiny model from a pretrained tiny base; the 7B "
                                 "takes --base")
            return None
        if self.init is None:
            return TINY_BASE if (TINY_BASE / "config.json").is_file() else None
        return Path(self.init)

    def model_overrides(self) -> dict:
        """The Loc3RConfig fields these settings set (what the preset's defaults give way to)."""
        pairs = [("num_frames", self.frames), ("prior", self.prior), ("cut3r_dim", self.cut3r_dim),
                 ("cut3r_input", self.cut3r_input), ("orientation_sigma_rad", self.orientation_sigma),
                 ("lambda_layout", 0.0 if self.no_layout else self.lambda_layout),
                 ("lambda_situation", 0.0 if self.no_situation else self.lambda_situation),
                 ("head_input_norm", self.head_input_norm), ("nll_beta", self.nll_beta)]
        return {k: v for k, v in pairs if v is not None}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(p, TrainConfig)


def model_config(run: TrainConfig) -> Loc3RConfig:
    """The model configuration of a run (preset + overrides)."""
    overrides = run.model_overrides()
    if run.preset == "tiny":
        config = Loc3RConfig.tiny(**overrides)
    elif run.base is None:
        raise Loc3rError("--preset llava_video_7b needs --base DIR (a local LLaVA-Video-7B-Qwen2 in transformers format)")
    else:
        config = Loc3RConfig.llava_video_7b(run.base, **overrides)
    if config.prior == "cut3r" and run.cut3r_dim is None:  # the CUT3R's own width, as extract-priors cached it
        from loc3r.priors.cut3r import cached_token_width

        config = dataclasses.replace(config, cut3r_dim=cached_token_width(run.sources[0].root, config.num_frames))
    return config


def model_from_base(base: Path, config: Loc3RConfig, settings: dict | None = None) -> Loc3R:
    """A fresh model of `config` with the VLM, tokenizer, weights and BASE_FIELDS (grounding / anchor / copy heads,
    text embedding scale) of a pretrained tiny base (--init); `settings` (Loc3RConfig fields) override the base's,
    as a base's pretraining continued with a copy head or another scale sets them. The base's vision tower stays
    frozen, as the paper keeps its pretrained SigLIP frozen."""
    base_config = Loc3RConfig.load(Path(base) / "config.json")
    inherited = {k: getattr(base_config, k) for k in BASE_FIELDS} | (settings or {})
    model = Loc3R(dataclasses.replace(config, vlm=base_config.vlm, train_vision_tower=False, **inherited),
                  load_tokenizer(base))
    fresh = model.load_base(base)
    modules = sorted({".".join(n.split(".")[:2]) for n in fresh})
    print0(f"initialised from the base {base}"
           + (f"; {len(fresh)} tensors it lacks start fresh: {', '.join(modules)}" if fresh else ""))
    return model


# what a run from a base takes from the base's config (unless set explicitly: model_from_base's settings)
BASE_FIELDS = ("grounding_layer", "grounding_head", "anchor_layer", "anchor_head", "copy_layer", "copy_head",
               "text_embed_scale")
NEW_ON_A_BASE = ("camera_projector.", "layout_head.", "position_head.", "orientation_head.")  # untrained in a base
# A base's weights at 0.3 x the run's lr. Measured on the demo's recipe (README): at 0.1 x the base's grounding
# survives but the layout is barely learned in 600 steps; at 1 x (and a trainable vision tower) the grounding is
# gone by step 300; 0.3 x keeps half of it and learns the layout.
INIT_LR_SCALE = 0.3


def keep_grounding_heads(model: Loc3R, keep: str, learned: Loc3RConfig | None = None,
                         copy: bool = False) -> list[str]:
    """Freeze where the base's grounding heads look (Loc3R.grounding_attention_loss: head `grounding_head` of layer
    `grounding_layer`, head `anchor_head` of layer `anchor_layer`; with `copy`, a base's pretraining continued with
    its copy supervision, also its copy head, Loc3R.copy_attention_loss: head `copy_head` of layer `copy_layer`):
    keep="query" (train's default): their q_proj rows get a zero gradient, so the situation tokens' queries stay
    what the base learned while their values, the keys, every other head and the MLPs fine-tune (a --weight-decay
    above 0 still decays them); "query_key": also the k_proj rows of their key/value heads, each shared by
    num_attention_heads / num_key_value_heads heads, whose keys then stay too; "none": nothing. In the shipped base's
    Loc3R stage, query_key froze the keys of the last layer's heads 0-2 (the anchor head's key/value head), among them
    head 2, which brings <Ori> the facing object, and the orientation learned on one training seed of two (README:
    the accuracy table). `learned`: the base's
    config, whose heads are the ones kept (default the model's; a base's pretraining continued with a copy head it
    lacked trains that head). The Loc3R stage leaves the copy head free: the LM loss trains it. Returns what it
    keeps, in words."""
    if keep not in KEEP_HEADS:
        raise Loc3rError(f"--keep-heads {keep}: expected one of {', '.join(KEEP_HEADS)}")
    if keep == "none":
        return []
    c = learned or model.config
    text = model.vlm.config.text_config
    group = text.num_attention_heads // text.num_key_value_heads
    masked = []
    for layer, head in ((c.grounding_layer, c.grounding_head), (c.anchor_layer, c.anchor_head),
                        (c.copy_layer if copy else None, c.copy_head)):
        if layer is None:
            continue
        attention = model.vlm.model.language_model.layers[layer].self_attn
        d = attention.head_dim
        kept = [(attention.q_proj, head, "query")] + ([(attention.k_proj, head // group, "key")]
                                                       if keep == "query_key" else [])
        for proj, h, kind in kept:
            mask = torch.ones(proj.out_features, 1, device=proj.weight.device)
            mask[h * d:(h + 1) * d] = 0
            proj.weight.register_hook(lambda g, mask=mask: g * mask)
            if proj.bias is not None:
                proj.bias.register_hook(lambda g, mask=mask[:, 0]: g * mask)
            masked.append(f"layer {layer % text.num_hidden_layers} {kind} head {h}")
    return masked


def parameter_groups(model: Loc3R, lr: float, run: TrainConfig) -> list[dict]:
    """The optimizer's parameter groups: one at `lr`; for a run started from a pretrained base, the base's trained
    weights at --init-lr (INIT_LR_SCALE x lr) and what the base never trained (camera projector, heads, LoRA) at
    `lr`, as a pretrained VLM is fine-tuned gently while its new parts learn fast."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if run.init_base is None:
        return [{"params": [p for _, p in named]}]
    fresh = [n.startswith(NEW_ON_A_BASE) or "lora_" in n for n, _ in named]  # LoRA adapters are new too
    new = [p for (_, p), f in zip(named, fresh) if f]
    pretrained = [p for (_, p), f in zip(named, fresh) if not f]
    return [{"params": pretrained, "lr": run.init_lr if run.init_lr is not None else INIT_LR_SCALE * lr},
            {"params": new}]


def trajectory_settings(run: TrainConfig, per_video: int) -> dict:
    """The settings that decide which data a run draws and which weights it trains, as the run resolved them: stored
    with every checkpoint and compared on --resume (--steps and the learning rates may change)."""
    kept = (run.keep_heads or "query") if run.init_base is not None and not run.lora else None
    return {"seed": run.seed, "batch_size": run.batch_size, "grad_accum": run.grad_accum,
            "questions_per_video": per_video, "keep_heads": kept, "loop_starts": run.loop_starts,
            "loop_starts_after": run.loop_starts_after, "loop_starts_when": run.loop_starts_when,
            "curriculum_scenes": run.curriculum_scenes, "curriculum_steps": run.curriculum_steps}


def check_resume_settings(run: TrainConfig, checkpoint: Path, config: Loc3RConfig) -> None:
    """Refuse flags that contradict the checkpoint a run resumes from (instead of silently ignoring them)."""
    for name, value in run.model_overrides().items():
        if getattr(config, name) != value:
            raise Loc3rError(f"{checkpoint}: --resume with {name} = {value!r}, but the checkpoint was trained with "
                             f"{getattr(config, name)!r} (drop the flag, or start a new run)")


# ---------------------------------------------------------------------------------------------------------
# Data order, schedule, loss normalisation
# ---------------------------------------------------------------------------------------------------------


def tiny_tokenizer(dataset):
    """The tiny preset's word-level tokenizer: the synthetic rooms' vocabulary and every word of the training set's
    situations, questions and answers (so that real data trains the tiny model too)."""
    from loc3r.synth.language import vocabulary

    return build_tiny_tokenizer(sorted(set(vocabulary()) | data_words(dataset)))


def data_words(dataset) -> set[str]:
    """Every word of a training set's situations, questions and answers (a mixture's too)."""
    from loc3r.synth.language import tokenize

    words = set()
    for r in dataset.records:
        words.update(tokenize(" ".join([r.situation, r.question, *r.answers])))
    return words


def sample_index(position: int, n: int, seed: int) -> int:
    """Dataset index of global sample position `position`: epoch-wise permutations seeded by seed + epoch."""
    epoch, offset = divmod(position, n)
    return int(np.random.default_rng(seed + epoch).permutation(n)[offset])


def micro_batch_indices(position: int, n: int, seed: int, batch_size: int, rank: int, world: int) -> list[int]:
    """Indices of this rank's micro-batch that starts at global position `position`."""
    start = position + rank * batch_size
    return [sample_index(p, n, seed) for p in range(start, start + batch_size)]


def video_groups(scene_ids: list[str], per_video: int, seed: int, starts: int = 1) -> list[list[int]]:
    """The training units: dataset indices of up to `per_video` questions of one scene's video each (every
    question in exactly one unit; a scene's questions shuffled by `seed`, then cut in order). One question per
    unit, in dataset order, when per_video is 1. With `starts` loop starts (LoopStarts: question i on start s is
    item s * N + i) the units of start 0 come first, with the shuffles of a run without loop starts, so the scans'
    own videos are drawn exactly as that run draws them until the other starts join (--loop-starts-after / -when)."""
    if per_video == 1:
        return [[i] for i in range(len(scene_ids))]
    n = len(scene_ids) // starts
    units = []
    for s in range(starts):
        by_scene: dict[str, list[int]] = {}
        for i in range(s * n, (s + 1) * n):
            by_scene.setdefault(scene_ids[i], []).append(i)
        for k, scene_id in enumerate(sorted(by_scene)):
            indices = np.random.default_rng([seed, k] if s == 0 else [seed, k, s]).permutation(by_scene[scene_id])
            units += [indices[j:j + per_video].tolist() for j in range(0, len(indices), per_video)]
    return units


def loss_denominators(batches: list[Batch], info: parallel.DistInfo) -> dict[str, torch.Tensor]:
    """Per-loss counts over all micro-batches of the step and all ranks, divided by the world size (DDP averages
    gradients over ranks, so each rank normalises by its share of the global count)."""
    per_batch = [Loc3R.loss_counts(b) for b in batches]
    names = list(per_batch[0])
    counts = torch.stack([torch.stack([c[k] for k in names]) for c in per_batch]).sum(0).double()  # [n_losses]
    if info.distributed:
        dist.all_reduce(counts)
    return {k: (c / info.world_size).clamp(min=1.0 / info.world_size).float() for k, c in zip(names, counts)}


def truncate_log(path: Path, step: int) -> None:
    """Keep the records of log.jsonl up to `step` (where a resumed run continues; all of them are redone after
    it), so that a resumed run's log has every step once. Written atomically; an unreadable line ends the log."""
    if not path.is_file():
        return
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] > step:
                break
        except (json.JSONDecodeError, KeyError, TypeError):  # a line cut by a kill
            break
        kept.append(line + "\n")
    with atomic_path(path) as tmp:
        tmp.write_text("".join(kept))


def step_count(value: float, steps: int) -> int:
    """A number of steps given as N, or as a fraction of `steps` when below 1 (--warmup, --situation-start ...)."""
    return int(value * steps) if value < 1 else int(value)


def curriculum_units(units: list[list[int]], video_keys: list[str], run: TrainConfig) -> tuple[list[int], int]:
    """The curriculum's units and its steps: those of the first `run.curriculum_scenes` videos in sorted order, or
    with --loop-starts-after those of the scans' own videos (LoopStarts: the first of every K items)."""
    if run.loop_starts_after or run.loop_starts_when:  # --loop-starts-when: until StepBatches.join
        own = len(video_keys) // run.loop_starts
        steps = step_count(run.loop_starts_after, run.steps) if run.loop_starts_after else run.steps
        return [u for u, unit in enumerate(units) if unit[0] < own], steps
    steps = step_count(run.curriculum_steps, run.steps)
    if run.curriculum_scenes == 0 or steps == 0:
        return [], 0
    first = set(sorted(set(video_keys))[:run.curriculum_scenes])
    return [u for u, unit in enumerate(units) if video_keys[unit[0]] in first], steps


class StepBatches(torch.utils.data.Dataset):
    """Item i: this rank's micro-batches of optimizer step `first_step + i`, a pure function of the data position
    (so a DataLoader's workers build them in any process and a resumed run reads exactly what it would have)."""

    def __init__(self, run: TrainConfig, dataset, collate: Collator, units: list[list[int]],
                 per_video: int, info: parallel.DistInfo, first_step: int, first_position: int):
        self.run, self.dataset, self.collate, self.units, self.per_video = run, dataset, collate, units, per_video
        self.rank, self.world = info.rank, info.world_size
        self.first_step, self.first_position = first_step, first_position
        self.step_samples = run.batch_size * info.world_size * run.grad_accum  # units (videos with their questions)
        self.first_units, self.curriculum_steps = curriculum_units(units, dataset.video_keys, run)

    def join(self, step: int) -> None:
        """End the curriculum at `step` (--loop-starts-when: from it on every loop start is drawn)."""
        self.curriculum_steps = step

    def draw(self, step: int, position: int) -> list[int]:
        """This rank's units of the micro-batch at global `position` of optimizer step `step`: from the curriculum's
        units during its steps, then from all units (positions counted from the curriculum's end)."""
        if step < self.curriculum_steps:
            return [self.first_units[u] for u in micro_batch_indices(position, len(self.first_units), self.run.seed,
                                                                     self.run.batch_size, self.rank, self.world)]
        position -= self.curriculum_steps * self.step_samples
        return micro_batch_indices(position, len(self.units), self.run.seed, self.run.batch_size, self.rank, self.world)

    def __len__(self) -> int:
        return max(0, self.run.steps - self.first_step)

    def __getitem__(self, i: int) -> list[dict]:
        position = self.first_position + i * self.step_samples
        batches = []
        for k in range(self.run.grad_accum):
            idx = self.draw(self.first_step + i, position + k * self.run.batch_size * self.world)
            groups = [[self.dataset[j] for j in self.units[u]] for u in idx]
            batches.append(self.collate.grouped(groups) if self.per_video > 1 else self.collate([g[0] for g in groups]))
        return batches


def _keep(item):
    return item


@dataclass
class Session:
    """Everything a run's loop needs, built by `set_up`."""

    run: TrainConfig
    info: parallel.DistInfo
    model: Loc3R
    wrapped: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    loader: torch.utils.data.DataLoader
    params: list
    tensor_names: list[str]
    strategy: str
    situation_start: int
    start_step: int
    position: int
    step_samples: int
    join_window: list  # --loop-starts-when: the orientation losses of the last steps (restored on --resume)
    trajectory: dict  # trajectory_settings, stored with every checkpoint


def set_up(run: TrainConfig, dataset=None, model_settings: dict | None = None) -> Session:
    """Model (fresh, or resumed from the newest checkpoint), data, optimizer and schedule of a run. `dataset`
    replaces the questions of --data (the base pretraining's grounding questions; given a tokenizer through its
    `bind` once the model has one); `model_settings`: Loc3RConfig fields set on top of the run's (the base
    pretraining's copy head and text embedding scale)."""
    info = parallel.compute_init(run.device)
    torch.manual_seed(run.seed)
    model_settings = model_settings or {}
    if run.keep_heads is not None and (run.init_base is None or run.lora):
        raise Loc3rError(f"--keep-heads {run.keep_heads}: only a run from a pretrained tiny base without --lora has "
                         "grounding heads to keep")
    config = dataclasses.replace(model_config(run), **model_settings)
    lr = run.lr if run.lr is not None else (1e-5 if run.is_7b else 2e-3)
    strategy = run.parallel or ("fsdp" if run.is_7b else "ddp")
    start_step, position, stored = 0, 0, {}
    resume_dir = latest_checkpoint(run.out) if run.resume else None
    if run.resume and resume_dir is None:
        print0(f"--resume: no checkpoint in {run.out}, starting from scratch")
    lora_resume = resume_dir is not None and (resume_dir / LORA_STATE).is_file()
    if resume_dir is not None and bool(run.lora) != lora_resume:
        raise Loc3rError(f"{resume_dir}: " + ("a --lora run: resume it with the same --lora" if lora_resume else
                                              "not a --lora run: resume it without --lora"))
    if resume_dir is not None and not lora_resume:
        model = Loc3R.from_pretrained(resume_dir)
        check_resume_settings(run, resume_dir, model.config)
        config = model.config
    if dataset is None:
        dataset = make_training_set(config, run.sources, run.cache_dir, run.seed, run.loop_starts)
    if len(dataset) == 0:
        raise Loc3rError(f"{', '.join(run.data)}: the train split has no questions")
    if isinstance(dataset, MixtureDataset) and info.is_main:
        manifest = dataset.manifest()
        run.out.mkdir(parents=True, exist_ok=True)
        write_json(run.out / "manifest.json", manifest)
        print("training mixture:")
        for m in manifest:
            print(f"  {m['source']:<9} {m['root']}: {m['questions']} of {m['of']} questions ({m['fraction']:g}), "
                  f"{m['situated']} situated (pose supervision), layout supervision on {m['layout_supervision']}")
    if resume_dir is None or lora_resume:  # a LoRA run resumes from its initial model (same seed): frozen weights
        torch.manual_seed(run.seed)
        if run.init_base is not None:
            model = model_from_base(run.init_base, config, model_settings)
            unknown = sorted(data_words(dataset) - set(model.tokenizer.get_vocab()))
            if unknown and not lora_resume:
                print0(f"{len(unknown)} words of the training data are not in the base's vocabulary and read as "
                       f"unknown ({', '.join(unknown[:8])}{', ...' if len(unknown) > 8 else ''}); --init scratch "
                       "trains from random weights with a vocabulary of the data")
        else:
            model = Loc3R(config, tiny_tokenizer(dataset) if config.base_model_path is None else None)
    if hasattr(dataset, "bind"):
        dataset.bind(model.tokenizer)
    if run.init_base is not None and not run.lora:
        kept = keep_grounding_heads(model, run.keep_heads or "query",
                                    Loc3RConfig.load(run.init_base / "config.json"),
                                    copy=model_settings.get("copy_layer") is not None)
        print0(f"kept from the base (no gradient): {', '.join(kept) or 'nothing'}")
    if run.lora:
        model.add_lora(run.lora, run.lora_alpha)
        if lora_resume:
            load_lora_run(resume_dir, model)
    model.to(info.device)
    dataset.prepare(info.rank, info.world_size)  # each rank builds its share of the cache files (atomic writes)
    if info.distributed:
        dist.barrier()
    checkpointing = run.activation_checkpointing or run.is_7b
    per_video = run.questions_per_video or (1 if checkpointing else 8)
    if per_video < 1:
        raise Loc3rError(f"--questions-per-video must be >= 1, got {per_video}")
    if per_video > 1 and checkpointing:  # a recomputed layer would write its keys / values into the shared cache again
        raise Loc3rError("--questions-per-video > 1 (a shared video prefix) does not combine with activation "
                         "checkpointing: pass --questions-per-video 1")
    units = video_groups(dataset.video_keys, per_video, run.seed, run.loop_starts)
    # from a pretrained model the situation tokens already find the objects they name: the situation losses start at
    # once (README: measured the take-off at ~300 steps instead of ~600); from random weights the geometry first
    scratch_tiny = run.init_base is None and not run.is_7b
    start = run.situation_start if run.situation_start is not None else (0.2 if scratch_tiny else 0.0)

    tensor_names = list(model.checkpoint_tensors())
    wrapped = parallel.wrap_model(model, info, strategy, checkpointing)
    groups = parameter_groups(model, lr, run)
    params = [p for g in groups for p in g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=lr, weight_decay=run.weight_decay, betas=(0.9, 0.999))
    warmup = step_count(run.warmup, run.steps)
    if run.schedule == "wsd":
        scheduler = get_wsd_schedule(optimizer, warmup, run.decay_steps, run.steps)
    else:
        scheduler = get_cosine_schedule_with_warmup(optimizer, warmup, run.steps)  # linear warm-up, cosine to 0
    if resume_dir is not None:
        start_step, position, stored = load_trainer_state(resume_dir, wrapped, optimizer, scheduler, info)
        for group, base in zip(optimizer.param_groups, scheduler.base_lrs):  # this run's schedule (--steps may differ)
            group["lr"] = base * scheduler.lr_lambdas[0](start_step)
        trajectory = trajectory_settings(run, per_video)
        for name, value in stored.get("trajectory", {}).items():  # absent from checkpoints written before it
            if trajectory.get(name) != value:
                raise Loc3rError(f"{resume_dir}: --resume with {name} = {trajectory.get(name)!r}, but the checkpoint "
                                 f"was trained with {value!r} (drop the flag, or start a new run)")
        print0(f"resumed from {resume_dir} at step {start_step}")

    steps = StepBatches(run, dataset, Collator(model.tokenizer, config), units, per_video, info, start_step, position)
    if steps.curriculum_steps:
        drawn = f"the first {run.curriculum_scenes} scenes' videos"
        if run.loop_starts_after or run.loop_starts_when:
            drawn = "the scans' own videos" + (f" until the orientation loss < {run.loop_starts_when:g}"
                                               if run.loop_starts_when else "")
        print0(f"curriculum: steps 1-{steps.curriculum_steps} draw {len(steps.first_units)} of {len(units)} training "
               f"units ({drawn})")
    workers = run.workers if run.workers is not None else (2 if info.device.type == "cuda" else 0)
    if run.loop_starts_when and workers > 0:
        raise Loc3rError("--loop-starts-when changes the data as the run goes: pass --workers 0 (no batches drawn "
                         "ahead)")
    if run.loop_starts_when and stored.get("joined"):
        steps.join(stored["joined"])
    if workers > 0:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the workers are forked after the tokenizer ran
    loader = torch.utils.data.DataLoader(steps, batch_size=None, shuffle=False, num_workers=workers,
                                         collate_fn=_keep, pin_memory=info.device.type == "cuda")
    n_params = sum(p.numel() for p in model.parameters())
    starts = f" ({len(dataset) // run.loop_starts} on {run.loop_starts} loop starts)" if run.loop_starts > 1 else ""
    print0(f"training {run.preset} ({n_params / 1e6:.1f}M parameters, {sum(p.numel() for p in params) / 1e6:.1f}M "
           f"trainable) on {len(dataset)} questions{starts}, {info.world_size} process(es), {steps.step_samples} "
           f"videos/step with up to {per_video} questions each")
    return Session(run, info, model, wrapped, optimizer, scheduler, loader, params, tensor_names, strategy,
                   step_count(start, run.steps), start_step, position, steps.step_samples,
                   stored.get("window", []) if run.loop_starts_when else [], trajectory_settings(run, per_video))


def train_step(s: Session, step: int, batches: list[Batch]) -> dict[str, float]:
    """One optimizer step over this rank's micro-batches; returns the summed losses and the gradient norm."""
    batches = [b.to(s.info.device) for b in batches]
    denominators = loss_denominators(batches, s.info)
    scale = 0.0 if step < s.situation_start else 1.0
    sums = {}
    for k, batch in enumerate(batches):
        sync = k == len(batches) - 1 or not s.info.distributed or s.strategy != "ddp"
        with s.wrapped.no_sync() if not sync else contextlib.nullcontext():
            out = s.wrapped(batch, loss_denominators=denominators, situation_scale=scale)
            out.loss.backward()
        for name, value in {"loss": out.loss, **out.losses}.items():
            sums[name] = sums.get(name, 0.0) + float(value.detach())
    grad_norm = torch.nn.utils.clip_grad_norm_(s.params, s.run.clip) if s.run.clip > 0 else None
    s.optimizer.step()
    s.scheduler.step()
    s.optimizer.zero_grad(set_to_none=True)
    sums["grad_norm"] = float(grad_norm) if grad_norm is not None else None
    sums["questions"] = sum(len(b.question_id) for b in batches)
    return sums


def train(run: TrainConfig, dataset=None, model_settings: dict | None = None) -> Path:
    """Run (or resume) training (on `dataset` instead of --data's questions when given, and `model_settings`: see
    set_up); returns the final checkpoint directory."""
    s = set_up(run, dataset, model_settings)
    info = s.info
    run.out.mkdir(parents=True, exist_ok=True)
    if info.is_main:
        truncate_log(run.out / "log.jsonl", s.start_step)
    log_file = open(run.out / "log.jsonl", "a") if info.is_main else None
    bar = None
    if info.is_main and not run.quiet:
        from tqdm import tqdm
        bar = tqdm(total=run.steps, initial=s.start_step, desc="train", dynamic_ncols=True, file=sys.stdout)
    final_dir, position = None, s.position
    s.wrapped.train()
    t_last, questions_since = time.perf_counter(), 0
    batch_source = s.loader.dataset
    joining = run.loop_starts_when and batch_source.curriculum_steps >= run.steps
    window = s.join_window
    for step, batches in zip(range(s.start_step, run.steps), s.loader):
        sums = train_step(s, step, batches)
        questions_since += sums.pop("questions")
        grad_norm = sums.pop("grad_norm")
        position += s.step_samples
        done = step + 1
        if joining:  # --loop-starts-when: the next steps draw every loop start once the orientation has been learned
            window = (window + [parallel.all_reduce_mean(sums["orientation"], info)])[-JOIN_WINDOW:]
            if len(window) == JOIN_WINDOW and float(np.mean(window)) < run.loop_starts_when:
                batch_source.join(done)
                joining = False
                print0(f"step {done}: the orientation loss ({np.mean(window):.3f} over {JOIN_WINDOW} steps) is below "
                       f"{run.loop_starts_when:g}: every loop start from now on")
        if done % run.log_every == 0 or done == run.steps:
            now = time.perf_counter()
            record = {"step": done, "lr": s.scheduler.get_last_lr()[0],
                      **{k: parallel.all_reduce_mean(v, info) for k, v in sums.items()},
                      "grad_norm": grad_norm, "questions_per_s": questions_since / (now - t_last)}
            t_last, questions_since = now, 0
            if log_file is not None:
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
            if bar is not None:
                bar.set_postfix({k: f"{record[k]:.3g}" for k in ("loss", "lm", "layout", "position", "orientation",
                                                                   "seeing", "grounding", "questions_per_s")
                                   if k in record})
        if bar is not None:
            bar.update(1)
        if done % run.save_every == 0 or done == run.steps:
            joined = ({"joined": None if joining else batch_source.curriculum_steps, "window": window}
                      if run.loop_starts_when else {})
            final_dir = save_checkpoint(run.out, done, position, s.wrapped, s.model, s.optimizer, s.scheduler, info,
                                        s.tensor_names, extra={"run": {k: str(v) for k, v in vars(run).items()},
                                                               "trajectory": s.trajectory, **joined})
            if info.is_main:
                prune_checkpoints(run.out, run.keep)
    if bar is not None:
        bar.close()
    if log_file is not None:
        log_file.close()
    if final_dir is None:
        final_dir = latest_checkpoint(run.out)
    print0(f"checkpoint: {final_dir}")
    return final_dir


def run(args: argparse.Namespace) -> int:
    try:
        train(dataclass_from_args(TrainConfig, args))
    finally:
        parallel.compute_cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m loc3r.train` (what torchrun launches)."""
    from loc3r.command import run_command

    return run_command(sys.modules[__name__], "train", sys.argv[1:] if argv is None else argv)


if __name__ == "__main__":
    sys.exit(main())
