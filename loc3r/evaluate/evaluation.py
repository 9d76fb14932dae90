"""`loc3r eval`: predictions on a split of a benchmark (SQA3D, ScanQA, MSQA, VSI-Bench), its official metrics, a
report and bird's-eye plots.

Localization is scored once per situation (scene + situation text), as in SQA3D's localization benchmark: the
<Pos>/<Ori> tokens precede the question, so the causal LLM gives every question of a situation the same pose.
QA is scored on every question. Outputs in --out: metrics.json, predictions.jsonl, report.md, plots/*.png.
"""

from __future__ import annotations

import argparse
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from loc3r.command import add_dataclass_arguments, dataclass_from_args
from loc3r.data.paths import file_part
from loc3r.errors import Loc3rError
from loc3r.evaluate.metrics import (PROTOCOL_SOURCES, PROTOCOLS, OpenAIJudge, localization_metrics, msqa_metrics,
                                    qa_metrics, scanqa_metrics, vsibench_metrics)
from loc3r.evaluate.plots import frame_strip, situation_plot, token_colors
from loc3r.io import atomic_dir, atomic_path, check_replaceable, write_json
from loc3r.model.processor import BENCHMARKS, Collator
from loc3r.parallel import default_device


@dataclass
class EvalConfig:
    """The settings of `loc3r eval` (its flags are generated from these fields and their comments)."""

    checkpoint: Path  # a checkpoint directory or a run directory (its newest checkpoint)
    data: Path  # data root: scans/ and the benchmark's files (sqa_task/, scanqa/, msqa/, vsibench/)
    out: Path  # output directory: metrics.json, predictions.jsonl, report.md, plots/
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
    plots: int = 6  # situations drawn as bird's-eye plots
    overwrite: bool = False  # replace --out whatever it holds (a previous evaluation is replaced without it)
    limit: int | None = None  # evaluate the first N questions only
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
                    maps: dict | None = None) -> list[dict]:
    """One record per question, in the data set's order: the sample's ground truth and the model's prediction (BEV
    frame). Up to batch_size questions a forward pass, those on one video sharing its computed prefix. `maps`, when
    given, receives question_id -> the layout head's (x, y) of every vision token [T, n, 2]."""
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
        for i, s, p in zip(indices, [s for group in samples for s in group], model.predict(batch, max_new_tokens)):
            records[i] = {
                "question_id": s.question_id, "id": str(dataset.records[i].question_id),
                "scene_id": s.scene_id, "situation": s.situation,
                "question": s.question, "answers": s.answers, "question_type": s.question_type,
                "has_situation": bool(s.has_situation), "prediction": p.answer,
                "gt_xy": [float(v) for v in s.position_xy], "gt_yaw_rad": float(s.yaw_rad),
                "pred_xy": [float(v) for v in p.position_xy], "pred_sigma": [float(v) for v in p.position_sigma],
                "pred_yaw_rad": float(p.yaw_rad), "yaw_probs": [float(v) for v in p.yaw_probs],
            }
            maps[s.question_id] = p.layout_xy
        bar.update(len(indices))
    bar.close()
    return [records[i] for i in range(n)]


def unique_situations(records: list[dict]) -> list[dict]:
    """The first record of each situated (scene, situation) pair."""
    seen, out = set(), []
    for r in records:
        key = (r["scene_id"], r["situation"])
        if r["has_situation"] and key not in seen:
            seen.add(key)
            out.append(r)
    return out


def compute_metrics(records: list[dict], benchmark: str = "sqa3d", protocol: str | None = None, judge=None) -> dict:
    """The benchmark's official metrics of prediction records (and localization where it has situations)."""
    if benchmark == "sqa3d":
        return {**sqa3d_metrics(records), "protocol": protocol or PROTOCOLS[benchmark][0]}
    preds, refs = [r["prediction"] for r in records], [r["answers"] for r in records]
    if records and not any(any(a.strip() for a in r["answers"]) for r in records):
        return {"benchmark": benchmark, "n": len(records), "note": "the split has no answers: predictions only"}
    protocol = protocol or PROTOCOLS[benchmark][0]
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
        out["localization"] = localization_metrics(
            [r["pred_xy"] for r in situations], [r["gt_xy"] for r in situations],
            [r["pred_yaw_rad"] for r in situations], [r["gt_yaw_rad"] for r in situations])
        out["n_situations"] = len(situations)
    elif benchmark == "vsibench":
        out["qa"] = vsibench_metrics(preds, [r[0] for r in refs], [r["question_type"] for r in records], protocol)
    return out


def sqa3d_metrics(records: list[dict]) -> dict:
    situations = unique_situations(records)
    loc = localization_metrics([r["pred_xy"] for r in situations], [r["gt_xy"] for r in situations],
                               [r["pred_yaw_rad"] for r in situations], [r["gt_yaw_rad"] for r in situations])
    named = any(r["question_type"] != "N/A" for r in records)  # the data set names its question families
    qa = qa_metrics([r["prediction"] for r in records], [r["answers"] for r in records],
                    [r["question"] for r in records], [r["question_type"] for r in records] if named else None)
    return {"benchmark": "sqa3d", "localization": loc, "qa": qa, "n": len(records), "n_situations": len(situations)}


def write_benchmark_report(out: Path, metrics: dict, records: list[dict], plots: list[Path], title: str) -> None:
    """report.md of ScanQA / MSQA / VSI-Bench: the metrics (official names), then examples."""
    lines = [f"# {title}", "", f"{metrics['n']} questions.", ""]
    if "note" in metrics:
        lines += [metrics["note"], ""]
    for part in ("qa", "localization"):
        if metrics.get(part):
            lines += [f"## {'Answers' if part == 'qa' else 'Localization (per situation)'}", "", "| metric | value |",
                      "|---|---|"]
            lines += [f"| {k} | {v:.2f} |" if isinstance(v, float) else f"| {k} | {v} |"
                      for k, v in metrics[part].items()]
            lines.append("")
    lines += ["## Examples", "", "| scene | question type | question | answer | prediction |", "|---|---|---|---|---|"]
    lines += [f"| {r['scene_id']} | {r['question_type']} | {r['question'].replace(chr(10), ' ')} | "
              f"{(r['answers'] or [''])[0]} | {r['prediction']} |" for r in records[:12]]
    if plots:
        lines += ["", "## Bird's-eye views", ""] + [f"![{p.stem}](plots/{p.name})" for p in plots]
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def write_report(out: Path, metrics: dict, records: list[dict], plots: list[Path], title: str) -> None:
    loc, qa = metrics["localization"], metrics["qa"]
    lines = [f"# {title}", "", f"{metrics['n']} questions, {metrics['n_situations']} situations.", "",
             "## Localization (per situation)", "", "| Acc@0.5m | Acc@1.0m | Acc@15° | Acc@30° | median pos err | median yaw err |",
             "|---|---|---|---|---|---|"]
    if loc:
        lines.append(f"| {loc['acc_0.5m']:.1f} | {loc['acc_1.0m']:.1f} | {loc['acc_15deg']:.1f} | {loc['acc_30deg']:.1f} "
                     f"| {loc['median_pos_err_m']:.2f} m | {loc['median_yaw_err_deg']:.1f}° |")
    lines += ["", "## Situated QA", "", f"EM@1 {qa['em1']:.1f}, refined EM {qa['em_refined']:.1f}", "",
              "| type | n | EM@1 | refined EM |", "|---|---|---|---|"]
    lines += [f"| {t} | {v['n']} | {v['em1']:.1f} | {v['em_refined']:.1f} |" for t, v in qa["by_type"].items()]
    if "by_question_type" in qa:
        lines += ["", "By the data set's question types:", "", "| question type | n | EM@1 | refined EM |",
                  "|---|---|---|---|"]
        lines += [f"| {t} | {v['n']} | {v['em1']:.1f} | {v['em_refined']:.1f} |"
                  for t, v in qa["by_question_type"].items()]
    lines += ["", "## Examples", "", "| scene | situation | question | answer | prediction |", "|---|---|---|---|---|"]
    lines += [f"| {r['scene_id']} | {r['situation']} | {r['question']} | {(r['answers'] or [''])[0]} | {r['prediction']} |"
              for r in records[:12]]
    if plots:
        heading = "Bird's-eye views" if metrics["benchmark"] == "msqa" else "The examples' frames"
        lines += ["", f"## {heading}", ""] + [f"![{p.stem}](plots/{p.name})" for p in plots]
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")


def evaluate(cfg: EvalConfig) -> dict:
    """Predict a split, score it and write metrics.json, predictions.jsonl, report.md and plots into cfg.out."""
    from loc3r.model.processor import make_benchmark_dataset
    from loc3r.train.checkpoint import load_model, resolve_checkpoint

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
    records = predict_dataset(model, dataset, cfg.batch_size, cfg.max_new_tokens, dev, cfg.limit, maps)
    metrics = compute_metrics(records, cfg.benchmark, cfg.protocol, judge)
    print(f"answer metrics: the {cfg.protocol} protocol ({PROTOCOL_SOURCES[cfg.protocol]})")
    if cfg.benchmark == "scanqa":
        if not metrics.get("qa", {}).get("java", True):
            print("note: no Java found: ScanQA's METEOR and PTB tokenizer are skipped (install a JRE, e.g. Debian's "
                  "default-jre-headless); the other metrics are reported")
    if metrics.get("qa", {}).get("n_unscored"):
        print(f"note: {metrics['qa']['n_unscored']} questions of types MSR3D's evaluator does not group are not scored")
    title = f"Evaluation of {ckpt} on {cfg.benchmark} {split}"
    with atomic_dir(out) as tmp:  # the outputs of one evaluation together: a kill leaves the previous ones whole
        write_outputs(tmp, cfg, data, dataset, model, records, maps, metrics, title)
    return metrics


def write_outputs(out: Path, cfg: EvalConfig, data: Path, dataset, model, records: list[dict], maps: dict,
                  metrics: dict, title: str) -> None:
    """metrics.json, predictions.jsonl, the plots and report.md of an evaluation, into `out`."""
    write_json(out / "metrics.json", metrics)
    (out / "predictions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    plots = []
    for r in unique_situations(records)[:cfg.plots] if cfg.benchmark in ("sqa3d", "msqa") else []:
        scene = dataset.scene(r["scene_id"])
        path = out / "plots" / f"{r['scene_id']}_{file_part(r['question_id'])}.png"
        map_colors = token_colors(scene.frames, model.config.frame_grid, model.config.frame_grid_extent)
        situation_plot(data, r["scene_id"], scene.world_to_bev, r, path, maps[r["question_id"]].reshape(-1, 2),
                       map_colors.reshape(-1, 3))
        plots.append(path)
    if cfg.benchmark in ("scanqa", "vsibench"):  # no situation to draw: the examples' frames
        for i, r in enumerate(records[:cfg.plots]):
            path = out / "plots" / f"frames_{i}.png"
            frame_strip(dataset[i].frames, path)
            plots.append(path)
    if cfg.benchmark == "sqa3d":
        write_report(out, metrics, records, plots, title)
    else:
        write_benchmark_report(out, metrics, records, plots, title)


def run(args: argparse.Namespace) -> int:
    metrics = evaluate(dataclass_from_args(EvalConfig, args))
    if metrics["benchmark"] == "sqa3d":
        print(json.dumps({"localization": metrics["localization"], "n": metrics["n"],
                          "qa": {k: metrics["qa"][k] for k in ("em1", "em_refined")}}, indent=1))
    else:
        print(json.dumps({k: v for k, v in metrics.items() if k != "qa"} | {"qa": metrics.get("qa", {})}, indent=1))
    print(f"wrote {args.out / 'metrics.json'} and {args.out / 'report.md'}")
    return 0

