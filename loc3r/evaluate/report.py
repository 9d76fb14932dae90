"""report.md of `loc3r eval`: what a person reads first. The headline metrics beside the blind baselines on the same
questions, the answers per family beside the family's answer prior, the benchmark's official metrics in full, and
examples drawn across scenes and outcomes (best, median and worst localization; right and wrong answers), each with
its position error, yaw error and answer mark. Numbers rounded as people read them: percent to 0.1, metres to
0.01, degrees to 1."""

from __future__ import annotations

from pathlib import Path

from loc3r.evaluate.baselines import family
from loc3r.evaluate.metrics import ANSWER_SCORE_NAMES, PROTOCOL_SOURCES
from loc3r.io import atomic_path

LOCALIZATION_COLUMNS = (("acc_0.5m", "Acc@0.5m"), ("acc_1.0m", "Acc@1.0m"), ("acc_15deg", "Acc@15°"),
                        ("acc_30deg", "Acc@30°"))
RIGHT = 0.5  # an answer scoring at least this is marked right (EM is 0 or 1; VSI-Bench's MRA lies between)


def metres(v) -> str:
    return "–" if v is None else f"{v:.2f} m"


def degrees(v) -> str:
    return "–" if v is None else f"{v:.0f}°"


def percent(v) -> str:
    return "–" if v is None else f"{v:.1f}"


def mark(score) -> str:
    """✓ / ✗ of an answer score (with the score itself where it is partial, VSI-Bench's MRA)."""
    if score is None:
        return "–"
    sign = "✓" if score >= RIGHT else "✗"
    return sign if score in (0.0, 1.0) else f"{sign} {score:.2f}"


def cell(text) -> str:
    """Text safe inside a markdown table cell."""
    return str(text).replace("\n", " ").replace("|", "\\|")


def spread_over_scenes(records: list[dict], k: int) -> list[dict]:
    """Up to k records taken one scene at a time (the scenes in order of appearance, round robin)."""
    by_scene: dict[str, list[dict]] = {}
    for r in records:
        by_scene.setdefault(r["scene_id"], []).append(r)
    queues, out = list(by_scene.values()), []
    while len(out) < k and any(queues):
        for q in queues:
            if q and len(out) < k:
                out.append(q.pop(0))
    return out


def choose_examples(records: list[dict], situations: list[dict], answers: int = 3) -> list[tuple[str, dict]]:
    """(outcome, record) pairs: the situations of best, median and worst position error, then up to `answers`
    right and `answers` wrong answers (alternating), spread over scenes."""
    out: list[tuple[str, dict]] = []
    ranked = sorted(situations, key=lambda r: r["position_error_m"])
    if ranked:
        picks = {"best localization": ranked[0], "median localization": ranked[len(ranked) // 2],
                 "worst localization": ranked[-1]}
        seen = set()
        for outcome, r in picks.items():
            if id(r) not in seen:
                seen.add(id(r))
                out.append((outcome, r))
    scored = [r for r in records if r.get("answer_score") is not None]
    right = spread_over_scenes([r for r in scored if r["answer_score"] >= RIGHT], answers)
    wrong = spread_over_scenes([r for r in scored if r["answer_score"] < RIGHT], answers)
    for k in range(max(len(right), len(wrong))):  # alternating, so that the first few drawn show both
        out += [(outcome, rs[k]) for outcome, rs in (("right answer", right), ("wrong answer", wrong)) if k < len(rs)]
    return out


def summary_table(metrics: dict, baselines: dict, score_name: str, model_score) -> list[str]:
    """The model's headline numbers beside the blind baselines (rows), on the same questions."""
    has_loc = bool(metrics.get("localization"))
    head = [label for _, label in LOCALIZATION_COLUMNS] + ["median position error", "median yaw error"] \
        if has_loc else []
    lines = ["| | " + " | ".join(head + [score_name]) + " |", "|---" * (len(head) + 2) + "|"]

    def row(name: str, loc: dict | None, score) -> str:
        cells = []
        if has_loc:
            cells = [percent(loc[k]) for k, _ in LOCALIZATION_COLUMNS] + \
                [metres(loc["median_pos_err_m"]), degrees(loc["median_yaw_err_deg"])] if loc else ["–"] * len(head)
        return f"| {name} | " + " | ".join(cells + [percent(score)]) + " |"

    lines.append(row("**this model**", metrics.get("localization"), model_score))
    for name, b in baselines.items():
        lines.append(row(f"{name} (blind)" if name != "trajectory centre" else f"{name} (poses only)",
                         b.get("localization"), b.get("answers", {}).get("score")))
    return lines


def family_table(records: list[dict], baselines: dict, score_name: str) -> list[str]:
    """Per question family: n, the model's score, the answer prior's, the gain."""
    prior = baselines.get("answer prior", {}).get("answers", {}).get("by_family", {})
    groups: dict[str, list[float]] = {}
    for r in records:
        if r.get("answer_score") is not None:
            groups.setdefault(family(r), []).append(r["answer_score"])
    lines = [f"| family | questions | {score_name} | answer prior | gain |", "|---|---|---|---|---|"]
    for name, scores in sorted(groups.items()):
        model = 100.0 * sum(scores) / len(scores)
        p = prior.get(name)
        gain = "–" if p is None else f"{model - p:+.1f}"
        lines.append(f"| {cell(name)} | {len(scores)} | {percent(model)} | {percent(p)} | {gain} |")
    return lines


def official_table(metrics: dict) -> list[str]:
    """The benchmark's metrics under their official names (percent unless the name says otherwise)."""
    lines = []
    for part, heading in (("qa", "Answers"), ("localization", "Localization (per situation)")):
        values = {k: v for k, v in (metrics.get(part) or {}).items() if not isinstance(v, dict)}
        if not values:
            continue
        lines += [f"**{heading}**", "", "| metric | value |", "|---|---|"]
        lines += [f"| {k} | {v:.2f} |" if k.endswith(("_m", "_deg")) and isinstance(v, float)
                  else f"| {k} | {v:.1f} |" if isinstance(v, float) else f"| {k} | {v} |" for k, v in values.items()]
        lines.append("")
    by_type = (metrics.get("qa") or {}).get("by_type")
    if by_type:
        lines += ["**SQA3D's question types** (the question's first word)", "", "| type | n | EM@1 | refined EM |",
                  "|---|---|---|---|"]
        lines += [f"| {t} | {v['n']} | {percent(v['em1'])} | {percent(v['em_refined'])} |" for t, v in by_type.items()]
        lines.append("")
    return lines


def examples_table(examples: list[tuple[str, dict]], plots: dict[int, Path]) -> list[str]:
    lines = ["| outcome | scene | situation | question | reference | prediction | answer | position error "
             "| yaw error | plot |", "|---" * 10 + "|"]
    for outcome, r in examples:
        plot = plots.get(id(r))
        lines.append(" | ".join([
            f"| {outcome}", cell(r["scene_id"]), cell(r["situation"] if r["situated"] else "–"), cell(r["question"]),
            cell((r["gt_answers"] or [""])[0]), cell(r["answer"]), mark(r.get("answer_score")),
            metres(r.get("position_error_m")), degrees(r.get("yaw_error_deg")),
            f"[plot](plots/{plot.name})" if plot else "–"]) + " |")
    return lines


def write_report(out: Path, title: str, metrics: dict, records: list[dict], baselines: dict,
                 examples: list[tuple[str, dict]], plots: dict[int, Path], view: str | None) -> None:
    """report.md into `out`: plots maps id(record) -> its PNG in out/plots; view: the interactive page's name."""
    benchmark = metrics["benchmark"]
    score_name = ANSWER_SCORE_NAMES[benchmark]
    scored = [r["answer_score"] for r in records if r.get("answer_score") is not None]
    model_score = 100.0 * sum(scored) / len(scored) if scored else None
    scenes = len({r["scene_id"] for r in records})
    situations = f", {metrics['n_situations']} situations" if "n_situations" in metrics else ""
    lines = [f"# {title}", "", f"{len(records)} questions in {scenes} scenes{situations}. Answers scored with the "
             f"{metrics.get('protocol', '')} protocol ({PROTOCOL_SOURCES.get(metrics.get('protocol'), '')})."]
    if view:
        lines += ["", f"Interactive view: [{view}]({view}) (one self-contained page: open it in a browser)."]
    lines += [""]
    if "note" in metrics:
        lines += [metrics["note"], ""]
    lines += ["## Summary", ""] + summary_table(metrics, baselines, score_name, model_score)
    lines += ["", "Blind baselines, the best constant guess on these same questions (as VSI-Bench's frequency row, an "
              "upper bound of what ignoring the video scores): **mean pose** (the situations' mean position and "
              "facing), **trajectory centre** (the mean of the video's camera positions: what the poses alone say), "
              "**answer prior** (the most frequent answer of the question's family). Localization is scored once per "
              "situation."]
    if scored:
        lines += ["", "## Answers by family", ""] + family_table(records, baselines, score_name)
    lines += ["", "## Official metrics", ""] + official_table(metrics)
    if examples:
        lines += ["## Examples", "", "Across scenes and outcomes; ✓ / ✗ the answer's mark "
                  f"({score_name}), errors of the predicted position and facing.", ""]
        lines += examples_table(examples, plots)
    if plots:
        lines += ["", "## Bird's-eye views", ""]
        names = {id(r): outcome for outcome, r in examples}
        for key, path in plots.items():
            lines += [f"**{names.get(key, '')}**: {path.stem}", "", f"![{path.stem}](plots/{path.name})", ""]
    with atomic_path(out / "report.md") as tmp:
        tmp.write_text("\n".join(lines) + "\n")
