"""`loc3r train` / `torchrun --nproc_per_node N -m loc3r.train ...`: the training loop.

One code path for one process and for torchrun (DDP, or FSDP2 for the 7B: loc3r.parallel does the wrapping).
AdamW on the trainable parameters (frozen parts per the config), linear warm-up then cosine decay (transformers'
get_cosine_schedule_with_warmup; or with --schedule wsd the peak rate held until a final cosine decay,
get_wsd_schedule), gradient clipping, gradient accumulation. Choices that make runs reproducible and resumable:
- The data order is a pure function of (seed, sample position) (train/order.py).
- Every loss is normalised by its count over the whole optimizer step (all micro-batches, all ranks), so
  gradient accumulation and data parallelism give the gradient of one big batch.
- Checkpoints (model + optimizer + scheduler + RNG + data position) are written atomically every
  `--save-every` steps and at the end; `--resume` continues from the newest one. RUN/settings.json holds the
  run's resolved settings (its recipe with the flags applied).
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

import numpy as np
import torch
import torch.distributed as dist
from transformers import get_cosine_schedule_with_warmup, get_wsd_schedule

from loc3r import parallel
from loc3r.command import add_dataclass_arguments, dataclass_from_args
from loc3r.errors import Loc3rError
from loc3r.io import atomic_path, write_json
from loc3r.model.config import Loc3RConfig
from loc3r.model.loc3r import Loc3R
from loc3r.model.processor import Batch, Collator, MixtureDataset, make_training_set
from loc3r.model.tokenizer import build_tiny_tokenizer
from loc3r.parallel import print0
from loc3r.tiny.config import TinyBaseConfig
from loc3r.tiny.init import (INIT_LR_SCALE, NEW_ON_A_BASE, absolute_layers, keep_grounding_heads, model_from_base,
                             read_base)
from loc3r.tiny.model import TinyLoc3R
from loc3r.tiny.relation_data import ObjectPlaces
from loc3r.train.check_data import check_training_set
from loc3r.train.checkpoint import (LORA_STATE, claim_run_dir, latest_checkpoint, load_lora_run, load_model,
                                    load_trainer_state, prune_checkpoints, save_checkpoint, trainer_extra)
from loc3r.train.config import TrainConfig, model_config, step_count
from loc3r.train.order import StepBatches, video_groups

JOIN_WINDOW = 20  # --loop-starts-when: steps of orientation loss averaged
FRAME_FEATURES_BYTES = 1 << 30  # a frozen vision tower's features kept by frame on a CPU (the demo's rooms: ~0.3 GiB)
# settings of checkpoints written before they were removed: a resumed run refuses any other value
REMOVED_TRAJECTORY = {"loop_starts_after": 0, "curriculum_scenes": 0, "curriculum_steps": 0}


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(p, TrainConfig)


def parameter_groups(model: Loc3R, lr: float, run: TrainConfig) -> list[dict]:
    """The optimizer's parameter groups: one at `lr`; for a run started from a pretrained base, the base's trained
    weights at --init-lr (INIT_LR_SCALE x lr) and what the base never trained (camera projector, heads, LLM layers
    added to it, LoRA) at `lr`, as a pretrained VLM is fine-tuned gently while its new parts learn fast."""
    named = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    if run.init_base is None:
        return [{"params": [p for _, p in named]}]
    layers = len(model.vlm.model.language_model.layers)  # LLM layers added to the base (--added-layers) are new
    added = tuple(f"vlm.model.language_model.layers.{k}." for k in range(layers - (run.added_layers or 0), layers))
    fresh = [n.startswith(NEW_ON_A_BASE + added) or "lora_" in n for n, _ in named]  # LoRA adapters are new too
    new = [p for (_, p), f in zip(named, fresh) if f]
    pretrained = [p for (_, p), f in zip(named, fresh) if not f]
    return [{"params": pretrained, "lr": run.init_lr if run.init_lr is not None else INIT_LR_SCALE * lr},
            {"params": new}]


def trajectory_settings(run: TrainConfig, per_video: int, keep_heads: str | None) -> dict:
    """The settings that decide which data a run draws and which weights it trains, as the run resolved them: stored
    with every checkpoint and compared on --resume (--steps and the learning rates may change)."""
    return {"seed": run.seed, "batch_size": run.batch_size, "grad_accum": run.grad_accum,
            "questions_per_video": per_video, "keep_heads": keep_heads, "loop_starts": run.loop_starts,
            "loop_starts_when": run.loop_starts_when, "relations_join": run.relations_join,
            "added_layers": run.added_layers or 0,  # which layers learn at the full rate
            "added_layers_join": run.added_layers_join,
            "start": "random weights" if run.init_base is None and not run.is_7b else "a pretrained base",
            "data": [f"{s.benchmark}={s.root.resolve()}:{s.fraction:g}" for s in run.sources]}


def check_resume_trajectory(trajectory: dict, stored: dict, checkpoint: Path) -> None:
    """Refuse a resumed run whose data order or trained weights would differ from the checkpoint's."""
    for name, value in stored.items():  # absent from checkpoints written before it
        current = trajectory.get(name, REMOVED_TRAJECTORY.get(name))
        if current != value:
            raise Loc3rError(f"{checkpoint}: --resume with {name} = {current!r}, but the checkpoint was trained with "
                             f"{value!r} (drop the flag, or start a new run)")


def check_resume_settings(run: TrainConfig, checkpoint: Path, config: Loc3RConfig) -> None:
    """Refuse flags that contradict the checkpoint a run resumes from (instead of silently ignoring them)."""
    for name, value in run.model_overrides().items():
        if getattr(config, name) != value:
            raise Loc3rError(f"{checkpoint}: --resume with {name} = {value!r}, but the checkpoint was trained with "
                             f"{getattr(config, name)!r} (drop the flag, or start a new run)")


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


def loss_denominators(model: Loc3R, batches: list[Batch], info: parallel.DistInfo) -> dict[str, torch.Tensor]:
    """Per-loss counts over all micro-batches of the step and all ranks, divided by the world size (DDP averages
    gradients over ranks, so each rank normalises by its share of the global count)."""
    per_batch = [model.loss_counts(b) for b in batches]
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
    start_step: int
    position: int
    step_samples: int
    join_window: list  # --loop-starts-when: the orientation losses of the last steps (restored on --resume)
    trajectory: dict  # trajectory_settings, stored with every checkpoint


def set_up(run: TrainConfig, dataset=None, base_settings: dict | None = None, keep_keys: bool = False) -> Session:
    """Model (fresh, or resumed from the newest checkpoint), data, optimizer and schedule of a run, with its settings
    sized to the data (--epochs) and the world (--global-batch). For the tiny base's pretraining (`loc3r
    pretrain-base`): `dataset` replaces the questions of --data (given a tokenizer through its `bind` once the model
    has one), `base_settings` (TinyBaseConfig fields) are the base's, on top of an --init base's, and `keep_keys`
    keeps an --init base's grounding heads' keys too."""
    info = parallel.compute_init(run.device)
    claim_run_dir(run.out, run.resume, run.overwrite, info.is_main)
    if info.distributed:
        dist.barrier()  # the main process has removed what --overwrite replaces
    torch.manual_seed(run.seed)
    config = model_config(run)
    start_step, position, stored = 0, 0, {}
    resume_dir = latest_checkpoint(run.out) if run.resume else None
    if run.resume and resume_dir is None:
        print0(f"--resume: no checkpoint in {run.out}, starting from scratch")
    lora_resume = resume_dir is not None and (resume_dir / LORA_STATE).is_file()
    if resume_dir is not None and bool(run.lora) != lora_resume:
        raise Loc3rError(f"{resume_dir}: " + ("a --lora run: resume it with the same --lora" if lora_resume else
                                              "not a --lora run: resume it without --lora"))
    if resume_dir is not None and not lora_resume:
        model = load_model(resume_dir)
        check_resume_settings(run, resume_dir, model.config)
        config = model.config
    if dataset is None:
        dataset = make_training_set(config, run.sources, run.cache_dir, run.seed, run.loop_starts, run.cut3r)
        if len(dataset):
            check_training_set(run, config, dataset)  # fails in seconds, not once the caches are being built
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
    if run.relation_weight and run.relation_readout and (run.relation_objects or run.relation_egocentric):
        dataset = ObjectPlaces(dataset, [src.root for src in run.sources], as_seen=bool(run.relation_egocentric))
    if resume_dir is None or lora_resume:  # a LoRA run resumes from its initial model (same seed): frozen weights
        torch.manual_seed(run.seed)
        if run.init_base is not None:
            model = model_from_base(run.init_base, config, {**(base_settings or {}), **run.relation_settings()},
                                    run.added_layers or 0)
            unknown = sorted(data_words(dataset) - set(model.tokenizer.get_vocab()))
            if unknown and not lora_resume:
                print0(f"{len(unknown)} words of the training data are not in the base's vocabulary and read as "
                       f"unknown ({', '.join(unknown[:8])}{', ...' if len(unknown) > 8 else ''}); --init scratch "
                       "trains from random weights with a vocabulary of the data")
        elif base_settings is not None:  # a base pretrained from random weights
            model = TinyLoc3R(config, tiny_tokenizer(dataset), TinyBaseConfig(**base_settings))
        else:
            model = Loc3R(config, tiny_tokenizer(dataset) if config.base_model_path is None else None)
    if hasattr(dataset, "bind"):
        dataset.bind(model.tokenizer)
    keep_heads = None
    if run.init_base is not None and not run.lora:
        keep_heads = "query_key" if keep_keys else "query"
        copy = base_settings is not None and base_settings.get("copy_layer") is not None
        base_config, learned = read_base(run.init_base)  # the heads the base learned, in its own layers
        learned = absolute_layers(learned, base_config.vlm["text_config"]["num_hidden_layers"])
        kept = keep_grounding_heads(model, learned, keys=keep_keys, copy=copy)
        print0(f"kept from the base (no gradient): {', '.join(kept) or 'nothing'}")
    if run.lora:
        model.add_lora(run.lora, run.lora_alpha)
        if lora_resume:
            load_lora_run(resume_dir, model)
    model.to(info.device)
    model.llm_autocast = parallel.cpu_autocast(run.autocast, info.device, model)
    if model.llm_autocast is not None:
        print0(f"the LLM's matrix products run in {str(model.llm_autocast).removeprefix('torch.')} (--autocast "
               f"{run.autocast}; its norms, attention and the heads in fp32)")
    if model.keep_frame_features(FRAME_FEATURES_BYTES):
        print0(f"the frozen vision tower runs once per distinct frame (its features kept, up to "
               f"{FRAME_FEATURES_BYTES >> 20} MiB)")
    dataset.prepare(info.rank, info.world_size)  # each rank builds its share of the cache files (atomic writes)
    if info.distributed:
        dist.barrier()
    per_video = run.questions_per_video
    if per_video > 1 and run.activation_checkpointing:  # a recomputed layer would write its keys / values again
        raise Loc3rError("--questions-per-video > 1 (a shared video prefix) does not combine with activation "
                         "checkpointing: pass --questions-per-video 1")
    units = video_groups(dataset.video_keys, per_video, run.seed, run.loop_starts)
    run = run.sized(len(units) // run.loop_starts, info.world_size)

    tensor_names = list(model.checkpoint_tensors())
    wrapped = parallel.wrap_model(model, info, run.parallel, run.activation_checkpointing,
                                  unused_parameters=bool(run.added_layers_join))  # the added layers until the join
    groups = parameter_groups(model, run.lr, run)
    params = [p for g in groups for p in g["params"]]
    optimizer = torch.optim.AdamW(groups, lr=run.lr, weight_decay=run.weight_decay, betas=(0.9, 0.999))
    warmup = step_count(run.warmup, run.steps)
    if run.schedule == "wsd":
        scheduler = get_wsd_schedule(optimizer, warmup, run.decay_steps, run.steps)
    else:
        scheduler = get_cosine_schedule_with_warmup(optimizer, warmup, run.steps)  # linear warm-up, cosine to 0
    trajectory = trajectory_settings(run, per_video, keep_heads)
    if resume_dir is not None:
        check_resume_trajectory(trajectory, trainer_extra(resume_dir).get("trajectory", {}), resume_dir)
        start_step, position, stored = load_trainer_state(resume_dir, wrapped, optimizer, scheduler, info)
        for group, base in zip(optimizer.param_groups, scheduler.base_lrs):  # this run's schedule (--steps may differ)
            group["lr"] = base * scheduler.lr_lambdas[0](start_step)
        print0(f"resumed from {resume_dir} at step {start_step}")

    steps = StepBatches(run, dataset, Collator(model.tokenizer, config), units, per_video, info, start_step, position)
    if steps.own_steps:
        print0(f"loop starts: the {len(steps.own_units)} of {len(units)} training units on the scans' own videos "
               + ("without their relation questions " if run.relations_join else "")
               + f"until the orientation loss < {run.loop_starts_when:g}")
    workers = run.workers if run.workers is not None else (2 if info.device.type == "cuda" else 0)
    if run.loop_starts_when and workers > 0:
        raise Loc3rError("--loop-starts-when changes the data as the run goes: pass --workers 0 (no batches drawn "
                         "ahead)")
    if run.loop_starts_when and stored.get("joined"):
        steps.join(stored["joined"])
    if run.relation_weight and run.loop_starts_when:  # the relation heads join with the loop starts
        model.relation_active = bool(stored.get("joined"))
    if run.added_layers_join and not stored.get("joined"):  # and so do the added layers
        model.depth = len(model.vlm.model.language_model.layers) - run.added_layers
    if workers > 0:
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # the workers are forked after the tokenizer ran
    loader = torch.utils.data.DataLoader(steps, batch_size=None, shuffle=False, num_workers=workers,
                                         collate_fn=_keep, pin_memory=info.device.type == "cuda")
    n_params = sum(p.numel() for p in model.parameters())
    starts = f" ({len(dataset) // run.loop_starts} on {run.loop_starts} loop starts)" if run.loop_starts > 1 else ""
    print0(f"training {run.preset} with recipe {run.recipe} ({n_params / 1e6:.1f}M parameters, "
           f"{sum(p.numel() for p in params) / 1e6:.1f}M trainable) on {len(dataset)} questions{starts}, "
           f"{info.world_size} process(es), {run.steps} steps of {steps.step_samples} videos with up to {per_video} "
           "questions each")
    return Session(run=run, info=info, model=model, wrapped=wrapped, optimizer=optimizer, scheduler=scheduler,
                   loader=loader, params=params, tensor_names=tensor_names, strategy=run.parallel,
                   start_step=start_step, position=position, step_samples=steps.step_samples,
                   join_window=stored.get("window", []) if run.loop_starts_when else [], trajectory=trajectory)


def train_step(s: Session, step: int, batches: list[Batch]) -> dict[str, float]:
    """One optimizer step over this rank's micro-batches; returns the summed losses and the gradient norm."""
    batches = [b.to(s.info.device) for b in batches]
    denominators = loss_denominators(s.model, batches, s.info)
    sums = {}
    for k, batch in enumerate(batches):
        sync = k == len(batches) - 1 or not s.info.distributed or s.strategy != "ddp"
        with s.wrapped.no_sync() if not sync else contextlib.nullcontext():
            out = s.wrapped(batch, loss_denominators=denominators)
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


def train(run: TrainConfig, dataset=None, base_settings: dict | None = None, keep_keys: bool = False) -> Path:
    """Run (or resume) training (`dataset`, `base_settings`, `keep_keys`: the tiny base's pretraining, see set_up);
    returns the final checkpoint directory."""
    s = set_up(run, dataset, base_settings, keep_keys)
    run, info = s.run, s.info
    log_file = None  # the run's files are made once its first step has run: a run failing on its data leaves none
    bar = None
    if info.is_main and not run.quiet:
        from tqdm import tqdm
        bar = tqdm(total=run.steps, initial=s.start_step, desc="train", dynamic_ncols=True, file=sys.stdout)
    final_dir, position = None, s.position
    s.wrapped.train()
    t_last, questions_since = time.perf_counter(), 0
    batch_source = s.loader.dataset
    joining = run.loop_starts_when and batch_source.own_steps >= run.steps
    window = s.join_window
    for step, batches in zip(range(s.start_step, run.steps), s.loader):
        sums = train_step(s, step, batches)
        if info.is_main and log_file is None:
            log_file = open_run_files(s)
        questions_since += sums.pop("questions")
        grad_norm = sums.pop("grad_norm")
        position += s.step_samples
        done = step + 1
        if joining:  # --loop-starts-when: the next steps draw every loop start once the orientation has been learned
            window = (window + [parallel.all_reduce_mean(sums["orientation"], info)])[-JOIN_WINDOW:]
            if len(window) == JOIN_WINDOW and float(np.mean(window)) < run.loop_starts_when:
                batch_source.join(done)
                joining = False
                s.model.relation_active = True
                if run.added_layers_join:
                    s.model.depth = None
                print0(f"step {done}: the orientation loss ({np.mean(window):.3f} over {JOIN_WINDOW} steps) is below "
                       f"{run.loop_starts_when:g}: every loop start from now on"
                       + (", and the relation heads' supervision" if run.relation_weight else "")
                       + (f", and the {run.added_layers} added LLM layers" if run.added_layers_join else ""))
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
            joined = ({"joined": None if joining else batch_source.own_steps, "window": window}
                      if run.loop_starts_when else {})
            final_dir = save_checkpoint(run.out, done, position, s.wrapped, s.model, s.optimizer, s.scheduler, info,
                                        s.tensor_names, extra={"run": settings_record(run), "trajectory": s.trajectory,
                                                               **joined}, card=model_card(s, done))
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


def model_card(s: Session, step: int) -> str:
    """The checkpoint's README.md: what the model is, what it needs at inference, what it was trained on."""
    run, c = s.run, s.model.config
    needs = {"poses": "a 4x4 camera-to-world pose per frame (`loc3r infer --poses DIR`)",
             "cut3r": "CUT3R's camera tokens (`loc3r infer --cut3r DIR`, a `loc3r convert-cut3r` directory)",
             "none": "the frames only"}[c.prior]
    vocabulary = ("the base's word list (`--init`; words outside it read as unknown)" if run.init_base is not None
                  else "LLaVA-Video's tokenizer" if run.is_7b else "the training data's words (`--init scratch`)")
    data = "; ".join(f"{src.benchmark} {src.root}" + (f" ({src.fraction:g})" if src.fraction < 1 else "")
                     for src in run.sources)
    return f"""---
library_name: loc3r
tags: [loc3r, video-language-model, 3d, localization, situated-qa]
---
# Loc3R-VLM checkpoint: step {step} of {run.out.name}

A Loc3R-VLM model (Qu et al., 2026): from a video of a room, a situation and a question, the answer, the speaker's
position (x, y in metres, with sigma) and facing (36 yaw bins) in the bird's-eye frame of the video's first camera.

| | |
|---|---|
| preset | `{run.preset}` ({sum(p.numel() for p in s.model.parameters()) / 1e6:.1f}M parameters), {c.num_frames} frames of {c.image_size} px |
| camera-token prior | `{c.prior}`: at inference it needs {needs} |
| vocabulary | {vocabulary} |
| recipe | `{run.recipe}`: {step} of {run.steps} steps of {run.batch_size * run.grad_accum} videos, lr {run.lr:g} ({run.schedule}), seed {run.seed} |
| training data | {data} |
| losses | LM + {c.lambda_layout:g} layout + {c.lambda_situation:g} x (position + {c.lambda_orientation:g} orientation) |

All settings: `../../settings.json`; the log: `../../log.jsonl`.

## Use
```bash
loc3r infer --checkpoint THIS_DIR --video my_room.mp4 {"--poses POSES_DIR " if c.prior == "poses" else "--cut3r CUT3R_DIR " if c.prior == "cut3r" else ""}--situation "I am standing next to the bed." --question "What is on my left?"
loc3r eval --checkpoint THIS_DIR --data DATA --split test --out EVAL_DIR
```
"""


def open_run_files(s: Session):
    """Write RUN/settings.json, keep log.jsonl's records up to the step the run starts at, and open it to append."""
    run = s.run
    run.out.mkdir(parents=True, exist_ok=True)
    resolved = {"autocast_resolved": "bf16" if s.model.llm_autocast == torch.bfloat16 else "off"}  # what `auto` ran
    write_json(run.out / "settings.json", settings_record(run) | resolved | {"model": {
        k: v for k, v in s.model.config.to_dict().items() if k not in ("vlm", "base_model_path")}})
    truncate_log(run.out / "log.jsonl", s.start_step)
    return open(run.out / "log.jsonl", "a")


def settings_record(run: TrainConfig) -> dict:
    """A run's resolved settings as JSON values (RUN/settings.json, and stored with every checkpoint)."""
    return {k: str(v) if isinstance(v, Path) else v for k, v in dataclasses.asdict(run).items()}


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
