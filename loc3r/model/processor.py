"""The model's processor: the data set of a model configuration (`make_dataset`, `make_benchmark_dataset`,
`make_training_set`) and batch building, list[Sample] -> a typed `Batch` for Loc3R.forward / Loc3R.generate
(`Collator`).

The user turn is `<video>\\n{situation} <Pos> <Ori> {question}` (the situation tokens between situation and
question, paper Sec. 3.3), with config.time_instruction `<video>\\n{time instruction}\\n{situation} ...`
(LLaVA-Video's training prompt, `time_instruction`), formatted with the tokenizer's own chat template (ChatML for
LLaVA-Video, a minimal ChatML for the tiny tokenizer); the single <video> is then expanded into the placeholder run of
`config.video_placeholder_len` tokens. Training sequences append the answer and the end-of-turn token, which
are the only labelled tokens, and pad on the right; generation prompts pad on the left.

Batch fields (B samples, T frames, S pixels, n = G vision tokens per frame, L tokens):
  input_ids [B, L], attention_mask [B, L], labels [B, L] (training only, -100 = no loss),
  pixel_values_videos [B, T, 3, S, S] float32 normalised, camera_poses_bev [B, T, 4, 4],
  camera_tokens [B, T, d] (when the samples carry cached prior tokens), layout_xy [B, T, G, 2],
  layout_valid [B, T, G] bool, pos_index / ori_index [B], position_xy [B, 2], yaw_rad [B],
  has_situation [B] bool, question_id [B].

`Collator.grouped` builds a batch of several questions per video, for the model's shared-prefix pass (the
video part of the LLM computed once per video, its keys / values shared by that video's questions). Every
prompt is split after its video run: the part before (the same for every question) is the video's *prefix*,
the rest its question's *suffix*. Fields: the video-level ones above for Bv videos, with input_ids /
attention_mask [Bv, Lp] holding the prefix; and per question (Bq of them) suffix_ids, suffix_mask, labels
[Bq, Ls] (right-padded; left-padded for generation, so that every row's last token is real), pos_index / ori_index
into the suffix, position_xy, yaw_rad, has_situation, question_id, and video_index [Bq] (the row of its video).
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from loc3r.constants import END_OF_TURN, IGNORE_INDEX, ORI_TOKEN, POS_TOKEN, VIDEO_TOKEN
from loc3r.data.benchmarks import (QARecord, msqa_path, read_msqa, read_scanqa, read_vsibench, scanqa_path,
                                   vsibench_rows_path)
from loc3r.data.dataset import LoopStarts, SituatedQADataset, VideoQADataset, record_situated
from loc3r.data.sample import Sample
from loc3r.errors import Loc3rError
from loc3r.model.config import Loc3RConfig


@dataclass
class Batch:
    """A batch of the model (Collator), shapes with B questions, T frames, S pixels, G vision tokens a frame.
    Several questions per video (Collator.grouped): input_ids / attention_mask hold the Bv video prefixes and the
    video tensors are per video; the questions' texts are in suffix_ids / suffix_mask and video_index [B] names
    each one's video."""

    input_ids: torch.Tensor  # [B, L] token ids (grouped: [Bv, Lp] the video prefixes)
    attention_mask: torch.Tensor  # [B, L] 1 for real tokens
    pixel_values_videos: torch.Tensor  # [B or Bv, T, 3, S, S] float32, normalised for the vision tower
    camera_poses_bev: torch.Tensor  # [B or Bv, T, 4, 4] camera-to-BEV poses (the poses prior)
    layout_xy: torch.Tensor  # [B or Bv, T, G, 2] BEV targets of the vision tokens
    layout_valid: torch.Tensor  # [B or Bv, T, G] bool
    pos_index: torch.Tensor  # [B] position of <Pos> (grouped: in the suffix)
    ori_index: torch.Tensor  # [B] position of <Ori>
    position_xy: torch.Tensor  # [B, 2] speaker position target, metres
    yaw_rad: torch.Tensor  # [B] speaker yaw target
    has_situation: torch.Tensor  # [B] bool, whether position / yaw are supervised
    question_id: torch.Tensor  # [B]
    labels: torch.Tensor | None = None  # [B, L] (grouped: [B, Ls]) LM targets, -100 = no loss; None for generation
    camera_tokens: torch.Tensor | None = None  # [B or Bv, T, d] cached prior tokens (the cut3r prior)
    suffix_ids: torch.Tensor | None = None  # [B, Ls] grouped: each question's tokens after its video's prefix
    suffix_mask: torch.Tensor | None = None  # [B, Ls]
    video_index: torch.Tensor | None = None  # [B] grouped: the row of each question's video
    token_words: torch.Tensor | None = None  # [B or Bv, T, G, K] word ids of the vision tokens (base pretraining)
    situation_words: torch.Tensor | None = None  # [B, 2] words <Pos> / <Ori> ground to (base pretraining)
    object_xy: torch.Tensor | None = None  # [B, 2] BEV place of a relation question's object, NaN none (tiny only)

    @property
    def grouped(self) -> bool:
        return self.video_index is not None

    def to(self, device) -> "Batch":
        return Batch(**{f.name: None if (v := getattr(self, f.name)) is None else v.to(device) for f in fields(self)})

    def pin_memory(self) -> "Batch":  # DataLoader(pin_memory=True) calls this on custom types
        return Batch(**{f.name: None if (v := getattr(self, f.name)) is None else v.pin_memory() for f in fields(self)})


def time_instruction(frame_times, duration_s: float) -> str:
    """LLaVA-Video's time instruction (LLaVA-NeXT llava/train/train.py with add_time_instruction; lmms-eval's
    llava_vid asks the same): the video's length, the number of sampled frames and their timestamps."""
    times = ",".join(f"{t:.2f}s" for t in np.asarray(frame_times, np.float64))
    return (f"The video lasts for {duration_s:.2f} seconds, and {len(frame_times)} frames are uniformly sampled "
            f"from it. These frames are located at {times}.Please answer the following questions related to this "
            "video.")


class Collator:
    def __init__(self, tokenizer: PreTrainedTokenizerBase, config: Loc3RConfig, for_generation: bool = False):
        self.tokenizer, self.config, self.for_generation = tokenizer, config, for_generation
        self.video_id, self.pos_id, self.ori_id = tokenizer.convert_tokens_to_ids([VIDEO_TOKEN, POS_TOKEN, ORI_TOKEN])
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
        self.mean = torch.tensor(config.image_mean).view(1, 3, 1, 1)
        self.std = torch.tensor(config.image_std).view(1, 3, 1, 1)

    def check_text(self, situation: str, question: str, where: str) -> None:
        """An empty situation or question, or a pair longer than max_text_tokens: one line naming `where`."""
        if not situation.strip() or not question.strip():
            raise Loc3rError(f"{where}: empty situation or question")
        n_text = len(self.tokenizer(f"{situation} {question}", add_special_tokens=False).input_ids)
        if n_text > self.config.max_text_tokens:
            raise Loc3rError(f"{where}: situation + question are {n_text} tokens, more than "
                             f"max_text_tokens={self.config.max_text_tokens}")

    def tokenize(self, sample: Sample) -> tuple[list[int], list[int]]:
        """Token ids of one sample (video run expanded) and their labels."""
        where = f"{sample.scene_id} question {sample.question_id}"
        self.check_text(sample.situation, sample.question, where)
        user = f"{sample.situation} {POS_TOKEN} {ORI_TOKEN} {sample.question}"
        if self.config.time_instruction:
            if sample.frame_times is None or sample.duration_s is None:
                raise Loc3rError(f"{where}: the model takes LLaVA-Video's time instruction, the sample has no "
                                 "frame timestamps")
            user = f"{time_instruction(sample.frame_times, sample.duration_s)}\n{user}"
        user = f"{VIDEO_TOKEN}\n{user}"
        prompt = self.tokenizer.apply_chat_template([{"role": "user", "content": user}], tokenize=False,
                                                    add_generation_prompt=True)
        ids = self.tokenizer(prompt, add_special_tokens=False).input_ids
        if [ids.count(t) for t in (self.video_id, self.pos_id, self.ori_id)] != [1, 1, 1]:
            raise Loc3rError(f"{where}: the text itself contains {VIDEO_TOKEN}, {POS_TOKEN} or {ORI_TOKEN}")
        v = ids.index(self.video_id)
        ids = ids[:v] + [self.video_id] * self.config.video_placeholder_len + ids[v + 1:]
        labels = [IGNORE_INDEX] * len(ids)
        if not self.for_generation:
            answer = self.tokenizer(sample.answer.strip() + END_OF_TURN, add_special_tokens=False).input_ids
            ids, labels = ids + answer, labels + answer
        return ids, labels

    def check(self, s: Sample) -> None:
        c, where = self.config, f"{s.scene_id} question {s.question_id}"
        T, S, G = c.num_frames, c.image_size, c.tokens_per_frame
        if s.frames.shape != (T, S, S, 3) or s.frames.dtype != np.uint8:
            raise Loc3rError(f"{where}: frames are {s.frames.dtype} {tuple(s.frames.shape)}, the model takes uint8 "
                             f"{(T, S, S, 3)} (num_frames={T}, image_size={S})")
        if s.camera_poses_bev.shape != (T, 4, 4):
            raise Loc3rError(f"{where}: camera_poses_bev has shape {tuple(s.camera_poses_bev.shape)}, "
                             f"expected {(T, 4, 4)}")
        if s.layout_xy.shape != (T, G, 2) or s.layout_valid.shape != (T, G):
            raise Loc3rError(f"{where}: layout targets have shape {tuple(s.layout_xy.shape)}, expected {(T, G, 2)} "
                             f"(build them with config.frame_grid={c.frame_grid})")
        if s.token_words is not None and (s.token_words.ndim != 3 or s.token_words.shape[:2] != (T, G)):
            raise Loc3rError(f"{where}: token_words have shape {tuple(s.token_words.shape)}, expected ({T}, {G}, K)")
        if s.camera_tokens is not None and (s.camera_tokens.ndim != 2 or s.camera_tokens.shape[0] != T):
            raise Loc3rError(f"{where}: camera_tokens have shape {tuple(s.camera_tokens.shape)}, expected ({T}, d)")

    def video_tensors(self, samples: list[Sample]) -> dict[str, torch.Tensor]:
        """The per-video tensors of samples (frames, poses, layout targets, cached prior tokens)."""
        frames = torch.from_numpy(np.stack([s.frames for s in samples]))  # [B, T, S, S, 3] uint8
        pixels = frames.permute(0, 1, 4, 2, 3).float() / 255.0  # [B, T, 3, S, S]
        out = {
            "pixel_values_videos": (pixels - self.mean) / self.std,
            "camera_poses_bev": torch.from_numpy(np.stack([s.camera_poses_bev for s in samples]).astype(np.float32)),
            "layout_xy": torch.from_numpy(np.stack([s.layout_xy for s in samples]).astype(np.float32)),
            "layout_valid": torch.from_numpy(np.stack([s.layout_valid for s in samples]).astype(bool)),
        }
        out.update(optional_tensors(samples, (("camera_tokens", "cached camera tokens", np.float32),
                                              ("token_words", "vision-token words", np.int64))))
        return out

    @staticmethod
    def question_tensors(samples: list[Sample]) -> dict[str, torch.Tensor]:
        """The per-question targets of samples."""
        return {
            "position_xy": torch.from_numpy(np.stack([s.position_xy for s in samples]).astype(np.float32)),
            "yaw_rad": torch.tensor([float(s.yaw_rad) for s in samples], dtype=torch.float32),
            "has_situation": torch.tensor([bool(s.has_situation) for s in samples]),
            "question_id": torch.tensor([int(s.question_id) for s in samples], dtype=torch.long),
            **optional_tensors(samples, (("situation_words", "situation words", np.int64),
                                         ("object_xy", "object places", np.float32))),
        }

    def grouped(self, groups: list[list[Sample]]) -> Batch:
        """A batch of len(groups) videos, each with its questions (samples of one video: same scene and frames);
        layout in the module docstring."""
        prefix, suffixes, video_index = None, [], []
        for v, group in enumerate(groups):
            if not group:
                raise Loc3rError(f"video {v} of the batch has no questions")
            for s in group:
                self.check(s)
                if s.scene_id != group[0].scene_id or not np.array_equal(s.frame_ids, group[0].frame_ids):
                    raise Loc3rError(f"{s.scene_id} question {s.question_id}: grouped with the questions of another "
                                     f"video ({group[0].scene_id})")
                ids, labels = self.tokenize(s)
                end = len(ids) - ids[::-1].index(self.video_id)  # just after the video run
                if prefix is None:
                    prefix = ids[:end]
                elif ids[:end] != prefix:
                    raise Loc3rError(f"{s.scene_id} question {s.question_id}: its prompt before the video differs "
                                     "from the other questions' (the prefix is shared)")
                suffixes.append((ids[end:], labels[end:]))
                video_index.append(v)
        Bv, Bq, Ls = len(groups), len(suffixes), max(len(ids) for ids, _ in suffixes)
        suffix_ids = torch.full((Bq, Ls), self.pad_id, dtype=torch.long)
        labels = torch.full((Bq, Ls), IGNORE_INDEX, dtype=torch.long)
        suffix_mask = torch.zeros((Bq, Ls), dtype=torch.long)
        for q, (ids, lab) in enumerate(suffixes):
            span = slice(Ls - len(ids), Ls) if self.for_generation else slice(0, len(ids))
            suffix_ids[q, span], labels[q, span], suffix_mask[q, span] = torch.tensor(ids), torch.tensor(lab), 1
        questions = [s for group in groups for s in group]
        return Batch(
            input_ids=torch.tensor([prefix] * Bv, dtype=torch.long),
            attention_mask=torch.ones((Bv, len(prefix)), dtype=torch.long),
            **self.video_tensors([group[0] for group in groups]),
            suffix_ids=suffix_ids,
            suffix_mask=suffix_mask,
            pos_index=(suffix_ids == self.pos_id).long().argmax(1),
            ori_index=(suffix_ids == self.ori_id).long().argmax(1),
            **self.question_tensors(questions),
            video_index=torch.tensor(video_index, dtype=torch.long),
            labels=None if self.for_generation else labels,
        )

    def __call__(self, samples: list[Sample]) -> Batch:
        for s in samples:
            self.check(s)
        encoded = [self.tokenize(s) for s in samples]
        L = max(len(ids) for ids, _ in encoded)
        B = len(samples)
        input_ids = torch.full((B, L), self.pad_id, dtype=torch.long)
        labels = torch.full((B, L), IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros((B, L), dtype=torch.long)
        for b, (ids, lab) in enumerate(encoded):
            span = slice(L - len(ids), L) if self.for_generation else slice(0, len(ids))  # left / right padding
            input_ids[b, span], labels[b, span], attention_mask[b, span] = torch.tensor(ids), torch.tensor(lab), 1

        return Batch(
            input_ids=input_ids,
            attention_mask=attention_mask,
            **self.video_tensors(samples),
            pos_index=(input_ids == self.pos_id).long().argmax(1),
            ori_index=(input_ids == self.ori_id).long().argmax(1),
            **self.question_tensors(samples),
            labels=None if self.for_generation else labels,
        )


def optional_tensors(samples: list[Sample], names) -> dict[str, torch.Tensor]:
    """Stacked optional fields (name, what, dtype) of samples: present in all samples or in none."""
    out = {}
    for name, what, dtype in names:
        present = [getattr(s, name) is not None for s in samples]
        if any(present):
            if not all(present):
                missing = next(s for s in samples if getattr(s, name) is None)
                raise Loc3rError(f"{missing.scene_id} question {missing.question_id}: no {what}, while other "
                                 "samples of the batch have them")
            out[name] = torch.from_numpy(np.stack([getattr(s, name) for s in samples]).astype(dtype))
    return out


def camera_token_source(config: Loc3RConfig, data_root: Path):
    """(scene_id, frame_ids) -> cached CUT3R tokens [T, d], for the 'cut3r' prior; None otherwise."""
    if config.prior != "cut3r":
        return None
    from loc3r.data.cache import source_fingerprint
    from loc3r.data.scannet import ScanNetScene
    from loc3r.priors.cut3r import load_cached_tokens, token_cache_path

    def tokens(scene_id: str, frame_ids: np.ndarray) -> np.ndarray:
        source = source_fingerprint(ScanNetScene(data_root, scene_id), frame_ids)
        cached = load_cached_tokens(data_root, scene_id, len(frame_ids), frame_ids, config.cut3r_input, source)
        if cached is None:
            raise Loc3rError(f"{data_root}/priors/cut3r: no camera tokens for {scene_id} with T={len(frame_ids)}: "
                             f"run `loc3r extract-priors --cut3r DIR --data {data_root} --frames {len(frame_ids)}`")
        if cached.shape[-1] != config.cut3r_dim:
            raise Loc3rError(f"{token_cache_path(data_root, scene_id, len(frame_ids))}: camera tokens of width "
                             f"{cached.shape[-1]}, the model's cut3r_dim is {config.cut3r_dim}")
        return cached

    return tokens


def make_dataset(config: Loc3RConfig, data_root: Path, split: str, cache_dir=None,
                 records: list | None = None) -> SituatedQADataset:
    """Questions on the ScanNet scans of data_root for a model configuration: SQA3D's split, or `records` (ScanQA,
    MSQA) when given."""
    return SituatedQADataset(data_root, split, config.num_frames, config.image_size, config.frame_grid,
                             cache_dir=cache_dir, camera_tokens=camera_token_source(config, data_root),
                             grid_extent=config.frame_grid_extent, video_fps=config.video_fps, records=records)


def load_cut3r_prior(config: Loc3RConfig, cut3r_dir: Path | None, device="cpu"):
    """The CUT3R a cut3r-prior checkpoint needs on plain videos (infer, VSI-Bench), checked against its width."""
    if cut3r_dir is None:
        raise Loc3rError("this checkpoint uses the cut3r prior: pass --cut3r DIR (a converted CUT3R model)")
    from loc3r.priors.cut3r import Cut3rPrior

    prior = Cut3rPrior(cut3r_dir, device=device, input_mode=config.cut3r_input, vlm_size=config.image_size)
    if prior.dim != config.cut3r_dim:
        raise Loc3rError(f"{cut3r_dir}: CUT3R camera tokens of width {prior.dim}, the checkpoint was trained on "
                         f"{config.cut3r_dim}")
    return prior


BENCHMARKS = ("sqa3d", "scanqa", "msqa", "vsibench")


def benchmark_records(benchmark: str, root: Path, split: str) -> list[QARecord]:
    """A benchmark's records of a split, from its folder under the data root: scanqa/ScanQA_v1.0_<split>.json,
    msqa/msqa_scannet_<split>.json, vsibench/<split>.jsonl (or .json / .parquet)."""
    root = Path(root)
    if benchmark == "scanqa":
        return read_scanqa(scanqa_path(root / "scanqa", split))
    if benchmark == "msqa":
        return read_msqa(msqa_path(root / "msqa", split))
    if benchmark == "vsibench":
        found = vsibench_rows_path(root, split)
        if found is None:
            raise Loc3rError(f"{root / 'vsibench'}: no {split}.jsonl, {split}.json or {split}.parquet")
        return read_vsibench(found)
    raise Loc3rError(f"unknown benchmark {benchmark!r}: expected one of {', '.join(BENCHMARKS)}")


def make_benchmark_dataset(config: Loc3RConfig, benchmark: str, root: Path, split: str, cache_dir=None,
                           cut3r_dir: Path | None = None):
    """The data set of a benchmark for a model configuration: SQA3D, ScanQA and MSQA on ScanNet scans
    (<root>/scans), VSI-Bench on its videos (no poses, no depth: the poses prior is unavailable there; the cut3r
    prior runs CUT3R from `cut3r_dir` on the sampled frames)."""
    if benchmark == "sqa3d":
        return make_dataset(config, root, split, cache_dir)
    records = benchmark_records(benchmark, root, split)
    if benchmark != "vsibench":
        return make_dataset(config, root, split, cache_dir, records)
    if config.prior == "poses":
        raise Loc3rError(f"{Path(root) / 'vsibench'}: VSI-Bench videos come without camera poses, so the poses prior "
                         "is unavailable there: evaluate a checkpoint trained with --prior cut3r or --prior none")
    tokens = None
    if config.prior == "cut3r":
        prior = load_cut3r_prior(config, cut3r_dir)
        tokens = lambda frames: prior.tokens_for_frames(frames).cpu().numpy()  # noqa: E731
    return VideoQADataset(Path(root) / "vsibench", records, config.num_frames, config.image_size, config.frame_grid,
                          tokens)


@dataclass
class Source:
    """One data set of a training mixture: `--data DIR` (SQA3D), `--data name=DIR` or `--data name=DIR:fraction`."""

    benchmark: str
    root: Path
    fraction: float = 1.0  # the share of its questions used (the paper subsamples about half of MSQA and VSI data)

    @classmethod
    def parse(cls, text: str) -> "Source":
        name, sep, rest = str(text).partition("=")
        if not sep:
            name, rest = "sqa3d", str(text)
        root, fraction = rest, 1.0
        head, colon, tail = rest.rpartition(":")
        if colon:
            try:
                root, fraction = head, float(tail)
            except ValueError:
                if not Path(rest).exists():  # a directory whose name holds ':' is read as it is
                    raise Loc3rError(f"--data {text}: {tail!r} after ':' is not a fraction (name=DIR:FRACTION)") \
                        from None
        if name not in BENCHMARKS:
            raise Loc3rError(f"--data {text}: unknown data set {name!r} (expected one of {', '.join(BENCHMARKS)})")
        if not 0 < fraction <= 1:
            raise Loc3rError(f"--data {text}: the fraction must be in (0, 1], got {fraction}")
        return cls(name, Path(root), fraction)


class MixtureDataset:
    """Several data sets in one training set: each source's questions (a seeded subsample of `fraction` of them)
    one after the other. `video_keys` tells the trainer which questions share a video (same root and scene)."""

    def __init__(self, parts: list[tuple[Source, object]], seed: int = 0):
        self.parts, self.index = parts, []
        for p, (source, dataset) in enumerate(parts):
            n = len(dataset)
            keep = n if source.fraction >= 1 else max(1, int(round(source.fraction * n))) if n else 0
            chosen = np.sort(np.random.default_rng([seed, p]).choice(n, keep, replace=False)) if keep < n else range(n)
            self.index += [(p, int(i)) for i in chosen]

    def __len__(self) -> int:
        return len(self.index)

    def __getitem__(self, i: int) -> Sample:
        p, j = self.index[i]
        return self.parts[p][1][j]

    @property
    def records(self) -> list:
        return [self.parts[p][1].records[j] for p, j in self.index]

    @property
    def video_keys(self) -> list[str]:
        return [f"{self.parts[p][0].root}:{self.parts[p][1].records[j].scene_id}" for p, j in self.index]

    def prepare(self, rank: int = 0, world_size: int = 1) -> None:
        for _, dataset in self.parts:
            if hasattr(dataset, "prepare"):
                dataset.prepare(rank, world_size)

    def manifest(self) -> list[dict]:
        """Per source: questions used, situated or not, with pose and layout supervision or without."""
        rows = []
        for p, (source, dataset) in enumerate(self.parts):
            used = [j for q, j in self.index if q == p]
            situated = sum(record_situated(dataset.records[j]) for j in used)
            video = isinstance(dataset, VideoQADataset)
            rows.append({"source": source.benchmark, "root": str(source.root), "fraction": source.fraction,
                         "questions": len(used), "of": len(dataset), "situated": situated,
                         "pose_supervision": situated, "layout_supervision": 0 if video else len(used)})
        return rows


def make_training_set(config: Loc3RConfig, sources: list[Source], cache_dir=None, seed: int = 0,
                      loop_starts: int = 1, cut3r_dir: Path | None = None):
    """The training data of a run: one SQA3D root as it is (on `loop_starts` videos of each looped scan:
    LoopStarts), or a MixtureDataset of the sources' train splits."""
    single = len(sources) == 1 and sources[0].benchmark == "sqa3d" and sources[0].fraction >= 1
    if loop_starts != 1:
        if not single or config.prior == "cut3r" or config.time_instruction:
            raise Loc3rError(f"--loop-starts {loop_starts}: for one SQA3D-format root of looped scans (loc3r synth's "
                             "rooms), a model with known poses or no prior and no time instruction (the tiny preset); "
                             "the recipe tiny_demo draws 3 for the synthetic rooms: pass --loop-starts 1 for other "
                             "data")
        return LoopStarts(make_dataset(config, sources[0].root, "train", cache_dir), loop_starts)
    if single:
        return make_dataset(config, sources[0].root, "train", cache_dir)
    parts = [(src, make_benchmark_dataset(config, src.benchmark, src.root, "train", cache_dir, cut3r_dir))
             for src in sources]
    return MixtureDataset(parts, seed)
