"""The data order of a training run: a pure function of (seed, sample position), so that a resumed run continues
exactly, a DataLoader's workers build any step in any process, and one process with batch 2B sees the samples of
two processes with batch B.

Epoch e uses permutation(seed + e) of the training units (videos with up to Q of their questions); an optimizer
step consumes `batch_size * world_size * grad_accum` consecutive positions, rank r taking the r-th slice of each
micro-batch. With --loop-starts-when the steps draw the scans' own videos only until the run joins the other loop
starts (StepBatches.join), then every unit, positions counted from the join; with --relations-join the units
drawn until then leave out the synthetic rooms' relation questions (left / right, navigation, distance).
"""

from __future__ import annotations

import numpy as np
import torch

from loc3r import parallel
from loc3r.model.processor import Collator
from loc3r.synth.situations import RELATION_KINDS
from loc3r.train.config import TrainConfig


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
    own videos are drawn exactly as that run draws them until the other starts join (--loop-starts-when)."""
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


class StepBatches(torch.utils.data.Dataset):
    """Item i: this rank's micro-batches of optimizer step `first_step + i`, a pure function of the data position
    (so a DataLoader's workers build them in any process and a resumed run reads exactly what it would have)."""

    def __init__(self, run: TrainConfig, dataset, collate: Collator, units: list[list[int]],
                 per_video: int, info: parallel.DistInfo, first_step: int, first_position: int):
        self.run, self.dataset, self.collate, self.units, self.per_video = run, dataset, collate, units, per_video
        self.rank, self.world = info.rank, info.world_size
        self.first_step, self.first_position = first_step, first_position
        self.step_samples = run.batch_size * info.world_size * run.grad_accum  # units (videos with their questions)
        # --loop-starts-when: the units of the scans' own videos (LoopStarts: the first of every K items), drawn
        # until `join`; with --relations-join without their relation questions (dataset indices, as self.units)
        own = len(dataset.video_keys) // run.loop_starts
        self.own_units = [unit for unit in units if unit[0] < own] if run.loop_starts_when else []
        if run.relations_join:  # each scan's other questions cut into units again, as many as fit a unit
            kinds, scans = [r.question_type for r in dataset.records], dataset.video_keys
            kept: dict[str, list[int]] = {}
            for unit in self.own_units:
                kept.setdefault(scans[unit[0]], []).extend(i for i in unit if kinds[i] not in RELATION_KINDS)
            self.own_units = [q[j:j + per_video] for q in kept.values() for j in range(0, len(q), per_video)]
        self.own_steps = run.steps if run.loop_starts_when else 0

    def join(self, step: int) -> None:
        """From `step` on, draw every loop start (--loop-starts-when)."""
        self.own_steps = step

    def draw(self, step: int, position: int) -> list[list[int]]:
        """This rank's units (dataset indices) of the micro-batch at global `position` of optimizer step `step`: from
        the scans' own videos until the join, then from all units (positions counted from the join)."""
        units = self.own_units if step < self.own_steps else self.units
        if step >= self.own_steps:
            position -= self.own_steps * self.step_samples
        return [units[u] for u in micro_batch_indices(position, len(units), self.run.seed, self.run.batch_size,
                                                      self.rank, self.world)]

    def __len__(self) -> int:
        return max(0, self.run.steps - self.first_step)

    def __getitem__(self, i: int) -> list[dict]:
        position = self.first_position + i * self.step_samples
        batches = []
        for k in range(self.run.grad_accum):
            idx = self.draw(self.first_step + i, position + k * self.run.batch_size * self.world)
            groups = [[self.dataset[j] for j in unit] for unit in idx]
            batches.append(self.collate.grouped(groups) if self.per_video > 1 else self.collate([g[0] for g in groups]))
        return batches


