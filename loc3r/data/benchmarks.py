"""Readers of the other three data sets of the paper, in their releases' formats, into one record type.

- ScanQA (ATR-DBI/ScanQA): `<root>/ScanQA_v1.0_{train,val,test_w_obj,test_wo_obj}.json`, a JSON list of
  {scene_id, question_id (str, "train-scene0000-0"), question, answers [str], object_ids, object_names}; the test
  files have no answers. Not situated: the pseudo-situation, no pose.
- MSQA, its ScanNet part (MSR3D/MSR3D): `<root>/msqa_scannet_{split}.json`, a JSON list of {scan_id, situation,
  question, answers, location [x, y, z], orientation [fx, fy, 0] (a facing vector), type, index}, in ScanNet's
  axis-aligned frame (geometry.aligned_to_raw_pose). Image placeholders in situations ("<chair-1-IMG>") become the
  object's name ("chair").
- VSI-Bench (vision-x-nyu/thinking-in-space, the HF data set's rows): {id, dataset, scene_name, question_type,
  question, ground_truth, options}, from .json / .jsonl (or .parquet with pyarrow); videos at
  `<root>/<dataset>/<scene_name>.mp4` as the Hugging Face data set unpacks, or where VLM-3R's scripts export them
  (vsibench_video). Also VLM-3R's training data in LLaVA's conversation format: {id,
  data_source, scene_name, question_type, video, conversations: [{from: human, value: "<image>\\n..."},
  {from: gpt, value}]}.

Every problem is one Loc3rError naming the file and the entry.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from loc3r.constants import NO_SITUATION
from loc3r.data import paths
from loc3r.errors import Loc3rError

SCANQA_SPLITS = ("train", "val", "test_w_obj", "test_wo_obj")
VSI_MULTIPLE_CHOICE = ("object_rel_direction_easy", "object_rel_direction_medium", "object_rel_direction_hard",
                       "object_rel_distance", "route_planning", "obj_appearance_order")
VSI_NUMERIC = ("object_abs_distance", "object_counting", "object_size_estimation", "room_size_estimation")
# VSI-Bench's prompt (lmms-eval tasks/vsibench/utils.py): a pre-prompt, the question, then per kind of answer
VSI_PRE_PROMPT = "These are frames of a video."
VSI_NUMERIC_POST = "Please answer the question using a single word or phrase."
VSI_CHOICE_POST = "Answer with the option's letter from the given choices directly."


@dataclass
class QARecord:
    benchmark: str  # scanqa | msqa | vsibench
    question_id: str
    scene_id: str
    situation: str  # NO_SITUATION when the question has none
    question: str  # the text the model is asked (VSI-Bench: with its options and instructions)
    answers: list[str]  # references; empty for a test split without answers
    question_type: str
    location_xyz: np.ndarray | None = None  # MSQA: [3] in the axis-aligned ScanNet frame
    facing_xy: np.ndarray | None = None  # MSQA: [2] facing vector, same frame
    video: str | None = None  # VSI-Bench: video path relative to the data root
    extra: dict = field(default_factory=dict)  # the release's other fields (object ids, options, ...)

    @property
    def has_situation(self) -> bool:
        return self.location_xyz is not None


def _load(path: Path):
    try:
        text = Path(path).read_text()
    except FileNotFoundError:
        raise Loc3rError(f"{path}: file not found") from None
    except (OSError, UnicodeDecodeError) as e:
        raise Loc3rError(f"{path}: cannot read ({e})") from None
    try:
        if Path(path).suffix == ".jsonl":
            return [json.loads(line) for line in text.splitlines() if line.strip()]
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise Loc3rError(f"{path}: not valid JSON ({e})") from None


def _list(path: Path, data) -> list:
    if not isinstance(data, list):
        raise Loc3rError(f"{path}: expected a JSON list of entries, got {type(data).__name__}")
    return data


def _get(path: Path, index: int, entry, name: str, kind, what: str = "entry"):
    if not isinstance(entry, dict) or name not in entry:
        raise Loc3rError(f"{path}: {what} {index} has no {name!r}")
    value = entry[name]
    if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
        raise Loc3rError(f"{path}: {what} {index} field {name!r} is {type(value).__name__}, expected "
                         f"{kind.__name__ if isinstance(kind, type) else '/'.join(k.__name__ for k in kind)}")
    return value


MAX_COORDINATE_M = 1e4


def _text(path: Path, index: int, entry, name: str) -> str:
    """A text field that must say something (a question, a situation)."""
    value = _get(path, index, entry, name, str)
    if not value.strip():
        raise Loc3rError(f"{path}: entry {index} field {name!r} is empty")
    return value


def _scene(path: Path, index: int, entry, name: str) -> str:
    """A scene id field, checked to name a folder inside the data root (data.paths)."""
    return paths.scene_id(_get(path, index, entry, name, str), f"{path}: entry {index} field {name!r}")


def _vector(path: Path, index: int, entry, name: str, size: int) -> np.ndarray:
    value = _get(path, index, entry, name, list)
    try:
        v = np.array(value, np.float64)
    except (TypeError, ValueError):
        v = np.zeros(0)
    if v.shape != (size,) or not np.isfinite(v).all():
        raise Loc3rError(f"{path}: entry {index} field {name!r} must be {size} finite numbers")
    if np.abs(v).max() > MAX_COORDINATE_M:  # a room's coordinates; 1e300 would overflow in the frame changes
        raise Loc3rError(f"{path}: entry {index} field {name!r} is {v.tolist()}: beyond {MAX_COORDINATE_M:g} m, not "
                         "a position or direction in a room")
    return v


# ---------------------------------------------------------------------------------------------------------
# ScanQA
# ---------------------------------------------------------------------------------------------------------


def scanqa_path(root: str | Path, split: str) -> Path:
    if split not in SCANQA_SPLITS:
        raise Loc3rError(f"unknown ScanQA split {split!r}: expected one of {', '.join(SCANQA_SPLITS)}")
    return Path(root) / f"ScanQA_v1.0_{split}.json"


def read_scanqa(path: str | Path) -> list[QARecord]:
    path = Path(path)
    records = []
    for k, e in enumerate(_list(path, _load(path))):
        answers = e.get("answers", []) if isinstance(e, dict) else []
        if not isinstance(answers, list) or not all(isinstance(a, str) for a in answers):
            raise Loc3rError(f"{path}: entry {k} field 'answers' must be a list of strings")
        records.append(QARecord(
            "scanqa", str(_get(path, k, e, "question_id", (str, int))), _scene(path, k, e, "scene_id"),
            NO_SITUATION, _text(path, k, e, "question"), list(answers), "N/A",
            extra={n: e[n] for n in ("object_ids", "object_names") if n in e}))
    return records


# ---------------------------------------------------------------------------------------------------------
# MSQA
# ---------------------------------------------------------------------------------------------------------

_IMAGE_PLACEHOLDER = re.compile(r"<([^<>]+?)(?:-\d+)?-IMG>")


def msqa_text(text: str) -> str:
    """A situation or question with its image placeholders replaced by the objects' names: "<chair-1-IMG>" ->
    "chair" (MSQA's text-only form)."""
    return " ".join(_IMAGE_PLACEHOLDER.sub(lambda m: m.group(1).replace("_", " "), text).split())


def msqa_path(root: str | Path, split: str) -> Path:
    return Path(root) / f"msqa_scannet_{split}.json"


def read_msqa(path: str | Path) -> list[QARecord]:
    path = Path(path)
    records = []
    for k, e in enumerate(_list(path, _load(path))):
        where = f"entry {k}" + (f" (index {e['index']})" if isinstance(e, dict) and "index" in e else "")
        if not isinstance(e, dict) or "location" not in e:
            raise Loc3rError(f"{path}: {where} has no 'location'")
        if "orientation" not in e:
            raise Loc3rError(f"{path}: {where} has no 'orientation'")
        answers = _get(path, k, e, "answers", (list, str))
        answers = [answers] if isinstance(answers, str) else answers
        if not answers or not all(isinstance(a, str) for a in answers):
            raise Loc3rError(f"{path}: {where} field 'answers' must be one or more strings")
        facing = _vector(path, k, e, "orientation", 3)[:2]
        if np.linalg.norm(facing) < 1e-8:
            raise Loc3rError(f"{path}: {where} 'orientation' has no horizontal direction")
        records.append(QARecord(
            "msqa", str(e.get("index", k)), _scene(path, k, e, "scan_id"),
            msqa_text(_text(path, k, e, "situation")), msqa_text(_text(path, k, e, "question")),
            [msqa_text(a) for a in answers], str(e.get("type", "N/A")),
            location_xyz=_vector(path, k, e, "location", 3), facing_xy=facing))
    return records


# ---------------------------------------------------------------------------------------------------------
# VSI-Bench
# ---------------------------------------------------------------------------------------------------------


def vsi_question(question: str, question_type: str, options: list[str] | None) -> str:
    """The benchmark's own prompt for a question (lmms-eval vsibench: pre-prompt, question, options, post-prompt)."""
    if question_type in VSI_MULTIPLE_CHOICE:
        return "\n".join([VSI_PRE_PROMPT, question, "Options:\n" + "\n".join(options or []), VSI_CHOICE_POST])
    return "\n".join([VSI_PRE_PROMPT, question, VSI_NUMERIC_POST])


def _rows(path: Path) -> list:
    if path.suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ModuleNotFoundError:
            raise Loc3rError(f"{path}: reading parquet needs pyarrow (pip install pyarrow), or give the rows as "
                             ".json / .jsonl") from None
        try:
            return pq.read_table(path).to_pylist()
        except (OSError, ValueError) as e:
            raise Loc3rError(f"{path}: unreadable parquet ({e})") from None
    return _list(path, _load(path))


def _vsi_truth(path: Path, k: int, kind: str, truth, options: list[str] | None):
    """A row's ground truth, checked as the official evaluation reads it: a choice's letter among its options'
    ("A. table" -> "A"); a number that is finite and not 0 (MRA divides by it: thinking-in-space's vsibench utils
    raise ZeroDivisionError there, so such a row cannot be scored)."""
    if kind in VSI_MULTIPLE_CHOICE:
        letters = [o.split(".")[0].strip() for o in options]
        if str(truth).strip() not in letters:
            raise Loc3rError(f"{path}: entry {k} ground_truth {truth!r} is not one of its options' letters "
                             f"({', '.join(letters)})")
        return truth
    try:
        value = float(truth)
    except ValueError:
        raise Loc3rError(f"{path}: entry {k} ground_truth {truth!r} of a numeric question ({kind}) is not a "
                         "number") from None
    if not np.isfinite(value) or value == 0:
        raise Loc3rError(f"{path}: entry {k} ground_truth {truth!r} of a numeric question ({kind}) cannot be scored: "
                         "MRA divides by it (the official evaluator fails on 0) and needs a finite number")
    return truth


def read_vsibench(path: str | Path) -> list[QARecord]:
    """VSI-Bench rows, or VLM-3R's training conversations (recognised by their 'conversations' field)."""
    path = Path(path)
    records = []
    for k, e in enumerate(_rows(path)):
        kind = _get(path, k, e, "question_type", str)
        if kind not in VSI_MULTIPLE_CHOICE + VSI_NUMERIC:
            raise Loc3rError(f"{path}: entry {k} has an unknown question_type {kind!r} (VSI-Bench has "
                             f"{', '.join(VSI_MULTIPLE_CHOICE + VSI_NUMERIC)})")
        scene = _scene(path, k, e, "scene_name")
        if "conversations" in e:  # VLM-3R / LLaVA conversation format
            turns = _get(path, k, e, "conversations", list)
            human = next((t.get("value") for t in turns if isinstance(t, dict) and t.get("from") == "human"), None)
            gpt = next((t.get("value") for t in turns if isinstance(t, dict) and t.get("from") == "gpt"), None)
            if not isinstance(human, str) or not isinstance(gpt, str):
                raise Loc3rError(f"{path}: entry {k} needs a 'human' and a 'gpt' turn in 'conversations'")
            question = human.replace("<image>", "").strip()
            source = paths.scene_id(str(e.get("data_source", "scannet")), f"{path}: entry {k} field 'data_source'")
            video = paths.relative_file(str(e.get("video") or f"{source}/{scene}.mp4"),
                                        f"{path}: entry {k} field 'video'")
            records.append(QARecord("vsibench", str(e.get("id", k)), scene, NO_SITUATION, question, [gpt.strip()],
                                    kind, video=str(video)))
            continue
        options = e.get("options")
        if kind in VSI_MULTIPLE_CHOICE and not (isinstance(options, list) and options):
            raise Loc3rError(f"{path}: entry {k} is multiple choice ({kind}) but has no 'options'")
        if options is not None and not (isinstance(options, list) and all(isinstance(o, str) for o in options)):
            raise Loc3rError(f"{path}: entry {k} field 'options' must be a list of strings")
        truth = _vsi_truth(path, k, kind, _get(path, k, e, "ground_truth", (str, int, float)), options)
        dataset = paths.scene_id(_get(path, k, e, "dataset", str), f"{path}: entry {k} field 'dataset'")
        records.append(QARecord(
            "vsibench", str(e.get("id", k)), scene, NO_SITUATION,
            vsi_question(_text(path, k, e, "question"), kind, options), [str(truth)], kind,
            video=f"{dataset}/{scene}.mp4", extra={"options": options} if options else {}))
    return records


def vsibench_rows_path(root: str | Path, split: str) -> Path | None:
    """The VSI-Bench rows of a split under the data root (vsibench/<split>.jsonl, .json or .parquet), None if none."""
    candidates = [Path(root) / "vsibench" / f"{split}{ext}" for ext in (".jsonl", ".json", ".parquet")]
    return next((c for c in candidates if c.is_file()), None)


def vsibench_video(root: str | Path, video: str, where: str) -> Path:
    """The file of a record's video (`video`: relative to root, checked to stay inside it), as the VSI-Bench data set
    unpacks (`<dataset>/<scene>.mp4`) or else where VLM-3R's export scripts write the videos of a scan set:
    `<dataset>/videos/<scene>.mp4` or `<dataset>/videos/<split>/<scene>.mp4`, the data set folder named in any case
    (VITA-Group/VLM-3R README: `data/vlm_3r_data/scannet/videos/scene0191_00.mp4`;
    `vlm_3r_data_process/src/metadata_generation/ScanNet/preprocess/export_video.py` writes `<out>/<split>/<scene>.mp4`,
    and its ScanNet++ / ARKitScenes metadata name `<Dataset>/videos/<split>/<scene>.mp4`). A missing video is one
    line naming the paths looked at."""
    root = Path(root)
    path = paths.inside(root, video, where)
    if path.is_file():
        return path
    parts = PurePosixPath(video).parts
    if len(parts) != 2:
        raise Loc3rError(f"{path}: file not found")
    dataset, name = parts
    folders = [d / "videos" for d in (root.iterdir() if root.is_dir() else [])
               if d.name.lower() == dataset.lower() and (d / "videos").is_dir()]
    for videos in sorted(folders):
        splits = sorted(d for d in videos.iterdir() if d.is_dir() and not d.name.startswith("."))
        for candidate in [videos / name, *(d / name for d in splits)]:
            if candidate.is_file():
                return candidate
    raise Loc3rError(f"{path}: file not found (nor VLM-3R's {root}/{dataset}/videos/[<split>/]{name})")
