"""Reference baselines of situated localization and QA: what a model scores without looking at the video.

- random pose:       position uniform over the box of the training positions, yaw uniform
- blind (mean pose): the mean training position and the circular mean training yaw
- trajectory centre: the mean of the video's camera positions (what the poses alone say) and the mean yaw
- blind answers:     the most frequent training answer of the question's type (EM only; the answer prior)

`baselines` takes its statistics from a training split (benchmarks/bench_accuracy.py); `blind_baselines` from the
evaluated questions themselves (the best constant guess on them), so that `loc3r eval`'s report sets them beside the
model on the same questions without a training split.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np

from loc3r.data.sqa3d import read_sqa3d
from loc3r.evaluate.metrics import answer_scores, localization_metrics, qa_metrics, question_type
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


def family(record: dict) -> str:
    """A question's family in reports: the data set's question type where it names one, else SQA3D's type (the
    question's first word, metrics.question_type)."""
    kind = record.get("question_type") or ""
    return kind if kind not in ("", "N/A") else question_type(record["question"])


def blind_baselines(records: list[dict], situations: list[dict], benchmark: str, protocol: str,
                    camera_centres: dict | None = None) -> dict:
    """The blind baselines on the evaluated questions (loc3r eval's records, scored by score_records): the best
    constant guess on these very questions, as VSI-Bench's "chance (frequency)" row, so an upper bound of what a model
    that ignores the video can score here:
    - "mean pose": the situations' mean position and circular mean yaw;
    - "trajectory centre": the mean position of the video's sampled cameras (camera_centres: question_id -> [2],
      where the poses are known) with the mean pose's yaw;
    - "answer prior": the most frequent first reference of the question's family.
    name -> {"localization": ...} and / or {"answers": {"score", "by_family": {family: score}}} (percent)."""
    out = {}
    if situations:
        xy = np.array([r["gt_position_xy_m"] for r in situations], np.float64)
        yaw = np.radians([r["gt_yaw_deg"] for r in situations])
        mean_xy = np.broadcast_to(xy.mean(0), xy.shape)
        mean_yaw = np.full(yaw.shape, np.arctan2(np.sin(yaw).mean(), np.cos(yaw).mean()))
        out["mean pose"] = {"localization": localization_metrics(mean_xy, xy, mean_yaw, yaw)}
        centres = np.array([(camera_centres or {}).get(r["question_id"], (np.nan, np.nan)) for r in situations])
        if np.isfinite(centres).all():
            out["trajectory centre"] = {"localization": localization_metrics(centres, xy, mean_yaw, yaw)}
    answered = [r for r in records if r.get("answer_score") is not None]
    if answered:
        families = [family(r) for r in answered]
        refs = [r["gt_answers"] for r in answered]
        counts: dict[str, Counter] = {}
        for f, a in zip(families, refs):
            counts.setdefault(f, Counter())[(a or [""])[0]] += 1
        guesses = [counts[f].most_common(1)[0][0] for f in families]
        scores = answer_scores(benchmark, protocol, guesses, refs, [r["question_type"] for r in answered])
        by_family: dict[str, list[float]] = {}
        for f, score in zip(families, scores):
            by_family.setdefault(f, []).append(score)
        out["answer prior"] = {"answers": {"score": 100.0 * float(np.mean(scores)),
                                           "by_family": {f: 100.0 * float(np.mean(v)) for f, v in by_family.items()}}}
    return out
