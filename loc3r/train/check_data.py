"""`loc3r check-data`: check a whole training mixture in seconds, before a run spends hours on it: no GPU, no frame
cache built, no image read.

It takes the `--data` specs of `loc3r train` with its recipe, preset and sizing flags (resolved by TrainConfig), reads
the question files of each source's train split and of the evaluation splits present, and checks them with
loc3r.data.check (what it reads of the scans and how: there): questions per source and split, the situated ones and
those the run draws; scenes missing under the data root, scans a cache build would stop on, scans with fewer valid
poses than the preset's frames, VSI-Bench videos missing, scenes without cached CUT3R tokens (cut3r prior); situations
outside their scene (a warning). Then the run: tokens per sample (the video block, Loc3RConfig.video_placeholder_len,
and the prompt's text with its answer, counted by the collate's own tokenization on up to TEXT_SAMPLE questions a
split: the tiny preset's word-level tokenizer, the 7B's from --base, without which its text is not counted and its
vision geometry is LLaVA-Video-7B's published one), its training units and optimizer steps (TrainConfig.sized over
--world-size processes), and the frame cache's size on disk (one uncompressed SceneCache a video: loc3r.data.cache).

Exit status 2 with the problems when anything would stop `train` (on the train split) or `eval` (on a split present);
0 otherwise, warnings included. `train` runs the fast part of the same check on its train split first
(check_training_set): it fails in seconds with one line naming the first problems.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import ClassVar

import numpy as np

from loc3r.command import add_dataclass_arguments, dataclass_from_args
from loc3r.constants import NO_SITUATION
from loc3r.data.cache import SceneCache
from loc3r.data.check import EVAL_SPLITS, OUTSIDE_MARGIN_M, SHOWN, Scans, SplitReport, check_split, question_file
from loc3r.data.dataset import LoopStarts, cache_nbytes, record_situated
from loc3r.data.scannet import uniform_indices
from loc3r.data.sqa3d import read_sqa3d
from loc3r.errors import Loc3rError
from loc3r.io import write_json
from loc3r.model.config import PRIORS, Loc3RConfig
from loc3r.model.processor import Collator, MixtureDataset, Source, benchmark_records, make_training_set
from loc3r.train.config import PRESETS, TrainConfig, with_cached_cut3r_width
from loc3r.train.order import video_groups
from loc3r.train.recipes import RECIPES

TEXT_SAMPLE = 500  # questions a split whose prompt is tokenized (seeded choice)
# LLaVA-Video-7B-Qwen2's vision tower (SigLIP-so400m, 384 px, 14 px patches): the 7B's token grid without --base
LLAVA_VIDEO_7B_VISION = {"vision_config": {"image_size": 384, "patch_size": 14}}


@dataclass
class CheckDataConfig:
    """The flags of `loc3r check-data`: train's data and the settings that size its run (TrainConfig's fields)."""

    data: list[str]  # data: DIR (SQA3D), or name=DIR[:fraction] of sqa3d, scanqa, msqa, vsibench; repeat to mix
    recipe: str | None = None  # the run's recipe (default: the preset's)
    preset: str | None = None  # model: tiny | llava_video_7b (default: the recipe's, else tiny)
    base: Path | None = None  # the 7B's LLaVA-Video directory: its tokenizer counts the text (else it is not counted)
    frames: int | None = None  # T frames per video (tiny 8, 7B 32)
    prior: str | None = None  # camera-token prior: poses | cut3r | none (tiny poses, 7B cut3r)
    cut3r: Path | None = None  # converted CUT3R directory: VSI-Bench's videos under the cut3r prior (as train)
    loop_starts: int | None = None  # videos of each looped scan (train --loop-starts)
    questions_per_video: int | None = None  # questions of a video in one training unit
    batch_size: int | None = None  # videos per process and micro-batch
    grad_accum: int | None = None  # micro-batches per optimizer step
    global_batch: int | None = None  # videos per optimizer step
    steps: int | None = None  # optimizer steps (else from --epochs)
    epochs: float | None = None  # passes over the training videos
    seed: int = 0  # data order (the fractions' subsamples)
    world_size: int = 1  # processes of the run (GPUs over all nodes)
    json: Path | None = None  # also write the report as JSON to this file

    CHOICES: ClassVar[dict] = {"recipe": tuple(RECIPES), "preset": PRESETS, "prior": PRIORS}

    @classmethod
    def help_defaults(cls) -> dict[str, str]:
        names = {f.name for f in dataclasses.fields(cls)}
        return {k: v for k, v in TrainConfig.help_defaults().items() if k in names}

    def train_config(self) -> TrainConfig:
        """The run these flags describe (its recipe applied), as `loc3r train` would resolve it."""
        if self.world_size < 1:
            raise Loc3rError(f"--world-size must be >= 1, got {self.world_size}")
        own = ("world_size", "json")
        shared = {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name not in own}
        return TrainConfig(out=Path("check-data"), **shared)


def count_text_tokens(report: SplitReport, records: list, collator: Collator | None, seed: int) -> None:
    """Prompt + answer tokens (the video run excluded) of up to TEXT_SAMPLE of the records, by the collate's own
    tokenization; a text the collate refuses (empty, longer than max_text_tokens) is a problem."""
    if collator is None or not records:
        return
    c = collator.config
    chosen = np.random.default_rng(seed).permutation(len(records))[:TEXT_SAMPLE]
    times = uniform_indices(300, c.num_frames) / c.video_fps  # timestamps of a 10 s video: the time instruction
    counts = []
    for i in sorted(chosen.tolist()):
        r = records[i]
        sample = SimpleNamespace(scene_id=r.scene_id, question_id=r.question_id, question=r.question,
                                 situation=r.situation if record_situated(r) else NO_SITUATION,
                                 answer=r.answers[0] if r.answers else "", frame_times=times, duration_s=10.0)
        try:
            counts.append(len(collator.tokenize(sample)[0]) - c.video_placeholder_len)
        except Loc3rError as e:
            report.broken.append(str(e))
    if counts:
        report.text_tokens = {"mean": float(np.mean(counts)), "max": int(max(counts)), "counted": len(counts)}


def read_split(benchmark: str, root: Path, split: str) -> list:
    return read_sqa3d(root, split) if benchmark == "sqa3d" else benchmark_records(benchmark, root, split)


# ---------------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------------


def token_file(config: Loc3RConfig):
    """(root, scene) -> where the cut3r prior needs the scene's cached camera tokens; None for the other priors."""
    if config.prior != "cut3r":
        return None
    from loc3r.priors.cut3r import token_cache_path

    return lambda root, scene_id: token_cache_path(root, scene_id, config.num_frames)


def data_config(run: TrainConfig) -> Loc3RConfig:
    """The run's model configuration as far as its data needs it (frames, image size, token grid, prior): the tiny
    preset's, the 7B's from --base, else LLaVA-Video-7B's published vision geometry with the 7B preset's settings;
    under the cut3r prior the camera tokens' width of the cache where there is one (as model_config; a missing
    cache is reported as a problem of its own)."""
    overrides = run.model_overrides()
    if run.preset == "tiny":
        config = Loc3RConfig.tiny(**overrides)
    elif run.base is not None:
        config = Loc3RConfig.llava_video_7b(run.base, **overrides)
    else:
        paper = {"vlm": LLAVA_VIDEO_7B_VISION, "prior": "cut3r", "num_frames": 32, "newline_layout": "grid",
                 "pool_mode": "bilinear", "time_instruction": True}
        config = Loc3RConfig(**{**paper, **overrides})
    try:
        return with_cached_cut3r_width(run, config)
    except Loc3rError:  # no cached tokens: check_split reports them
        return config


def text_collator(run: TrainConfig, config: Loc3RConfig) -> Collator | None:
    """The collate of the run's tokenizer: the tiny preset's word-level one (one token a word whatever its
    vocabulary), the 7B's from --base with the situation tokens; None for the 7B without --base."""
    from loc3r.model.tokenizer import add_situation_tokens, build_tiny_tokenizer, load_tokenizer

    if run.preset == "tiny":
        return Collator(build_tiny_tokenizer([]), config)
    if run.base is None:
        return None
    tokenizer = load_tokenizer(run.base)
    add_situation_tokens(tokenizer)
    return Collator(tokenizer, config)


def training_parts(dataset, sources: list[Source]) -> list[tuple[Source, list]]:
    """(source, its train records) of a training set (make_training_set)."""
    if isinstance(dataset, MixtureDataset):
        return [(source, part.records) for source, part in dataset.parts]
    return [(sources[0], (dataset.dataset if isinstance(dataset, LoopStarts) else dataset).records)]


def cache_bytes(config: Loc3RConfig) -> int:
    """Bytes of one video's scene cache (loc3r.data.cache: uncompressed arrays)."""
    T, S, G = config.num_frames, config.image_size, config.tokens_per_frame
    return cache_nbytes(SceneCache(
        frame_ids=np.zeros(T, np.int64), frames=np.zeros((T, S, S, 3), np.uint8), c2w=np.zeros((T, 4, 4)),
        world_to_bev=np.zeros((4, 4)), c2bev=np.zeros((T, 4, 4), np.float32), layout_xy=np.zeros((T, G, 2), np.float32),
        layout_valid=np.zeros((T, G), bool), mesh_center=np.zeros(3), n_invalid_pixels=0, n_invalid_poses=0,
        last_frame_id=0))


def check_data(options: CheckDataConfig) -> dict:
    """The whole report (module docstring): {"run": ..., "splits": [SplitReport as dicts], "problems", "warnings"}."""
    started = time.perf_counter()
    run = options.train_config()
    config = data_config(run)
    collator = text_collator(run, config)
    scans, problems, reports, build_error = Scans(config.num_frames), [], [], None
    try:
        dataset = make_training_set(config, run.sources, run.cache_dir, run.seed, run.loop_starts, run.cut3r)
        train = {(s.benchmark, s.root): records for s, records in training_parts(dataset, run.sources)}
    except Loc3rError as e:  # a train split unreadable or absent (each source is read on its own below), or a mix
        dataset, train, build_error = None, {}, f"train: {e}"  # train refuses
    for source in run.sources:
        for split in ("train", *EVAL_SPLITS[source.benchmark]):
            report = SplitReport(source.benchmark, str(source.root), split)
            if split == "train" and (source.benchmark, source.root) in train:
                records = train[source.benchmark, source.root]
            elif not question_file(source.benchmark, source.root, split).is_file():
                if split == "train":
                    report.broken.append(f"no train split ({question_file(source.benchmark, source.root, split)} "
                                         "not found)")
                    reports.append(report)
                continue
            else:
                try:
                    records = read_split(source.benchmark, source.root, split)
                except Loc3rError as e:
                    report.broken.append(str(e))
                    reports.append(report)
                    continue
            check_split(report, records, scans, token_file(config))
            count_text_tokens(report, records, collator, run.seed)
            if split == "train" and not records:
                report.broken.append("no questions")
            reports.append(report)
    if dataset is not None:
        for row, report in zip(dataset.manifest() if isinstance(dataset, MixtureDataset) else [{}],
                               [r for r in reports if r.split == "train"]):
            report.used = row.get("questions", len(dataset) // run.loop_starts)
    if build_error is not None and not any(r.broken for r in reports if r.split == "train"):
        problems.append(build_error)  # not a source's split: the mixture itself (e.g. --loop-starts on a mixture)
    summary = run_summary(run, config, options.world_size, dataset, reports, problems)
    problems = problems + [p for r in reports for p in r.problems]
    warnings = [f"{r.benchmark} {r.split}: {len(r.outside)} situations more than {OUTSIDE_MARGIN_M:g} m outside their "
                "scan's mesh box" for r in reports if r.outside]
    return {"run": summary, "splits": [dataclasses.asdict(r) for r in reports], "problems": problems,
            "warnings": warnings, "seconds": round(time.perf_counter() - started, 2)}


def run_summary(run: TrainConfig, config: Loc3RConfig, world_size: int, dataset, reports: list[SplitReport],
                problems: list[str]) -> dict:
    """Tokens per sample, training units and steps, and the frame cache's size."""
    text_max = max((r.text_tokens["max"] for r in reports if r.text_tokens), default=None)
    summary = {"preset": run.preset, "recipe": run.recipe, "frames": config.num_frames, "prior": config.prior,
               "image_size": config.image_size, "vision_tokens_per_frame": config.tokens_per_frame,
               "video_tokens": config.video_placeholder_len, "text_tokens_max": text_max,
               "tokens_per_sample_max": None if text_max is None else config.video_placeholder_len + text_max,
               "world_size": world_size, "units": None, "steps": None}
    if dataset is not None and len(dataset):
        units = len(video_groups(dataset.video_keys, run.questions_per_video, run.seed, run.loop_starts))
        try:
            sized = run.sized(units // run.loop_starts, world_size)
            summary.update(units=units // run.loop_starts, steps=sized.steps, grad_accum=sized.grad_accum,
                           batch_size=run.batch_size, questions_per_video=run.questions_per_video)
        except Loc3rError as e:
            problems.append(f"run: {e}")
    videos = {(r.root, s) for r in reports if r.split == "train" for s in r.scene_ids}
    eval_videos = {(r.root, s) for r in reports if r.split != "train" for s in r.scene_ids} - videos
    one = cache_bytes(config)
    summary.update(cache_bytes_per_video=one, cache_videos_train=len(videos) * run.loop_starts,
                   cache_videos_eval=len(eval_videos),
                   cache_bytes=one * (len(videos) * run.loop_starts + len(eval_videos)))
    return summary


# ---------------------------------------------------------------------------------------------------------
# train's fast path
# ---------------------------------------------------------------------------------------------------------


def check_training_set(run: TrainConfig, config: Loc3RConfig, dataset) -> None:
    """What would stop `train` on its training set (missing scenes and videos, scans a cache build fails on, too few
    valid poses, no questions), checked before the model is built: one line naming the first problems."""
    scans, problems = Scans(config.num_frames), []
    for source, records in training_parts(dataset, run.sources):
        report = SplitReport(source.benchmark, str(source.root), "train")
        check_split(report, records, scans, token_file(config), full=False)
        if not records:
            report.broken.append("no questions")
        problems += report.problems
    if problems:
        more = f" (and {len(problems) - SHOWN} more)" if len(problems) > SHOWN else ""
        data = " ".join(f"--data {d}" for d in run.data)
        raise Loc3rError(f"the training data would stop this run: {'; '.join(problems[:SHOWN])}{more}; "
                         f"`loc3r check-data {data}` lists every problem")


# ---------------------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------------------


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return ""


def format_report(report: dict) -> str:
    """The report as text: a table per source, the run, the problems and the warnings."""
    lines, sources = [], {}
    for r in report["splits"]:
        sources.setdefault((r["benchmark"], r["root"]), []).append(r)
    header = f"  {'split':<12}{'questions':>10}{'used':>8}{'situated':>10}{'scenes':>8}{'missing':>9}" \
             f"{'few poses':>11}{'outside':>9}{'text tokens':>14}"
    for (benchmark, root), rows in sources.items():
        lines += [f"{benchmark} {root}", header]
        for r in rows:
            text = f"{r['text_tokens']['mean']:.0f} / {r['text_tokens']['max']}" if r["text_tokens"] else "-"
            used = "-" if r["used"] is None else str(r["used"])
            lines.append(f"  {r['split']:<12}{r['questions']:>10}{used:>8}{r['situated']:>10}{r['scenes']:>8}"
                         f"{len(r['missing_scenes']):>9}{len(r['few_poses']):>11}{len(r['outside']):>9}{text:>14}")
        lines.append("")
    s = report["run"]
    lines.append(f"run: preset {s['preset']}, recipe {s['recipe']}, {s['frames']} frames of {s['image_size']} px, "
                 f"prior {s['prior']}")
    text = (f" + text up to {s['text_tokens_max']} = up to {s['tokens_per_sample_max']} tokens a sample"
            if s["text_tokens_max"] is not None else " + text (not counted: pass --base for the 7B's tokenizer)")
    lines.append(f"  tokens: video {s['video_tokens']} ({s['vision_tokens_per_frame']} vision tokens a frame){text}")
    if s["steps"] is not None:
        lines.append(f"  {s['units']} training units (videos with up to {s['questions_per_video']} questions) -> "
                     f"{s['steps']} optimizer steps of {s['batch_size']} x {s['world_size']} process(es) x "
                     f"{s['grad_accum']} micro-batches")
    else:
        lines.append("  optimizer steps: unknown (the training set cannot be built: see the problems)")
    lines.append(f"  frame cache: {s['cache_videos_train']} training videos + {s['cache_videos_eval']} more for "
                 f"evaluation x {human_bytes(s['cache_bytes_per_video'])} = {human_bytes(s['cache_bytes'])}")
    lines.append("")
    if report["problems"]:
        lines.append(f"PROBLEMS ({len(report['problems'])}; each stops a run):")
        lines += [f"  - {p}" for p in report["problems"]]
        for r in report["splits"]:
            for title, items in (("missing", r["missing_scenes"]), ("too few valid poses", r["few_poses"])):
                if items:
                    unit = "questions" if title == "missing" else "valid poses of frames"
                    lines.append(f"  {r['benchmark']} {r['split']}, {title} ({unit}):")
                    lines += wrapped([f"{k} ({v})" for k, v in items.items()])
    else:
        lines.append("no problems: the data would not stop a run")
    if report["warnings"]:
        lines.append("WARNINGS (a run goes on):")
        lines += [f"  - {w}" for w in report["warnings"]]
        for r in report["splits"]:
            lines += [f"    {o}" for o in r["outside"][:5]]
            if len(r["outside"]) > 5:
                lines.append(f"    ... {len(r['outside']) - 5} more (--json lists them all)")
    lines.append(f"checked in {report['seconds']:.1f} s")
    return "\n".join(lines)


def wrapped(items: list[str], width: int = 116) -> list[str]:
    """Items joined by ", " in lines of at most `width` characters, never breaking an item."""
    lines = [""]
    for item in items:
        if lines[-1] and len(lines[-1]) + 2 + len(item) > width:
            lines.append("")
        lines[-1] += (", " if lines[-1] else "") + item
    return ["    " + line for line in lines]


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(p, CheckDataConfig)


def run(args: argparse.Namespace) -> int:
    options = dataclass_from_args(CheckDataConfig, args)
    report = check_data(options)
    print(format_report(report))
    if options.json is not None:
        write_json(options.json, report)
    return 2 if report["problems"] else 0
