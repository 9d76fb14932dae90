"""Reader of the SQA3D release format (situated questions, answers and the speaker's pose).

    <root>/sqa_task/balanced/v1_balanced_questions_<split>_scannetv2.json
        {"questions": [{"question", "question_id", "scene_id", "situation", "alternative_situation"}, ...]}
    <root>/sqa_task/balanced/v1_balanced_sqa_annotations_<split>_scannetv2.json
        {"annotations": [{"question_id", "scene_id", "answers": [{"answer", ...}], "question_type",
                          "answer_type", "position": {"x","y","z"}, "rotation": {"_x","_y","_z","_w"}}, ...]}

The two files are joined by question_id. SQA3D positions are metres in the raw ScanNet frame, relative to the
centre of the raw mesh's bounding box (the official visualiser subtracts it); rotations are yaw-only
quaternions (x, y, z, w) of an agent whose forward axis is -x (see loc3r.geometry).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loc3r import geometry
from loc3r.data import paths
from loc3r.errors import Loc3rError

SPLITS = ("train", "val", "test")


@dataclass
class SQA3DRecord:
    question_id: int
    scene_id: str
    situation: str
    alternative_situation: list[str]
    question: str
    answers: list[str]
    question_type: str
    answer_type: str
    position: np.ndarray  # [3] metres, raw frame relative to the mesh bounding-box centre
    rotation_xyzw: np.ndarray  # [4] yaw-only quaternion

    def pose_in_bev(self, world_to_bev: np.ndarray, mesh_center: np.ndarray) -> tuple[np.ndarray, float]:
        """Speaker position [2] and yaw (rad) in a video's BEV frame."""
        raw_xy = self.position[:2] + np.asarray(mesh_center)[:2]
        xy, yaw = geometry.world_to_bev_pose(world_to_bev, raw_xy, geometry.sqa3d_quat_to_yaw(self.rotation_xyzw))
        return xy.astype(np.float32), float(yaw)


def sqa3d_paths(root: str | Path, split: str) -> tuple[Path, Path]:
    """Question and annotation files of a split: under <root>/sqa_task/balanced/ as the release unpacks, or directly
    in <root> where only they are (as the SQA3D repository's LLM/ folder keeps them)."""
    if split not in SPLITS:
        raise Loc3rError(f"unknown SQA3D split {split!r}: expected one of {', '.join(SPLITS)}")
    names = f"v1_balanced_questions_{split}_scannetv2.json", f"v1_balanced_sqa_annotations_{split}_scannetv2.json"
    base = Path(root) / "sqa_task" / "balanced"
    if not (base / names[0]).is_file() and (Path(root) / names[0]).is_file():
        base = Path(root)
    return base / names[0], base / names[1]


def _load_list(path: Path, key: str) -> list[dict]:
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise Loc3rError(f"{path}: file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise Loc3rError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get(key), list):
        raise Loc3rError(f"{path}: expected a JSON object with a list {key!r}")
    return obj[key]


def _field(path: Path, index: int, entry, name: str, kind):
    if not isinstance(entry, dict) or name not in entry:
        raise Loc3rError(f"{path}: entry {index} is missing field {name!r}")
    value = entry[name]
    if not isinstance(value, kind):
        raise Loc3rError(f"{path}: entry {index} field {name!r} has type {type(value).__name__}, "
                         f"expected {kind.__name__ if isinstance(kind, type) else '/'.join(k.__name__ for k in kind)}")
    return value


def _number(path: Path, index: int, obj: dict, parent: str, name: str) -> float:
    value = obj.get(name) if isinstance(obj, dict) else None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value):
        raise Loc3rError(f"{path}: entry {index} field {parent}.{name} is missing or not a finite number")
    return float(value)


def _nonempty(path: Path, index: int, name: str, value: str) -> str:
    if not value.strip():
        raise Loc3rError(f"{path}: entry {index} field {name!r} is empty")
    return value


def read_sqa3d(root: str | Path, split: str) -> list[SQA3DRecord]:
    """All records of a split, in the question file's order."""
    q_path, a_path = sqa3d_paths(root, split)
    questions = _load_list(q_path, "questions")
    annotations = _load_list(a_path, "annotations")
    by_id = {}
    for k, ann in enumerate(annotations):
        qid = _field(a_path, k, ann, "question_id", int)
        if qid in by_id:
            raise Loc3rError(f"{a_path}: duplicate question_id {qid}")
        by_id[qid] = (k, ann)
    records = []
    for k, q in enumerate(questions):
        qid = _field(q_path, k, q, "question_id", int)
        if qid not in by_id:
            raise Loc3rError(f"{a_path}: no annotation for question_id {qid} (from {q_path.name})")
        j, ann = by_id[qid]
        answers = _field(a_path, j, ann, "answers", list)
        texts = [a.get("answer") for a in answers if isinstance(a, dict)]
        if not texts or not all(isinstance(t, str) for t in texts):
            raise Loc3rError(f"{a_path}: entry {j} has no answer text in 'answers'")
        pos, rot = _field(a_path, j, ann, "position", dict), _field(a_path, j, ann, "rotation", dict)
        position = np.array([_number(a_path, j, pos, "position", c) for c in ("x", "y", "z")])
        rotation = np.array([_number(a_path, j, rot, "rotation", c) for c in ("_x", "_y", "_z", "_w")])
        if np.linalg.norm(rotation) < 1e-8:
            raise Loc3rError(f"{a_path}: entry {j} rotation is a zero quaternion")
        scene_id = paths.scene_id(_field(q_path, k, q, "scene_id", str), f"{q_path}: entry {k} field 'scene_id'")
        if _field(a_path, j, ann, "scene_id", str) != scene_id:
            raise Loc3rError(f"{a_path}: entry {j} scene_id differs from the question's ({scene_id})")
        records.append(SQA3DRecord(
            question_id=qid,
            scene_id=scene_id,
            situation=_nonempty(q_path, k, "situation", _field(q_path, k, q, "situation", str)),
            alternative_situation=list(q.get("alternative_situation") or []),
            question=_nonempty(q_path, k, "question", _field(q_path, k, q, "question", str)),
            answers=texts,
            question_type=str(ann.get("question_type", "N/A")),
            answer_type=str(ann.get("answer_type", "other")),
            position=position,
            rotation_xyzw=rotation,
        ))
    return records
