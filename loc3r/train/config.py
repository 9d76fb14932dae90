"""The settings of a training run: `RunSettings` (what every run has) and `TrainConfig` (`loc3r train`), whose flags
are generated from the fields, types and comments (loc3r.command.add_dataclass_arguments), grouped by GROUPS.

A field left None takes its value from the run's recipe (train/recipes.py: `--recipe`, or the preset's), then from
the model preset (frames, prior, loss weights: Loc3RConfig.tiny / llava_video_7b).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from loc3r.assets import TINY_BASE
from loc3r.errors import Loc3rError
from loc3r.model.config import PRIORS, Loc3RConfig
from loc3r.model.processor import Source
from loc3r.priors.cut3r import CUT3R_INPUTS
from loc3r.train.recipes import DEFAULT_RECIPE, RECIPES

SCRATCH = "scratch"  # --init value: no base
# the tiny base's training aids for situated answers (docs/tiny_base.md): what a recipe sets of them is left out of
# a run from random weights (--init scratch), and the relation aids out of a run given --relation-weight 0
RELATION_AIDS = ("relation_weight", "relation_layer", "relation_readout", "relation_objects", "relation_egocentric",
                 "relation_readout_layer")
TINY_BASE_AIDS = ("added_layers", "added_layers_join", *RELATION_AIDS)
PRESETS = ("tiny", "llava_video_7b")


def step_count(value: float, steps: int) -> int:
    """A number of steps given as N, or as a fraction of `steps` when below 1 (--warmup, --decay)."""
    return int(value * steps) if value < 1 else int(value)


@dataclass
class RunSettings:
    """What every training run has (`loc3r train`, `loc3r pretrain-base`)."""

    data: list[str]  # data: DIR (SQA3D), or name=DIR[:fraction] of sqa3d, scanqa, msqa, vsibench; repeat to mix
    out: Path  # run directory (checkpoints, log.jsonl, settings.json)
    steps: int | None = None  # optimizer steps
    batch_size: int | None = None  # videos per process and micro-batch
    questions_per_video: int | None = None  # questions of a video sharing its computed prefix
    lr: float | None = None  # peak learning rate
    seed: int = 0  # model initialisation and data order
    cache_dir: Path | None = None  # per-scene caches (default <data>/cache)
    save_every: int = 500  # checkpoint every N steps (and at the end)
    log_every: int = 10  # steps between log.jsonl records
    resume: bool = False  # continue from the newest checkpoint in --out
    overwrite: bool = False  # start again in --out when it holds a run (its checkpoints and logs are removed)
    quiet: bool = False  # no progress bar

    def __post_init__(self):
        self.data = [str(self.data)] if isinstance(self.data, (str, Path)) else [str(d) for d in self.data]
        self.out = Path(self.out)
        for name in ("steps", "batch_size", "questions_per_video", "save_every", "log_every"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise Loc3rError(f"--{name.replace('_', '-')} must be >= 1, got {value}")


@dataclass
class TrainConfig(RunSettings):
    """The settings of one training run (`loc3r train`)."""

    recipe: str | None = None  # named settings to start from (train/recipes.py; default: the preset's)
    preset: str | None = None  # model: tiny | llava_video_7b (default: the recipe's, else tiny)
    base: Path | None = None  # local LLaVA-Video-7B-Qwen2 directory (transformers format), for the 7B
    # tiny: the pretrained base to start from (`loc3r pretrain-base`: its weights and tokenizer); default: the base
    # shipped in loc3r/assets/tiny_base; "scratch": random weights and a tokenizer of the training data's words
    init: str | None = None
    # tiny, from a base: LLM layers added after the base's last, each starting as the identity (tiny.init)
    added_layers: int | None = None
    # with --added-layers and --loop-starts-when: the added layers run only from the join on; until then the LLM is
    # the base's depth (its steps ~1.4x faster) and the added layers stay the identity they start as
    added_layers_join: bool | None = None
    frames: int | None = None  # T frames per video (tiny 8, 7B 32)
    prior: str | None = None  # camera-token prior: poses | cut3r | none (tiny poses, 7B cut3r)
    cut3r_dim: int | None = None  # width of the CUT3R camera tokens (default: that of the cached tokens)
    cut3r_input: str | None = None  # frames CUT3R saw (extract-priors --cut3r-input): demo | vlm3r
    # converted CUT3R directory (convert-cut3r): the camera tokens of VSI-Bench's videos under the cut3r prior,
    # computed as the videos are read (the scans' tokens come from extract-priors' cache)
    cut3r: Path | None = None
    lora: int | None = None  # LoRA rank: adapters (peft) on the LLM instead of full fine-tuning
    lora_alpha: float | None = None  # LoRA alpha (default 2 x rank)
    # scans that are closed loops (loc3r synth's rooms): every question on K videos of its scan, begun at K points
    # spread round the loop, each with its own BEV frame (data.dataset.LoopStarts); 1: the scan's own video only
    loop_starts: int | None = None
    # the scans' own videos only until the orientation loss, averaged over the last 20 steps, falls below this;
    # then every loop start (with --loop-starts K > 1; 0: every loop start from the first step)
    loop_starts_when: float | None = None
    workers: int | None = None  # data-loading processes (default: 2 with a GPU, 0 on a CPU)
    no_layout: bool = False  # ablation: no layout reconstruction loss
    no_situation: bool = False  # ablation: no position / orientation loss
    orientation_sigma: float | None = None  # wrapped-Gaussian yaw target sigma, radians (tiny 1.047 = 60°; 7B 0.175)
    lambda_layout: float | None = None  # layout loss weight (paper and 7B 0.05; tiny 1)
    lambda_situation: float | None = None  # situation loss weight (paper and 7B 0.075; tiny 1)
    nll_beta: float | None = None  # beta-NLL of the layout / position losses (tiny 0.5; 7B 0: the paper's NLL)
    # tiny, from a base: in the LLM's last layer the state predicting a situated answer attends in three heads to the
    # question's object names, to <Pos> and to <Ori>, supervised with this weight (TinyBaseConfig.relation_layer,
    # tiny.losses.relation_attention_loss; training only) from the step the loop starts join (--loop-starts-when);
    # 0: off
    relation_weight: float | None = None
    # the LLM layer of the relation heads (counted from the end when negative; default the last)
    relation_layer: int | None = None
    # with --relation-weight: the state predicting a situated answer also gives the speaker's pose through the position
    # and orientation heads (tiny.losses.relation_readout_loss; training only)
    relation_readout: bool | None = None
    # with --relation-readout: the state also gives the place of a relation question's object through the layout
    # head (synthetic rooms: tiny.relation_data.ObjectPlaces)
    relation_objects: bool = False
    # with --relation-readout, instead of --relation-objects: the state of a relation question gives the object as the
    # speaker sees it, its place in the speaker's frame and its bearing, through the position and orientation heads
    # (synthetic rooms: tiny.relation_data.ObjectPlaces)
    relation_egocentric: bool | None = None
    # with --relation-readout: read the pose (and the object's place) at this LLM layer's output and only the relation
    # (--relation-egocentric) at the final state (TinyBaseConfig.relation_readout_layer)
    relation_readout_layer: int | None = None
    # synthetic rooms: their relation questions (left / right, navigation, distance: synth.situations.RELATION_KINDS)
    # are drawn only from the step the loop starts join (--loop-starts-when) on; answers that need the pose cost the
    # pose's take-off nothing before it (`loc3r synth --relations K` adds K a situation)
    relations_join: bool | None = None
    init_lr: float | None = None  # peak lr of a tiny base's weights (default 0.3 x --lr; camera projector, heads: --lr)
    grad_accum: int | None = None  # micro-batches per optimizer step
    global_batch: int | None = None  # videos per optimizer step: sets --grad-accum from the batch and world size
    weight_decay: float = 0.0  # AdamW weight decay
    clip: float = 1.0  # gradient-norm clipping (0: off)
    epochs: float | None = None  # passes over the training videos: sets --steps from the data
    warmup: float | None = None  # warm-up steps, or a fraction of the steps when < 1
    # cosine: linear warm-up, cosine decay to 0 over the rest; wsd: linear warm-up, the peak rate held, then a cosine
    # decay to 0 over the last --decay steps (warmup-stable-decay)
    schedule: str | None = None
    decay: float | None = None  # --schedule wsd: steps of the final decay, or a fraction of the steps when < 1
    keep: int = 2  # checkpoints kept (the newest ones)
    device: str | None = None  # cpu, cuda, cuda:1 ... (default: cuda:<local rank> when there is a GPU)
    parallel: str | None = None  # ddp | fsdp
    activation_checkpointing: bool | None = None  # recompute activations in the backward pass
    # the LLM's matrix products under torch.autocast: bf16 (a CPU; its norms, attention, heads and losses stay fp32),
    # off (fp32), or auto: bf16 on a CPU with AMX tiles when the weights are fp32 (a tiny step ~1.4x faster), else off
    autocast: str | None = None

    CHOICES: ClassVar[dict] = {"recipe": tuple(RECIPES), "preset": PRESETS, "prior": PRIORS,
                               "cut3r_input": CUT3R_INPUTS, "parallel": ("ddp", "fsdp"),
                               "autocast": ("auto", "bf16", "off"), "schedule": ("cosine", "wsd")}
    GROUPS: ClassVar[dict] = {
        "recipe": ("recipe", "seed"),
        "data": ("data", "cache_dir", "cut3r", "frames", "questions_per_video", "loop_starts", "loop_starts_when",
                 "relations_join", "workers"),
        "model": ("preset", "base", "init", "added_layers", "added_layers_join", "prior", "cut3r_dim", "cut3r_input",
                  "lora", "lora_alpha"),
        "loss": ("no_layout", "no_situation", "orientation_sigma", "lambda_layout", "lambda_situation", "nll_beta",
                 "relation_weight", "relation_layer", "relation_readout", "relation_objects",
                 "relation_egocentric", "relation_readout_layer"),
        "optimisation": ("lr", "init_lr", "batch_size", "grad_accum", "global_batch", "weight_decay", "clip"),
        "schedule": ("steps", "epochs", "warmup", "schedule", "decay"),
        "checkpointing": ("out", "resume", "overwrite", "save_every", "keep", "log_every", "quiet"),
        "parallelism": ("device", "parallel", "activation_checkpointing", "autocast"),
    }
    # filled from the recipe only when the other of the pair was not given
    EXCLUSIVE: ClassVar[tuple] = (("steps", "epochs"), ("grad_accum", "global_batch"))
    # the value of a field that neither a flag nor the recipe set
    UNSET: ClassVar[dict] = {"relation_layer": -1, "relation_readout": False, "relation_egocentric": False,
                             "relations_join": False, "added_layers_join": False, "autocast": "auto"}

    def __post_init__(self):
        super().__post_init__()
        name = self.recipe or DEFAULT_RECIPE[self.preset or "tiny"]
        if name not in RECIPES:
            raise Loc3rError(f"unknown recipe {name!r}: expected one of {', '.join(RECIPES)}")
        recipe = RECIPES[name]
        if self.preset is not None and self.preset != recipe.preset:
            raise Loc3rError(f"--recipe {name} trains the {recipe.preset} preset, not --preset {self.preset}")
        self.recipe, self.preset = name, recipe.preset
        for a, b in self.EXCLUSIVE:
            if getattr(self, a) is not None and getattr(self, b) is not None:
                raise Loc3rError(f"--{a.replace('_', '-')} and --{b.replace('_', '-')}: pass one of the two")
        given = {f.name for f in dataclasses.fields(self) if getattr(self, f.name) is not None}
        paired = {a: b for pair in self.EXCLUSIVE for a, b in (pair, pair[::-1])}
        # a recipe's aids of a tiny base are left out of a run from random weights, its relation aids out of a run
        # given --relation-weight 0
        left_out = (TINY_BASE_AIDS if self.init == SCRATCH else
                    RELATION_AIDS if self.relation_weight == 0 else ())
        for field, value in recipe.settings.items():
            if field not in given and paired.get(field) not in given and field not in left_out:
                setattr(self, field, value)
        for field, value in self.UNSET.items():  # what no flag and no recipe set
            if getattr(self, field) is None:
                setattr(self, field, value)
        if self.loop_starts == 1 and "loop_starts_when" not in given:  # the recipe's join of loop starts run without
            self.loop_starts_when = 0.0
        if self.activation_checkpointing and "questions_per_video" not in given:  # no shared prefix to recompute
            self.questions_per_video = 1
        self.check()

    def check(self) -> None:
        """Refuse settings that cannot run (in one line, before any data is read)."""
        if self.loop_starts < 1 or self.loop_starts_when < 0:
            raise Loc3rError(f"--loop-starts must be >= 1 and --loop-starts-when >= 0, got {self.loop_starts} and "
                             f"{self.loop_starts_when:g}")
        if self.loop_starts_when and self.loop_starts == 1:
            raise Loc3rError("--loop-starts-when needs --loop-starts K > 1")
        if self.relations_join and not self.loop_starts_when:
            raise Loc3rError("--relations-join needs --loop-starts-when (the step its relation questions join at)")
        if self.added_layers is not None and (self.added_layers < 0 or self.added_layers and (
                self.is_7b or self.init == SCRATCH)):
            raise Loc3rError(f"--added-layers {self.added_layers}: a number >= 0 of LLM layers added to a tiny base "
                             "(the 7B and --init scratch have none)")
        if self.added_layers_join and not (self.added_layers and self.loop_starts_when):
            raise Loc3rError("--added-layers-join needs --added-layers N > 0 and --loop-starts-when (the step the "
                             "added layers join at)")
        if self.relation_weight is not None and (self.relation_weight < 0 or self.relation_weight and (
                self.is_7b or self.init == SCRATCH)):
            raise Loc3rError(f"--relation-weight {self.relation_weight:g}: a weight >= 0 of the relation heads of a "
                             "tiny model started from a base (the 7B and --init scratch have none)")
        if (self.relation_readout and not self.relation_weight) or (
                (self.relation_objects or self.relation_egocentric or self.relation_readout_layer is not None)
                and not self.relation_readout):
            raise Loc3rError("--relation-readout needs --relation-weight W > 0, and --relation-objects, "
                             "--relation-egocentric or --relation-readout-layer needs --relation-readout")
        if self.relation_objects and self.relation_egocentric:
            raise Loc3rError("--relation-objects and --relation-egocentric are two readouts of a relation question's "
                             "object: give one")
        if self.nll_beta is not None and not 0 <= self.nll_beta <= 1:
            raise Loc3rError(f"--nll-beta must be in [0, 1], got {self.nll_beta:g}")
        roots = [(src.benchmark, src.root.resolve()) for src in self.sources]
        if len(set(roots)) < len(roots):
            twice = next(d for d, r in zip(self.data, roots) if roots.count(r) > 1)
            raise Loc3rError(f"--data {twice}: the same source is given twice (it would count its questions twice)")
        for name in ("grad_accum", "global_batch"):
            if getattr(self, name) is not None and getattr(self, name) < 1:
                raise Loc3rError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.epochs is not None and not self.epochs > 0:
            raise Loc3rError(f"--epochs must be > 0, got {self.epochs:g}")
        if self.schedule == "wsd" and self.decay is None:
            raise Loc3rError("--schedule wsd needs --decay (the final decay's steps, or a fraction of the steps)")
        if self.steps is not None and self.schedule == "wsd" and not (
                0 < self.decay_steps <= self.steps - step_count(self.warmup, self.steps)):
            raise Loc3rError(f"--decay {self.decay:g} is {self.decay_steps} of {self.steps} steps: it must be above 0 "
                             "and leave the warm-up's steps")

    @property
    def decay_steps(self) -> int:
        """--schedule wsd: the final decay's steps; a fraction of a short run keeps at least one."""
        return max(1, step_count(self.decay, self.steps)) if 0 < self.decay < 1 else step_count(self.decay, self.steps)

    def sized(self, units: int, world_size: int) -> "TrainConfig":
        """These settings with --steps and --grad-accum resolved: from --epochs over `units` training units (videos
        with their questions) and from --global-batch over `world_size` processes."""
        grad_accum = self.grad_accum
        if grad_accum is None:
            per_step = self.batch_size * world_size
            if self.global_batch % per_step:
                raise Loc3rError(f"--global-batch {self.global_batch} is not a multiple of --batch-size "
                                 f"{self.batch_size} x {world_size} process(es)")
            grad_accum = self.global_batch // per_step
        steps = self.steps
        if steps is None:
            steps = max(1, math.ceil(self.epochs * units / (self.batch_size * world_size * grad_accum)))
        sized = dataclasses.replace(self, steps=steps, grad_accum=grad_accum, epochs=None, global_batch=None)
        return sized

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

    def relation_settings(self) -> dict:
        """The TinyBaseConfig fields --relation-weight sets (none when 0)."""
        if not self.relation_weight:
            return {}
        return dict(relation_layer=self.relation_layer, lambda_relation=self.relation_weight,
                    relation_readout=self.relation_readout, relation_egocentric=self.relation_egocentric,
                    relation_readout_layer=self.relation_readout_layer)

    def model_overrides(self) -> dict:
        """The Loc3RConfig fields these settings set (what the preset's defaults give way to)."""
        pairs = [("num_frames", self.frames), ("prior", self.prior), ("cut3r_dim", self.cut3r_dim),
                 ("cut3r_input", self.cut3r_input), ("orientation_sigma_rad", self.orientation_sigma),
                 ("lambda_layout", 0.0 if self.no_layout else self.lambda_layout),
                 ("lambda_situation", 0.0 if self.no_situation else self.lambda_situation),
                 ("nll_beta", self.nll_beta)]
        return {k: v for k, v in pairs if v is not None}

    @classmethod
    def help_defaults(cls) -> dict[str, str]:
        """Each recipe's value of the fields recipes set, for --help."""
        out: dict[str, list[str]] = {}
        for recipe in RECIPES.values():
            for field, value in recipe.settings.items():
                shown = f"{value:g}" if isinstance(value, float) else str(value)
                out.setdefault(field, []).append(f"{shown} in {recipe.name}")
        for field, value in cls.UNSET.items():
            out.setdefault(field, []).append(f"else {value}")
        return {field: ", ".join(values) for field, values in out.items()}


def model_config(run: TrainConfig) -> Loc3RConfig:
    """The model configuration of a run (preset + overrides)."""
    overrides = run.model_overrides()
    if run.preset == "tiny":
        config = Loc3RConfig.tiny(**overrides)
    elif run.base is None:
        raise Loc3rError("--preset llava_video_7b needs --base DIR (a local LLaVA-Video-7B-Qwen2 in transformers "
                         "format)")
    else:
        config = Loc3RConfig.llava_video_7b(run.base, **overrides)
    return with_cached_cut3r_width(run, config)


def with_cached_cut3r_width(run: TrainConfig, config: Loc3RConfig) -> Loc3RConfig:
    """Under the cut3r prior without --cut3r-dim, the config with the CUT3R's own width, as extract-priors cached it
    under the first source (a one-line error when nothing is cached there)."""
    if config.prior != "cut3r" or run.cut3r_dim is not None:
        return config
    from loc3r.priors.cut3r import cached_token_width

    return dataclasses.replace(config, cut3r_dim=cached_token_width(run.sources[0].root, config.num_frames))
