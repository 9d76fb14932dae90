"""Checks of a data root that read no image and build no cache (`loc3r check-data`, and `train` before it starts):
per split of a source, the questions and the situated ones, the scenes (VSI-Bench: videos) asked about and missing,
the scans a cache build would stop on, and the situations outside their scene.

A scan is listed, not read: its colour frames and pose files are names in their folders, its depth intrinsics a stat.
Poses are read for the T frames spread uniformly over the scan's frames (what sampling takes when every pose is
valid: T small files a scan); only where one of them is invalid (lost tracking) or the scan has fewer frames than T
are all its poses read and counted (ScanNetScene.valid_frame_ids). A situation is outside its scene when its position
in the raw scan frame lies beyond the axis-aligned (x, y) box of the scan's mesh grown by OUTSIDE_MARGIN_M (one read
of each situated scan's mesh; a scan without a mesh is not checked): a warning, since a run goes on.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from loc3r import geometry
from loc3r.data.benchmarks import QARecord, msqa_path, scanqa_path, vsibench_rows_path, vsibench_video
from loc3r.data.dataset import record_situated
from loc3r.data.scannet import ScanNetScene, find_layout, read_ply_vertices, uniform_indices
from loc3r.data.sqa3d import sqa3d_paths
from loc3r.errors import Loc3rError

EVAL_SPLITS = {"sqa3d": ("val", "test"), "scanqa": ("val", "test_w_obj", "test_wo_obj"), "msqa": ("val", "test"),
               "vsibench": ("val", "test")}
OUTSIDE_MARGIN_M = 0.5  # a situation this far beyond its scan's mesh box is reported
SHOWN = 3  # names given in a problem's line


# ---------------------------------------------------------------------------------------------------------
# Scans and videos
# ---------------------------------------------------------------------------------------------------------


@dataclass
class ScanStatus:
    """What the check learns of one scan without reading its images."""

    found: bool
    frames: int = 0  # colour frames
    valid_poses: int | None = None  # finite poses, counted where the probe met an invalid one; None: at least T
    problem: str | None = None  # why a cache build would stop (one line naming the file)
    mesh: Path | None = None  # the raw mesh, when the scan has one


def scan_status(root: Path, scene_id: str, num_frames: int) -> ScanStatus:
    """A scan's files, listed, and its poses probed at the T frames uniform sampling takes (module docstring)."""
    files = find_layout(root, scene_id)
    if not files.dir.is_dir():
        return ScanStatus(found=False)
    scene = ScanNetScene(root, scene_id)
    try:
        ids = scene.frame_ids
        names = set(os.listdir(files.pose_dir)) if files.pose_dir.is_dir() else set()
        unposed = [i for i in ids if files.pose(i).name not in names]
        if unposed:
            raise Loc3rError(f"{files.pose(unposed[0])}: file not found ({len(unposed)} of {len(ids)} frames have "
                             "no pose file)")
        if not files.intrinsic_depth.is_file():
            raise Loc3rError(f"{files.intrinsic_depth}: file not found")
        probe = scene.read_poses(np.asarray(ids)[uniform_indices(len(ids), num_frames)])
        valid = None
        if len(ids) < num_frames or not geometry.valid_pose_mask(probe).all():
            valid = len(scene.valid_frame_ids)
    except Loc3rError as e:
        return ScanStatus(found=True, problem=str(e))
    return ScanStatus(found=True, frames=len(ids), valid_poses=valid, mesh=files.mesh if files.mesh.is_file() else None)


class Scans:
    """Scan statuses and mesh boxes, each looked up once however many sources and splits name the scan."""

    def __init__(self, num_frames: int):
        self.num_frames = num_frames
        self.status: dict[tuple[Path, str], ScanStatus] = {}
        self.boxes: dict[Path, tuple[np.ndarray, np.ndarray]] = {}

    def __call__(self, root: Path, scene_id: str) -> ScanStatus:
        key = (root, scene_id)
        if key not in self.status:
            self.status[key] = scan_status(root, scene_id, self.num_frames)
        return self.status[key]

    def mesh_box(self, mesh: Path) -> tuple[np.ndarray, np.ndarray]:
        """(min, max) [3] of the mesh's vertices, raw scan frame."""
        if mesh not in self.boxes:
            v = read_ply_vertices(mesh)
            self.boxes[mesh] = v.min(0), v.max(0)
        return self.boxes[mesh]


def situation_xy(record, box: tuple[np.ndarray, np.ndarray], alignment: np.ndarray) -> np.ndarray:
    """A situated record's position (x, y) in the raw scan frame: SQA3D's relative to the mesh box's centre, MSQA's
    from the axis-aligned frame (`alignment`: the scan's raw -> aligned)."""
    if isinstance(record, QARecord):
        return geometry.aligned_to_raw_pose(alignment, record.location_xyz, record.facing_xy)[0]
    return record.position[:2] + (box[0][:2] + box[1][:2]) / 2


# ---------------------------------------------------------------------------------------------------------
# One split of one source
# ---------------------------------------------------------------------------------------------------------


@dataclass
class SplitReport:
    benchmark: str
    root: str
    split: str
    questions: int = 0  # questions of the split's file
    used: int | None = None  # train: the questions the run draws (the source's fraction)
    situated: int = 0
    scenes: int = 0  # scenes (VSI-Bench: videos) the questions are asked about
    scene_ids: list[str] = field(default_factory=list)  # the scans asked about (VSI-Bench: none, it reads videos)
    missing_scenes: dict[str, int] = field(default_factory=dict)  # scene (VSI-Bench: video) -> its questions
    few_poses: dict[str, str] = field(default_factory=dict)  # scene -> its valid poses
    broken: list[str] = field(default_factory=list)  # other problems that stop a run, one line each
    outside: list[str] = field(default_factory=list)  # warnings: situations outside their scene
    unchecked_bounds: int = 0  # situated questions on scans without a mesh
    text_tokens: dict = field(default_factory=dict)  # mean, max and counted (questions tokenized)

    @property
    def problems(self) -> list[str]:
        where, what = f"{self.benchmark} {self.split}", "video" if self.benchmark == "vsibench" else "scene"
        out = []
        if self.missing_scenes:
            root = Path(self.root)
            place = (f"{root / 'vsibench'}" if what == "video" else f"{root / 'scans'} (nor posed_images/)"
                     if (root / "scans").is_dir() or (root / "posed_images").is_dir()
                     else f"{root}, which has no scans/ or posed_images/ folder")
            out.append(f"{where}: {len(self.missing_scenes)} {what}s missing under {place} "
                       f"({sum(self.missing_scenes.values())} questions): {first(self.missing_scenes)}")
        if self.few_poses:
            out.append(f"{where}: {len(self.few_poses)} scans with fewer valid poses than the frames of a video: "
                       f"{first(self.few_poses)}")
        return out + [f"{where}: {b}" for b in self.broken]


def first(names) -> str:
    names = list(names)
    return ", ".join(names[:SHOWN]) + (", ..." if len(names) > SHOWN else "")


def check_split(report: SplitReport, records: list, scans: Scans, token_file: Callable[[Path, str], Path] | None = None,
                full: bool = True) -> None:
    """Fill `report` with what stops a run on these records (`token_file(root, scene)`: where the cut3r prior needs
    a scene's cached camera tokens), and with `full` the situations outside their scene."""
    root = Path(report.root)
    report.questions, report.situated = len(records), sum(record_situated(r) for r in records)
    by_scene: dict[str, list] = {}
    key = (lambda r: r.video) if report.benchmark == "vsibench" else (lambda r: r.scene_id)
    for r in records:
        by_scene.setdefault(key(r), []).append(r)
    report.scenes = len(by_scene)
    report.scene_ids = [] if report.benchmark == "vsibench" else sorted(by_scene)
    for name, recs in sorted(by_scene.items()):
        if report.benchmark == "vsibench":
            try:
                vsibench_video(root / "vsibench", name, str(root / "vsibench"))
            except Loc3rError:
                report.missing_scenes[name] = len(recs)
            continue
        status = scans(root, name)
        if not status.found:
            report.missing_scenes[name] = len(recs)
        elif status.problem is not None:
            report.broken.append(status.problem)
        elif status.valid_poses is not None and status.valid_poses < scans.num_frames:
            report.few_poses[name] = f"{status.valid_poses} of {status.frames}"
        elif token_file is not None and not token_file(root, name).is_file():
            report.broken.append(f"{token_file(root, name)}: no cached CUT3R tokens (run `loc3r extract-priors "
                                 f"--data {root} --frames {scans.num_frames}`)")
        elif status.mesh is None and report.benchmark == "sqa3d" and any(record_situated(r) for r in recs):
            report.broken.append(f"{find_layout(root, name).mesh}: file not found (SQA3D positions are relative to "
                                 "its bounding box)")
        elif full and status.mesh is not None:
            check_bounds(report, [r for r in recs if record_situated(r)], root, scans.mesh_box(status.mesh))
        elif full:
            report.unchecked_bounds += sum(record_situated(r) for r in recs)


def check_bounds(report: SplitReport, records: list, root: Path, box: tuple[np.ndarray, np.ndarray]) -> None:
    """Warn of situations beyond the mesh's (x, y) box grown by OUTSIDE_MARGIN_M."""
    lo, hi = box[0][:2] - OUTSIDE_MARGIN_M, box[1][:2] + OUTSIDE_MARGIN_M
    alignment = None
    if any(isinstance(r, QARecord) for r in records):
        try:
            alignment = ScanNetScene(root, records[0].scene_id).axis_alignment
        except Loc3rError as e:  # MSQA on posed images without an axis alignment: the run would stop there too
            report.broken.append(str(e))
            return
    for r in records:
        xy = situation_xy(r, box, alignment)
        beyond = float(np.max(np.maximum(lo - xy, xy - hi)))
        if beyond > 0:
            report.outside.append(f"{r.scene_id} question {r.question_id}: ({xy[0]:.2f}, {xy[1]:.2f}) m, "
                                  f"{beyond + OUTSIDE_MARGIN_M:.2f} m outside the mesh's box")


def question_file(benchmark: str, root: Path, split: str) -> Path:
    """Where the question file of a split is (VSI-Bench: the first of .jsonl, .json and .parquet present, else its
    .jsonl)."""
    if benchmark == "vsibench":
        return vsibench_rows_path(root, split) or root / "vsibench" / f"{split}.jsonl"
    if benchmark == "sqa3d":
        return sqa3d_paths(root, split)[0]
    return scanqa_path(root / "scanqa", split) if benchmark == "scanqa" else msqa_path(root / "msqa", split)
