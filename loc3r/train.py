"""`loc3r train` / `torchrun --nproc_per_node N -m loc3r.train ...`: the training loop.

One code path for one process and for torchrun (DDP, or FSDP2 for the 7B: loc3r.parallel does the wrapping).
AdamW on the trainable parameters (frozen parts per the config), linear warm-up then cosine decay, gradient
clipping, gradient accumulation. Choices that make runs reproducible and resumable:
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
import math
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from loc3r import parallel
from loc3r.checkpoint import (LORA_STATE, latest_checkpoint, load_lora_run, load_trainer_state, prune_checkpoints,
                              save_checkpoint)
from loc3r.data.collate import Collator
from loc3r.data.dataset import SituatedQADataset
from loc3r.errors import Loc3rError
from loc3r.io import atomic_path
from loc3r.model.config import Loc3RConfig
from loc3r.model.loc3r import Loc3R
from loc3r.parallel import print0

# ---------------------------------------------------------------------------------------------------------
# Arguments
# ---------------------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--preset", choices=["tiny", "llava_video_7b"], default="tiny")
    p.add_argument("--base", type=Path, help="local LLaVA-Video-7B-Qwen2 directory (transformers format), for the 7B")
    p.add_argument("--data", type=Path, required=True, help="data root: scans/ and sqa_task/ (ScanNet / SQA3D formats)")
    p.add_argument("--out", type=Path, required=True, help="run directory (checkpoints, log.jsonl)")
    p.add_argument("--steps", type=int, default=1000, help="optimizer steps")
    p.add_argument("--batch-size", type=int, default=8, help="videos per process and micro-batch")
    p.add_argument("--questions-per-video", type=int, default=None,
                   help="questions of one video in a micro-batch, its video computed once and shared by them "
                        "(tiny: 8; 7B and with activation checkpointing: 1)")
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (tiny: 2e-3, 7B: 1e-5 as the paper)")
    p.add_argument("--warmup", type=float, default=0.03, help="warm-up steps, or a fraction of --steps when < 1")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--clip", type=float, default=1.0, help="gradient-norm clipping (0: off)")
    p.add_argument("--frames", type=int, default=None, help="T frames per video (preset default if omitted)")
    p.add_argument("--prior", choices=["poses", "cut3r", "none"], default=None, help="camera-token prior")
    p.add_argument("--cut3r-dim", type=int, default=None,
                   help="width of the CUT3R camera tokens (default: that of the tokens extract-priors cached)")
    p.add_argument("--cut3r-input", choices=["demo", "vlm3r"], default=None,
                   help="frames CUT3R saw (extract-priors --cut3r-input): demo (default) or vlm3r")
    p.add_argument("--no-layout", action="store_true", help="ablation: no layout reconstruction loss")
    p.add_argument("--no-situation", action="store_true", help="ablation: no position / orientation loss")
    p.add_argument("--orientation-sigma", type=float, default=None, help="wrapped-Gaussian sigma (rad)")
    p.add_argument("--lambda-layout", type=float, default=None, help="layout loss weight (paper and 7B: 0.05; tiny: 1)")
    p.add_argument("--lambda-situation", type=float, default=None, help="situation loss weight (paper and 7B: 0.075; tiny: 1)")
    p.add_argument("--situation-start", type=float, default=None,
                   help="geometry first: the situation losses are off for this many steps (or this fraction of "
                        "--steps when < 1), then on (tiny: 0.2, 7B: 0, as the paper)")
    p.add_argument("--lora", type=int, default=None, metavar="R",
                   help="LoRA of rank R (peft) on the LLM's attention and MLP projections instead of full fine-tuning; "
                        "camera projector and heads fully trained; checkpoints hold merged plain weights")
    p.add_argument("--lora-alpha", type=float, default=None, help="LoRA alpha (default 2 R)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--save-every", type=int, default=500, help="checkpoint every N steps (and at the end)")
    p.add_argument("--keep", type=int, default=2, help="checkpoints kept (the newest ones)")
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda:<local rank> if present)")
    p.add_argument("--parallel", choices=["ddp", "fsdp"], default=None, help="default: ddp for tiny, fsdp for 7B")
    p.add_argument("--activation-checkpointing", action="store_true", help="default on for the 7B")
    p.add_argument("--cache-dir", type=Path, default=None, help="per-scene caches (default <data>/cache)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def config_from_args(args) -> Loc3RConfig:
    """The model configuration of a run (preset + overrides)."""
    overrides = {}
    if args.frames is not None:
        overrides["num_frames"] = args.frames
    if args.prior is not None:
        overrides["prior"] = args.prior
    if args.cut3r_dim is not None:
        overrides["cut3r_dim"] = args.cut3r_dim

    if args.no_layout:
        overrides["lambda_layout"] = 0.0
    if args.no_situation:
        overrides["lambda_situation"] = 0.0
    if args.cut3r_input is not None:
        overrides["cut3r_input"] = args.cut3r_input
    if args.orientation_sigma is not None:
        overrides["orientation_sigma_rad"] = args.orientation_sigma
    if args.lambda_layout is not None:
        overrides["lambda_layout"] = args.lambda_layout
    if args.lambda_situation is not None:
        overrides["lambda_situation"] = args.lambda_situation
    if args.preset == "tiny":
        config = Loc3RConfig.tiny(**overrides)
    elif args.base is None:
        raise Loc3rError("--preset llava_video_7b needs --base DIR (a local LLaVA-Video-7B-Qwen2 in transformers format)")
    else:
        config = Loc3RConfig.llava_video_7b(args.base, **overrides)
    if config.prior == "cut3r" and args.cut3r_dim is None:  # the CUT3R's own width, as extract-priors cached it
        from loc3r.priors.cut3r import cached_token_width

        config = dataclasses.replace(config, cut3r_dim=cached_token_width(args.data, config.num_frames))
    return config


def camera_token_source(config: Loc3RConfig, data_root: Path):
    """(scene_id, frame_ids) -> cached CUT3R tokens [T, d], for the 'cut3r' prior; None otherwise."""
    if config.prior != "cut3r":
        return None
    from loc3r.priors.cut3r import cache_path, load_cached_tokens

    def tokens(scene_id: str, frame_ids: np.ndarray) -> np.ndarray:
        cached = load_cached_tokens(data_root, scene_id, len(frame_ids), frame_ids, config.cut3r_input)
        if cached is None:
            raise Loc3rError(f"{data_root}/priors/cut3r: no camera tokens for {scene_id} with T={len(frame_ids)}: "
                             f"run `loc3r extract-priors --cut3r DIR --data {data_root} --frames {len(frame_ids)}`")
        if cached.shape[-1] != config.cut3r_dim:
            raise Loc3rError(f"{cache_path(data_root, scene_id, len(frame_ids))}: camera tokens of width "
                             f"{cached.shape[-1]}, the model's cut3r_dim is {config.cut3r_dim}")
        return cached

    return tokens


def make_dataset(config: Loc3RConfig, data_root: Path, split: str, cache_dir=None) -> SituatedQADataset:
    return SituatedQADataset(data_root, split, config.num_frames, config.image_size, config.frame_grid,
                             cache_dir=cache_dir, camera_tokens=camera_token_source(config, data_root),
                             grid_extent=config.frame_grid_extent, video_fps=config.video_fps)


# ---------------------------------------------------------------------------------------------------------
# Data order, schedule, loss normalisation
# ---------------------------------------------------------------------------------------------------------


def sample_index(position: int, n: int, seed: int) -> int:
    """Dataset index of global sample position `position`: epoch-wise permutations seeded by seed + epoch."""
    epoch, offset = divmod(position, n)
    return int(np.random.default_rng(seed + epoch).permutation(n)[offset])


def micro_batch_indices(position: int, n: int, seed: int, batch_size: int, rank: int, world: int) -> list[int]:
    """Indices of this rank's micro-batch that starts at global position `position`."""
    start = position + rank * batch_size
    return [sample_index(p, n, seed) for p in range(start, start + batch_size)]


def video_groups(scene_ids: list[str], per_video: int, seed: int) -> list[list[int]]:
    """The training units: dataset indices of up to `per_video` questions of one scene's video each (every
    question in exactly one unit; a scene's questions shuffled by `seed`, then cut in order). One question per
    unit, in dataset order, when per_video is 1."""
    if per_video == 1:
        return [[i] for i in range(len(scene_ids))]
    by_scene: dict[str, list[int]] = {}
    for i, scene_id in enumerate(scene_ids):
        by_scene.setdefault(scene_id, []).append(i)
    units = []
    for k, scene_id in enumerate(sorted(by_scene)):
        indices = np.random.default_rng([seed, k]).permutation(by_scene[scene_id]).tolist()
        units += [indices[j:j + per_video] for j in range(0, len(indices), per_video)]
    return units


def lr_factor(step: int, total: int, warmup: int) -> float:
    """Linear warm-up to 1 over `warmup` steps, then cosine decay to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def loss_denominators(batches: list[dict], info: parallel.DistInfo) -> dict[str, torch.Tensor]:
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


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}


# ---------------------------------------------------------------------------------------------------------
# The loop
# ---------------------------------------------------------------------------------------------------------


def train(args) -> Path:
    """Run (or resume) training; returns the final checkpoint directory."""
    info = parallel.compute_init(args.device)
    torch.manual_seed(args.seed)
    config = config_from_args(args)
    is_7b = args.preset == "llava_video_7b"
    lr = args.lr if args.lr is not None else (1e-5 if is_7b else 2e-3)
    strategy = args.parallel or ("fsdp" if is_7b else "ddp")
    start_step, position = 0, 0
    resume_dir = latest_checkpoint(args.out) if args.resume else None
    if args.resume and resume_dir is None:
        print0(f"--resume: no checkpoint in {args.out}, starting from scratch")
    lora_resume = resume_dir is not None and (resume_dir / LORA_STATE).is_file()
    if resume_dir is not None and bool(args.lora) != lora_resume:
        raise Loc3rError(f"{resume_dir}: " + ("a --lora run: resume it with the same --lora" if lora_resume else
                                              "not a --lora run: resume it without --lora"))
    if resume_dir is not None and not lora_resume:
        model = Loc3R.from_pretrained(resume_dir)
        config = model.config
    else:  # a LoRA run resumes from its initial model (same seed), whose frozen weights it never changed
        model = Loc3R(config)
    if args.lora:
        model.add_lora(args.lora, args.lora_alpha)
        if lora_resume:
            load_lora_run(resume_dir, model)
    model.to(info.device)
    dataset = make_dataset(config, args.data, "train", args.cache_dir)
    if len(dataset) == 0:
        raise Loc3rError(f"{args.data}: the train split has no questions")
    dataset.prepare(info.rank, info.world_size)  # each rank builds its share of the cache files (atomic writes)
    if info.distributed:
        dist.barrier()
    collate = Collator(model.tokenizer, config)
    checkpointing = args.activation_checkpointing or is_7b
    per_video = args.questions_per_video or (1 if checkpointing else 8)
    if per_video < 1:
        raise Loc3rError(f"--questions-per-video must be >= 1, got {per_video}")
    if per_video > 1 and checkpointing:  # a recomputed layer would write its keys / values into the shared cache again
        raise Loc3rError("--questions-per-video > 1 (a shared video prefix) does not combine with activation "
                         "checkpointing: pass --questions-per-video 1")
    units = video_groups([r.scene_id for r in dataset.records], per_video, args.seed)
    start = args.situation_start if args.situation_start is not None else (0.0 if is_7b else 0.2)
    situation_start = int(start * args.steps) if start < 1 else int(start)

    tensor_names = list(model.checkpoint_tensors())
    wrapped = parallel.wrap_model(model, info, strategy, checkpointing)
    params = model.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=lr, weight_decay=args.weight_decay, betas=(0.9, 0.999))
    warmup = int(args.warmup * args.steps) if args.warmup < 1 else int(args.warmup)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, args.steps, max(1, warmup)))
    if resume_dir is not None:
        start_step, position = load_trainer_state(resume_dir, wrapped, optimizer, scheduler, info)
        for group, base in zip(optimizer.param_groups, scheduler.base_lrs):  # this run's schedule (--steps may differ)
            group["lr"] = base * scheduler.lr_lambdas[0](start_step)
        print0(f"resumed from {resume_dir} at step {start_step}")

    args.out.mkdir(parents=True, exist_ok=True)
    if info.is_main:
        truncate_log(args.out / "log.jsonl", start_step)
    log_file = open(args.out / "log.jsonl", "a") if info.is_main else None
    step_samples = args.batch_size * info.world_size * args.grad_accum  # units (videos with their questions)
    n_params = sum(p.numel() for p in model.parameters())
    print0(f"training {args.preset} ({n_params / 1e6:.1f}M parameters, {sum(p.numel() for p in params) / 1e6:.1f}M "
           f"trainable) on {len(dataset)} questions, {info.world_size} process(es), {step_samples} videos/step with "
           f"up to {per_video} questions each")
    bar = None
    if info.is_main and not args.quiet:
        from tqdm import tqdm
        bar = tqdm(total=args.steps, initial=start_step, desc="train", dynamic_ncols=True, file=sys.stdout)

    final_dir = None
    wrapped.train()
    t_last, questions_since = time.perf_counter(), 0
    for step in range(start_step, args.steps):
        batches = []
        for k in range(args.grad_accum):
            idx = micro_batch_indices(position + k * args.batch_size * info.world_size, len(units), args.seed,
                                      args.batch_size, info.rank, info.world_size)
            groups = [[dataset[i] for i in units[u]] for u in idx]
            batch = collate.grouped(groups) if per_video > 1 else collate([g[0] for g in groups])
            questions_since += len(batch["question_id"])
            batches.append(to_device(batch, info.device))
        denominators = loss_denominators(batches, info)
        sums = {}
        for k, batch in enumerate(batches):
            batch["loss_denominators"] = denominators
            batch["situation_scale"] = 0.0 if step < situation_start else 1.0
            sync = k == len(batches) - 1 or not info.distributed or strategy != "ddp"
            ctx = wrapped.no_sync() if not sync else contextlib.nullcontext()
            with ctx:
                out = wrapped(batch)
                out.loss.backward()
            for name, value in {"loss": out.loss, **out.losses}.items():
                sums[name] = sums.get(name, 0.0) + float(value.detach())
        grad_norm = torch.nn.utils.clip_grad_norm_(params, args.clip) if args.clip > 0 else None
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        position += step_samples
        done = step + 1

        if done % args.log_every == 0 or done == args.steps:
            now = time.perf_counter()
            record = {"step": done, "lr": scheduler.get_last_lr()[0],
                      **{k: parallel.all_reduce_mean(v, info) for k, v in sums.items()},
                      "grad_norm": float(grad_norm) if grad_norm is not None else None,
                      "questions_per_s": questions_since / (now - t_last)}
            t_last, questions_since = now, 0
            if log_file is not None:
                log_file.write(json.dumps(record) + "\n")
                log_file.flush()
            if bar is not None:
                bar.set_postfix({k: f"{record[k]:.3g}" for k in ("loss", "lm", "layout", "position", "orientation",
                                                                   "questions_per_s")})
        if bar is not None:
            bar.update(1)
        if done % args.save_every == 0 or done == args.steps:
            final_dir = save_checkpoint(args.out, done, position, wrapped, model, optimizer, scheduler, info,
                                        tensor_names, extra={"args": {k: str(v) for k, v in vars(args).items()}})
            if info.is_main:
                prune_checkpoints(args.out, args.keep)
    if bar is not None:
        bar.close()
    if log_file is not None:
        log_file.close()
    if final_dir is None:
        final_dir = latest_checkpoint(args.out)
    print0(f"checkpoint: {final_dir}")
    return final_dir


def run(args: argparse.Namespace) -> int:
    try:
        train(args)
    finally:
        parallel.compute_cleanup()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Entry point of `python -m loc3r.train` (what torchrun launches)."""
    from loc3r.cli import main as cli_main

    return cli_main(["train", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
