"""Reference baselines of situated localization and QA: what a model scores without looking at the video.

- random pose:       position uniform over the box of the training positions, yaw uniform
- blind (mean pose): the mean training position and the circular mean training yaw
- trajectory centre: the mean of the video's camera positions (what the poses alone say) and the mean yaw
- blind answers:     the most frequent training answer of the question's type (EM only; the answer prior)

Used by `loc3r demo` and benchmarks/bench_accuracy.py; scored per situation and per question as `loc3r eval`.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from loc3r.data.sqa3d import read_sqa3d
from loc3r.evaluate.metrics import localization_metrics, qa_metrics, question_type
from loc3r.model.config import Loc3RConfig
from loc3r.model.processor import make_dataset


def situated_poses(data: Path, split: str, config: Loc3RConfig):
    """BEV positions [N, 2], yaws [N] and the mean camera position of the video [N, 2] of a split's distinct
    situations."""
    ds = make_dataset(config, data, split)
    seen, xy, yaw, cameras = set(), [], [], []
    for i, rec in enumerate(ds.records):
        key = (rec.scene_id, rec.situation)
        if key in seen:
            continue
        s = ds[i]
        if s.has_situation:
            seen.add(key)
            xy.append(s.position_xy)
            yaw.append(s.yaw_rad)
            cameras.append(s.camera_poses_bev[:, :2, 3].mean(0))
    return np.array(xy), np.array(yaw), np.array(cameras)


def answer_prior(data: Path, test_data: Path) -> dict:
    """QA metrics on test_data's test split of answering every question with the most frequent answer of its
    type in data's train split."""
    def kind(r):
        return r.question_type if r.question_type not in ("", "N/A") else question_type(r.question)

    counts: dict[str, Counter] = {}
    for r in read_sqa3d(data, "train"):
        counts.setdefault(kind(r), Counter())[r.answers[0]] += 1
    fallback = sum(counts.values(), Counter()).most_common(1)[0][0]
    test = read_sqa3d(test_data, "test")
    predictions = [counts[kind(r)].most_common(1)[0][0] if kind(r) in counts else fallback for r in test]
    return qa_metrics(predictions, [r.answers for r in test], [r.question for r in test],
                      [r.question_type for r in test])


def baselines(data: Path, test_data: Path, seed: int) -> dict[str, dict]:
    """The four baselines (module docstring) on test_data's test split, with statistics of data's train split;
    name -> {"localization": ...} or {"qa": ...} as in `loc3r eval`'s metrics."""
    config = Loc3RConfig.tiny()
    train_xy, train_yaw, _ = situated_poses(data, "train", config)
    test_xy, test_yaw, test_cameras = situated_poses(test_data, "test", config)
    rng = np.random.default_rng(seed)
    lo, hi = train_xy.min(0), train_xy.max(0)
    random_xy = rng.uniform(lo, hi, size=test_xy.shape)
    random_yaw = rng.uniform(-np.pi, np.pi, size=test_yaw.shape)
    mean_xy = np.broadcast_to(train_xy.mean(0), test_xy.shape)
    mean_yaw = np.full(test_yaw.shape, np.arctan2(np.sin(train_yaw).mean(), np.cos(train_yaw).mean()))
    return {"random pose": {"localization": localization_metrics(random_xy, test_xy, random_yaw, test_yaw)},
            "blind (mean pose)": {"localization": localization_metrics(mean_xy, test_xy, mean_yaw, test_yaw)},
            "trajectory centre": {"localization": localization_metrics(test_cameras, test_xy, mean_yaw, test_yaw)},
            "blind answers": {"qa": answer_prior(data, test_data)}}
