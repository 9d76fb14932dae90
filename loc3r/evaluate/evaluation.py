"""`loc3r eval`: predictions on a split of a benchmark (SQA3D, ScanQA, MSQA, VSI-Bench), its official metrics, a
report and bird's-eye plots.

Localization is scored once per situation (scene + situation text), as in SQA3D's localization benchmark: the
<Pos>/<Ori> tokens precede the question, so the causal LLM gives every question of a situation the same pose.
QA is scored on every question. Outputs in --out: metrics.json (with the blind baselines on the same questions),
predictions.jsonl (fields in docs/outputs.md), report.md, view.html (interactive), plots/*.png.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from loc3r.command import add_dataclass_arguments, dataclass_from_args
from loc3r.data.paths import file_part
from loc3r.data.scannet import ScanNetScene
from loc3r.errors import Loc3rError
from loc3r.evaluate.baselines import blind_baselines
from loc3r.evaluate.metrics import (ANSWER_SCORE_NAMES, PROTOCOL_SOURCES, PROTOCOLS, OpenAIJudge, answer_scores,
                                    localization_metrics, msqa_metrics, qa_metrics, scanqa_metrics, vsibench_metrics,
                                    yaw_error_deg)
from loc3r.evaluate.plots import frame_strip, layout_mask, objects_bev, scene_points_bev, situation_plot, token_colors
from loc3r.evaluate.report import choose_examples, write_report
from loc3r.evaluate.view import SceneView, write_view
from loc3r.io import atomic_dir, check_replaceable, write_json
from loc3r.model.processor import BENCHMARKS, Collator
from loc3r.parallel import default_device

VIEW = "view.html"  # the interactive page eval and infer write


@dataclass
class EvalConfig:
    """The settings of `loc3r eval` (its flags are generated from these fields and their comments)."""

    checkpoint: Path  # a checkpoint directory or a run directory (its newest checkpoint)
    data: Path  # data root: scans/ and the benchmark's files (sqa_task/, scanqa/, msqa/, vsibench/)
    out: Path  # output directory: metrics.json, predictions.jsonl, report.md, view.html, plots/
    benchmark: str = "sqa3d"  # sqa3d | scanqa | msqa | vsibench
    split: str = "test"  # the benchmark's split (ScanQA: val, test_w_obj, ...; VSI-Bench: the rows file's name)
    # the official evaluator the answer metrics follow, written into metrics.json (docs/data.md): scanqa vlm3r
    # (VLM-3R / LLaVA-3D, the default) | video3dllm (Video-3D-LLM) | leo (LEO); vsibench thinking_in_space (the
    # default) | lmms_eval_latest; msqa msr3d; sqa3d leo
    protocol: str | None = None
    judge_url: str | None = None  # MSQA GPT-score: an OpenAI-compatible endpoint (off when not given)
    judge_model: str = "gpt-4o-2024-08-06"  # MSQA GPT-score: the judge model (MSR3D's default)
    judge_key_env: str = "OPENAI_API_KEY"  # MSQA GPT-score: the environment variable holding the API key
    cut3r: Path | None = None  # converted CUT3R directory, for a cut3r-prior checkpoint on VSI-Bench videos
    batch_size: int = 8  # questions a forward pass
    max_new_tokens: int = 16  # longest generated answer
    plots: int = 6  # examples drawn (bird's-eye plots of situations, else frame strips), scenes in view.html
    overwrite: bool = False  # replace --out whatever it holds (a previous evaluation is replaced without it)
    card: bool = False  # also enter the headline numbers in the checkpoint's model card (its README.md)
    limit: int | None = None  # evaluate the first N questions only
    # a control: no token attends to <Pos> / <Ori> (the answers read the situation from its words only); the
    # positions and yaws are still the heads' own
    hide_situation_tokens: bool = False
    device: str | None = None  # cpu, cuda, cuda:1 ... (default: the GPU when there is one)
    cache_dir: Path | None = None  # per-scene caches (default <data>/cache)

    CHOICES: ClassVar[dict] = {"benchmark": BENCHMARKS}

    def __post_init__(self):
        allowed = PROTOCOLS[self.benchmark]
        self.protocol = self.protocol or allowed[0]
        if self.protocol not in allowed:
            raise Loc3rError(f"--protocol {self.protocol}: {self.benchmark} follows {' or '.join(allowed)}")
        if self.batch_size < 1:
            raise Loc3rError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.limit is not None and self.limit < 1:
            raise Loc3rError(f"--limit must be >= 1 (the first N questions), got {self.limit}")


def add_arguments(p: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(p, EvalConfig)


def video_batches(video_keys: list[str], n: int, batch_size: int) -> list[list[list[int]]]:
    """The first n questions in batches of up to batch_size questions, each batch a list of groups of questions on
    one video (Collator.grouped: the video's prefix computed once for its group). The videos in the order they
    first appear, each video's questions in their order."""
    first: dict[str, int] = {}
    for i in range(n):
        first.setdefault(video_keys[i], i)
    order = sorted(range(n), key=lambda i: (first[video_keys[i]], i))
    batches = []
    for start in range(0, n, batch_size):
        groups: list[list[int]] = []
        for i in order[start:start + batch_size]:
            if groups and video_keys[groups[-1][0]] == video_keys[i]:
                groups[-1].append(i)
            else:
                groups.append([i])
        batches.append(groups)
    return batches


def predict_dataset(model, dataset, batch_size: int, max_new_tokens: int, device, limit=None,
                    maps: dict | None = None, hide_situation_tokens: bool = False) -> list[dict]:
    """One record per question, in the data set's order: the question, the model's prediction (Prediction.as_record:
    answer, metres and degrees in the video's BEV frame) and the ground truth (gt_*); docs/outputs.md. Up to
    batch_size questions a forward pass, those on one video sharing its computed prefix. `maps`, when given,
    receives question_id -> (the layout head's (x, y) of every vision token [T, n, 2], the sampled cameras' BEV
    (x, y) [T, 2], NaN where unknown). hide_situation_tokens: the control of Loc3R.generate."""
    maps = {} if maps is None else maps
    collate = Collator(model.tokenizer, model.config, for_generation=True)
    n = len(dataset) if limit is None else min(limit, len(dataset))
    records: dict[int, dict] = {}
    model.eval()
    from tqdm import tqdm

    bar = tqdm(total=n, desc="eval", unit="question", dynamic_ncols=True, disable=None)  # on a terminal only
    for groups in video_batches(dataset.video_keys, n, batch_size):
        samples = [[dataset[i] for i in group] for group in groups]
        batch = collate.grouped(samples).to(device)
        indices = [i for group in groups for i in group]
        predictions = model.predict(batch, max_new_tokens, hide_situation_tokens)
        for i, s, p in zip(indices, [s for group in samples for s in group], predictions):
            records[i] = {
                "question_id": s.question_id, "id": str(dataset.records[i].question_id), "scene_id": s.scene_id,
                "situation": s.situation, "question": s.question, "question_type": s.question_type,
                "situated": bool(s.has_situation), **p.as_record(), "gt_answers": s.answers,
                "gt_position_xy_m": [float(v) for v in s.position_xy], "gt_yaw_deg": float(np.degrees(s.yaw_rad)),
            }
            maps[s.question_id] = (p.layout_xy, s.camera_poses_bev[:, :2, 3])
        bar.update(len(indices))
    bar.close()
    return [records[i] for i in range(n)]


def unique_situations(records: list[dict]) -> list[dict]:
    """The first record of each situated (scene, situation) pair."""
    seen, out = set(), []
    for r in records:
        key = (r["scene_id"], r["situation"])
        if r["situated"] and key not in seen:
            seen.add(key)
            out.append(r)
    return out


def situation_localization(situations: list[dict]) -> dict:
    """localization_metrics of records (one per situation)."""
    return localization_metrics([r["position_xy_m"] for r in situations], [r["gt_position_xy_m"] for r in situations],
                                np.radians([r["yaw_deg"] for r in situations]),
                                np.radians([r["gt_yaw_deg"] for r in situations]))


def has_answers(records: list[dict]) -> bool:
    """Whether any question of the records has a reference answer (a hidden test split has none)."""
    return any(any(a.strip() for a in r["gt_answers"]) for r in records)


def score_records(records: list[dict], benchmark: str, protocol: str) -> None:
    """Add each record's errors and answer mark in place: position_error_m and yaw_error_deg (None for a question
    without a situation), answer_score in [0, 1] (metrics.answer_scores; None when the split has no answers)."""
    scores = answer_scores(benchmark, protocol, [r["answer"] for r in records], [r["gt_answers"] for r in records],
                           [r["question_type"] for r in records]) if has_answers(records) else [None] * len(records)
    for r, score in zip(records, scores):
        situated = r["situated"]
        r["position_error_m"] = float(np.linalg.norm(np.subtract(r["position_xy_m"], r["gt_position_xy_m"]))) \
            if situated else None
        r["yaw_error_deg"] = float(yaw_error_deg(np.radians(r["yaw_deg"]), np.radians(r["gt_yaw_deg"]))) \
            if situated else None
        r["answer_score"] = score


def compute_metrics(records: list[dict], benchmark: str = "sqa3d", protocol: str | None = None, judge=None) -> dict:
    """The benchmark's official metrics of prediction records (and localization where it has situations)."""
    protocol = protocol or PROTOCOLS[benchmark][0]
    if benchmark == "sqa3d":
        return {**sqa3d_metrics(records), "protocol": protocol}
    preds, refs = [r["answer"] for r in records], [r["gt_answers"] for r in records]
    if records and not has_answers(records):
        return {"benchmark": benchmark, "n": len(records), "note": "the split has no answers: predictions only"}
    out = {"benchmark": benchmark, "protocol": protocol, "n": len(records)}
    if benchmark == "scanqa":
        try:
            out["qa"] = scanqa_metrics(preds, refs, protocol)
        except ValueError as e:  # what the official pipeline cannot score (a line break under video3dllm)
            raise Loc3rError(f"--protocol {protocol}: {e}") from None
    elif benchmark == "msqa":
        out["qa"] = msqa_metrics(preds, refs, [r["question_type"] for r in records],
                                 [r["question"] for r in records], judge)
        situations = unique_situations(records)
        out["localization"] = situation_localization(situations)
        out["n_situations"] = len(situations)
    elif benchmark == "vsibench":
        out["qa"] = vsibench_metrics(preds, [r[0] for r in refs], [r["question_type"] for r in records], protocol)
    return out


def sqa3d_metrics(records: list[dict]) -> dict:
    situations = unique_situations(records)
    named = any(r["question_type"] != "N/A" for r in records)  # the data set names its question families
    qa = qa_metrics([r["answer"] for r in records], [r["gt_answers"] for r in records],
                    [r["question"] for r in records], [r["question_type"] for r in records] if named else None)
    return {"benchmark": "sqa3d", "localization": situation_localization(situations), "qa": qa, "n": len(records),
            "n_situations": len(situations)}


def evaluate(cfg: EvalConfig) -> dict:
    """Predict a split, score it and write metrics.json, predictions.jsonl, report.md and plots into cfg.out."""
    from loc3r.model.processor import make_benchmark_dataset
    from loc3r.train.checkpoint import load_model, record_evaluation, resolve_checkpoint

    data, split, out = cfg.data, cfg.split, cfg.out
    judge = None
    if cfg.judge_url is not None:
        if cfg.benchmark != "msqa":
            raise Loc3rError("--judge-url is MSQA's GPT-score: pass it with --benchmark msqa")
        judge = OpenAIJudge(cfg.judge_url, cfg.judge_model, os.environ.get(cfg.judge_key_env))
    check_replaceable(out, cfg.overwrite, lambda d: (d / "metrics.json").is_file(), "a previous evaluation")
    dev = default_device(cfg.device)
    ckpt = resolve_checkpoint(cfg.checkpoint)
    model = load_model(ckpt).to(dev)
    dataset = make_benchmark_dataset(model.config, cfg.benchmark, data, split, cfg.cache_dir, cfg.cut3r)
    if len(dataset) == 0:
        raise Loc3rError(f"{data}: the {split} split of {cfg.benchmark} has no questions")
    maps: dict = {}
    records = predict_dataset(model, dataset, cfg.batch_size, cfg.max_new_tokens, dev, cfg.limit, maps,
                              cfg.hide_situation_tokens)
    metrics = compute_metrics(records, cfg.benchmark, cfg.protocol, judge)
    if cfg.hide_situation_tokens:  # a control, not the model's own evaluation: said wherever its numbers go
        metrics["control"] = HIDDEN_SITUATION
    score_records(records, cfg.benchmark, cfg.protocol)
    print(f"answer metrics: the {cfg.protocol} protocol ({PROTOCOL_SOURCES[cfg.protocol]})")
    if cfg.benchmark == "scanqa":
        if not metrics.get("qa", {}).get("java", True):
            print("note: no Java found: ScanQA's METEOR and PTB tokenizer are skipped (install a JRE, e.g. Debian's "
                  "default-jre-headless); the other metrics are reported")
    if metrics.get("qa", {}).get("n_unscored"):
        print(f"note: {metrics['qa']['n_unscored']} questions of types MSR3D's evaluator does not group are not scored")
    title = f"Evaluation of {ckpt} on {cfg.benchmark} {split}"
    if cfg.hide_situation_tokens:
        title += f" ({HIDDEN_SITUATION})"
    with atomic_dir(out) as tmp:  # the outputs of one evaluation together: a kill leaves the previous ones whole
        write_outputs(tmp, cfg, data, dataset, model, records, maps, metrics, title)
    if cfg.card:
        print(f"recorded in {record_evaluation(ckpt, *card_row(cfg, metrics))}")
    return metrics


HIDDEN_SITUATION = "<Pos>/<Ori> hidden from the answers"  # eval --hide-situation-tokens, in titles and card rows
HEADLINE = {"sqa3d": ("em1", "EM@1"), "scanqa": ("em1", "EM@1"), "msqa": ("EM_overall", "EM"),
            "vsibench": ("vsibench_overall", "overall")}  # the answer metric a model card shows


def card_row(cfg: EvalConfig, metrics: dict) -> tuple[str, str, str]:
    """(key, row, header) of an evaluation in a model card's Evaluations table."""
    key = (f"{cfg.benchmark} {cfg.split} ({cfg.data})" + (f", first {cfg.limit}" if cfg.limit else "")
           + (f", {HIDDEN_SITUATION}" if cfg.hide_situation_tokens else ""))
    loc = metrics.get("localization") or {}
    name, label = HEADLINE[cfg.benchmark]
    cells = [str(metrics["n"])] + [f"{loc[k]:.1f}" if k in loc else "–" for k in ("acc_0.5m", "acc_1.0m", "acc_15deg",
                                                                                  "acc_30deg")]
    answer = (metrics.get("qa") or {}).get(name)
    cells.append("–" if answer is None else f"{label} {answer:.1f} ({metrics.get('protocol')})")
    header = "| evaluation | questions | Acc@0.5m | Acc@1.0m | Acc@15° | Acc@30° | answers |\n" + "|---" * 7 + "|"
    return key, f"| {key} | " + " | ".join(cells) + " |", header


def write_outputs(out: Path, cfg: EvalConfig, data: Path, dataset, model, records: list[dict], maps: dict,
                  metrics: dict, title: str) -> None:
    """metrics.json (with the blind baselines), predictions.jsonl, the plots, report.md and view.html of an
    evaluation, into `out`."""
    situations = unique_situations(records)
    centres = {qid: cameras.mean(0) for qid, (_, cameras) in maps.items()}
    baselines = blind_baselines(records, situations, cfg.benchmark, metrics.get("protocol", cfg.protocol), centres)
    write_json(out / "metrics.json", {**metrics, "baselines": baselines})
    (out / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    examples = choose_examples(records, situations)
    index = {id(r): i for i, r in enumerate(records)}
    drawn, plots = [], {}  # the examples drawn (at most cfg.plots), id(record) -> its plot
    for outcome, r in examples:
        if len(drawn) >= cfg.plots or id(r) in plots:
            continue
        stem = f"{outcome.replace(' ', '_')}_{file_part(r['scene_id'])}_{file_part(str(r['question_id']))}"
        path = out / "plots" / f"{stem}.png"
        if r["situated"]:
            scene = dataset.scene(r["scene_id"])
            map_colors = token_colors(scene.frames, model.config.frame_grid, model.config.frame_grid_extent)
            situation_plot(data, r["scene_id"], scene.world_to_bev, r, path, maps[r["question_id"]][0].reshape(-1, 2),
                           map_colors.reshape(-1, 3))
        else:  # no situation to draw: the example's frames
            path.parent.mkdir(parents=True, exist_ok=True)
            frame_strip(dataset[index[id(r)]].frames, path)
        plots[id(r)] = path
        drawn.append(r)
    first_of_scene = {}
    for r in drawn or records[:1]:
        first_of_scene.setdefault(r["scene_id"], r)
    scenes = [scene_view(data, dataset, model.config, records, index[id(r)], maps) for r in first_of_scene.values()]
    write_view(out / VIEW, title, scenes, records, ANSWER_SCORE_NAMES[cfg.benchmark])
    write_report(out, title, metrics, records, baselines, examples, plots, VIEW)


def scene_view(data: Path, dataset, config, records: list[dict], i: int, maps: dict) -> SceneView:
    """The interactive page's view of record i's video: its frames and the model's map, the camera path and, for a
    scan, the room from depth and the objects."""
    r = records[i]
    sample = dataset[i]
    layout_xy, cameras = maps[r["question_id"]]
    view = SceneView(name=r["scene_id"], frames=sample.frames, grid=tuple(config.frame_grid),
                     extent=config.frame_grid_extent, map_xy=layout_xy,
                     map_colors=token_colors(sample.frames, config.frame_grid, config.frame_grid_extent),
                     trajectory=cameras, trajectory_label="camera path (given poses)")
    if hasattr(dataset, "scene"):  # a ScanNet scan: the truth from depth
        world_to_bev = dataset.scene(r["scene_id"]).world_to_bev
        points, colors = scene_points_bev(ScanNetScene(data, r["scene_id"]), world_to_bev, 8)
        keep = layout_mask(points)
        view.points, view.point_colors = points[keep, :2], colors[keep]
        view.objects = objects_bev(data, r["scene_id"], world_to_bev)
    return view


def run(args: argparse.Namespace) -> int:
    metrics = evaluate(dataclass_from_args(EvalConfig, args))
    if metrics["benchmark"] == "sqa3d":
        shown = {"localization": metrics["localization"], "n": metrics["n"],
                 "qa": {k: metrics["qa"][k] for k in ("em1", "em_refined")}}
    else:
        shown = {k: v for k, v in metrics.items() if k != "qa"} | {"qa": metrics.get("qa", {})}
    print(json.dumps(rounded(shown), indent=1))
    print(f"wrote {args.out / 'metrics.json'}, {args.out / 'report.md'} and {args.out / VIEW} (interactive)")
    return 0


def rounded(value, digits: int = 2):
    """A JSON value with its floats rounded, as a person reads them (metrics.json keeps every digit)."""
    if isinstance(value, float):
        return round(value, digits)
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value
