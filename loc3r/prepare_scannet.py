"""`loc3r prepare-scannet`: export ScanNet's `.sens` files into the posed-images layout loc3r reads.

    loc3r prepare-scannet --scans DIR --out DATA [--frames T | --every K] [--workers N] [--overwrite]

reads ScanNet as downloaded, DIR/<scene_id>/<scene_id>.sens beside <scene_id>.txt and <scene_id>_vh_clean_2.ply
(loc3r/data/sens.py streams the .sens file: one frame in memory at a time), and writes

    DATA/scans/<scene_id>/color/<i>.jpg       the JPEG bytes as stored in the .sens (not re-encoded)
                          depth/<i>.png       16-bit PNG of the stored uint16 depth (millimetres)
                          pose/<i>.txt        4x4 camera-to-world, 6 decimals; -inf rows kept (lost tracking)
                          intrinsic/{intrinsic,extrinsic}_{color,depth}.txt
                          <scene_id>.txt, <scene_id>_vh_clean_2.ply   copied (when present)
                          .loc3r-prepare.json the .sens file's size and mtime and the options of this export

as ScanNet's SensReader exports them; <i> is the frame's index in the .sens file. `--frames T` writes only the frames
loc3r's uniform sampling of T valid-pose frames takes (`sample_frame_ids`, what training calls, so a scene exported
with --frames T samples the same T frames as the full export); `--every K` every K-th frame; neither, every frame.

Each scene is written into a temporary directory beside its target and renamed when whole: a killed run leaves
no half-written scene, and running the command again removes its temporaries and goes on. A scene whose
.loc3r-prepare.json matches its .sens file and the options is skipped; one exported from an older .sens is exported
again; one exported with other options (or not by this command) is an error unless --overwrite. A bad .sens file
fails its scene only: the others are exported, and the summary lists the failures (exit status 2).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from loc3r import geometry
from loc3r.command import add_dataclass_arguments, dataclass_from_args
from loc3r.data import paths
from loc3r.data.scannet import sample_frame_ids
from loc3r.data.sens import SensReader
from loc3r.errors import Loc3rError
from loc3r.io import atomic_dir
from loc3r.synth import formats

FINGERPRINT = ".loc3r-prepare.json"
DEPTH_SHIFT_MM = 1000.0  # loc3r reads depth/<i>.png as millimetres
JPEG_START = b"\xff\xd8"


@dataclass
class PrepareConfig:
    """The settings of `loc3r prepare-scannet` (its flags are generated from these fields and their comments)."""

    scans: Path  # ScanNet as downloaded: DIR/<scene_id>/<scene_id>.sens, .txt, _vh_clean_2.ply
    out: Path  # data root to write: OUT/scans/<scene_id>/ in the posed-images layout
    frames: int | None = None  # export only the T frames loc3r's uniform sampling over the valid poses takes
    every: int | None = None  # export every K-th frame (0, K, 2K, ...) instead of every frame
    scenes: list[str] | None = None  # only these scene ids (default: every DIR/<scene_id>/<scene_id>.sens)
    workers: int = 1  # processes exporting scenes in parallel
    overwrite: bool = False  # replace scenes exported with other options, or not by prepare-scannet

    def __post_init__(self):
        if self.frames is not None and self.every is not None:
            raise Loc3rError("--frames and --every exclude each other: pick one")
        if self.frames is not None and self.frames < 1:
            raise Loc3rError(f"--frames must be >= 1, got {self.frames}")
        if self.every is not None and self.every < 1:
            raise Loc3rError(f"--every must be >= 1, got {self.every}")
        if self.workers < 1:
            raise Loc3rError(f"--workers must be >= 1, got {self.workers}")

    @property
    def options(self) -> dict:
        """What decides an export's frames (recorded in its fingerprint)."""
        return {"frames": self.frames, "every": self.every}


@dataclass
class SceneResult:
    """What became of one scene (picklable: it comes back from a worker)."""

    scene_id: str
    status: str  # exported | skipped | failed
    frames: int = 0
    error: str = ""
    missing: tuple[str, ...] = ()  # of <scene_id>.txt and the mesh, those DIR did not have


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(parser, PrepareConfig)


# ---------------------------------------------------------------------------------------------------------
# Which scenes and which frames
# ---------------------------------------------------------------------------------------------------------

def find_scenes(scans: Path, only: list[str] | None) -> list[str]:
    """Directory names under `scans` that hold <name>/<name>.sens, sorted (or `only`, each checked to be there);
    each checked to be a scene id, so that every write stays inside --out."""
    if not scans.is_dir():
        raise Loc3rError(f"{scans}: no such directory (expected ScanNet as downloaded: <scene_id>/<scene_id>.sens)")
    names = only if only is not None else sorted(p.name for p in scans.iterdir() if not p.name.startswith("."))
    found = []
    for name in names:
        if only is None and not (scans / name / f"{name}.sens").is_file():
            continue
        paths.scene_id(name, str(scans))
        if not (scans / name / f"{name}.sens").is_file():
            raise Loc3rError(f"{scans / name / (name + '.sens')}: file not found (a scene of --scenes)")
        found.append(name)
    if not found:
        raise Loc3rError(f"{scans}: no <scene_id>/<scene_id>.sens files (ScanNet as downloaded)")
    return found


def select_frames(poses: np.ndarray, frames: int | None, every: int | None) -> list[int]:
    """Indices to export of a scan with poses [N, 4, 4]: the unique frames of sample_frame_ids over the valid
    poses (`frames`), every `every`-th frame, or all."""
    n = len(poses)
    if frames is not None:
        valid = np.flatnonzero(geometry.valid_pose_mask(poses))
        return sorted(set(sample_frame_ids(valid, frames).tolist()))
    return list(range(0, n, every or 1))


def _fingerprint(sens_path: Path, options: dict) -> dict:
    st = sens_path.stat()
    return {"sens": sens_path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns, "options": options}


def _previous(scene_dir: Path) -> dict | None:
    """The fingerprint of an earlier export in scene_dir, or None (absent or unreadable)."""
    try:
        return json.loads((scene_dir / FINGERPRINT).read_text())
    except (OSError, ValueError):
        return None


def up_to_date(scene_dir: Path, sens_path: Path, options: dict, overwrite: bool) -> bool:
    """Whether scene_dir already holds this export (skip it). A one-line error when it holds something this run
    must not replace: another export's options, or files prepare-scannet did not write (unless overwrite)."""
    if not scene_dir.exists():
        return False
    previous, fingerprint = _previous(scene_dir), _fingerprint(sens_path, options)
    if previous is not None and {k: previous.get(k) for k in fingerprint} == fingerprint:
        return True
    if overwrite:
        return False
    if previous is None:
        raise Loc3rError(f"{scene_dir}: exists and was not written by prepare-scannet: refusing to replace it "
                         "(pass --overwrite to replace it)")
    if previous.get("options") != options:
        raise Loc3rError(f"{scene_dir}: exported with other options ({_describe(previous.get('options'))}, now "
                         f"{_describe(options)}): pass --overwrite to export it again")
    return False  # same options, another .sens file: our own stale export


def _describe(options) -> str:
    options = options or {}
    if options.get("frames") is not None:
        return f"--frames {options['frames']}"
    if options.get("every") is not None:
        return f"--every {options['every']}"
    return "every frame"


# ---------------------------------------------------------------------------------------------------------
# One scene
# ---------------------------------------------------------------------------------------------------------

def remove_temporaries(scans_out: Path, scene_id: str) -> None:
    """What an interrupted export of scene_id left (io.atomic_dir's `.<scene_id>.<random>.tmp` and `.old`)."""
    for p in [*scans_out.glob(f".{scene_id}.*.tmp"), scans_out / f".{scene_id}.old"]:
        shutil.rmtree(p, ignore_errors=True)


def _write_frames(reader: SensReader, ids: list[int], tmp: Path) -> None:
    """color/, depth/ and pose/ of the frames `ids` into tmp."""
    for sub in ("color", "depth", "pose"):
        (tmp / sub).mkdir()
    for frame, color, depth in reader.frames(ids):
        if not color.startswith(JPEG_START):
            raise Loc3rError(f"{reader.path}: frame {frame.index}: its colour bytes are not a JPEG image")
        (tmp / "color" / f"{frame.index}.jpg").write_bytes(color)
        formats.write_depth_mm(tmp / "depth" / f"{frame.index}.png", reader.depth_mm(frame, depth))
        (tmp / "pose" / f"{frame.index}.txt").write_text(formats.matrix_text(frame.camera_to_world))


def export_scene(scans: Path, out: Path, scene_id: str, options: dict, overwrite: bool) -> SceneResult:
    """Export DIR/<scene_id>/<scene_id>.sens to OUT/scans/<scene_id> (whole or not at all); a Loc3rError becomes a
    failed result, so that the other scenes go on."""
    source = scans / scene_id
    sens_path = source / f"{scene_id}.sens"
    scene_dir = out / "scans" / paths.scene_id(scene_id, str(scans))
    try:
        remove_temporaries(scene_dir.parent, scene_id)
        if up_to_date(scene_dir, sens_path, options, overwrite):
            return SceneResult(scene_id, "skipped")
        fingerprint = _fingerprint(sens_path, options)
        with SensReader(sens_path) as reader, atomic_dir(scene_dir) as tmp:
            h = reader.header
            if h.color_compression != "jpeg":
                raise Loc3rError(f"{sens_path}: colour compression {h.color_compression}: only jpeg frames are "
                                 "exported (as stored)")
            if h.num_frames == 0:
                raise Loc3rError(f"{sens_path}: no frames")
            if h.depth_shift != DEPTH_SHIFT_MM:
                raise Loc3rError(f"{sens_path}: depth shift {h.depth_shift:g}, but loc3r reads depth in millimetres "
                                 f"(shift {DEPTH_SHIFT_MM:g})")
            # first pass: the poses, seeking past the images (and every size checked before anything is written)
            poses = np.array([f.camera_to_world for f in reader.frame_headers()], np.float32).reshape(-1, 4, 4)
            try:
                ids = select_frames(poses, options["frames"], options["every"])
            except Loc3rError as e:
                raise Loc3rError(f"{sens_path}: {e}") from None
            _write_frames(reader, ids, tmp)
            (tmp / "intrinsic").mkdir()
            for name in ("intrinsic_color", "extrinsic_color", "intrinsic_depth", "extrinsic_depth"):
                (tmp / "intrinsic" / f"{name}.txt").write_text(formats.matrix_text(getattr(h, name)))
            missing = []
            for name in (f"{scene_id}.txt", f"{scene_id}_vh_clean_2.ply"):
                if (source / name).is_file():
                    shutil.copyfile(source / name, tmp / name)
                else:
                    missing.append(name)
            (tmp / FINGERPRINT).write_text(json.dumps({**fingerprint, "frame_ids": ids}) + "\n")
        return SceneResult(scene_id, "exported", len(ids), missing=tuple(missing))
    except Loc3rError as e:
        return SceneResult(scene_id, "failed", error=str(e))


def _job(args: tuple) -> SceneResult:
    return export_scene(*args)


# ---------------------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------------------

def estimate_bytes(sens_path: Path, options: dict) -> int:
    """Bytes an export of this .sens file will take: its stored JPEG and compressed-depth bytes (the PNG of a depth
    frame is about the size of its zlib bytes) in the share of frames exported, plus the meta file and mesh."""
    with SensReader(sens_path) as reader:
        n = reader.header.num_frames
        share = len(range(0, n, options["every"] or 1)) if options["frames"] is None else min(n, options["frames"])
        extra = sum(p.stat().st_size for name in (".txt", "_vh_clean_2.ply")
                    if (p := sens_path.with_name(sens_path.stem + name)).is_file())
        return round((reader.size - reader.first_frame_offset) * share / max(n, 1)) + extra


def human_bytes(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000:
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1000
    return f"{n:.1f} TB"


def prepare(c: PrepareConfig) -> list[SceneResult]:
    """Export every scene of c.scans (see the module docstring); returns what became of each."""
    scene_ids = find_scenes(Path(c.scans), c.scenes)
    out = Path(c.out)
    todo, estimate = 0, 0
    for scene_id in scene_ids:  # the size estimate; unreadable files fail later, in their own scene
        sens_path = Path(c.scans) / scene_id / f"{scene_id}.sens"
        try:
            if not up_to_date(out / "scans" / scene_id, sens_path, c.options, c.overwrite):
                estimate += estimate_bytes(sens_path, c.options)
                todo += 1
        except Loc3rError:
            todo += 1
    print(f"prepare-scannet: {len(scene_ids)} scenes, {todo} to export ({_describe(c.options)}), about "
          f"{human_bytes(estimate)} to write")
    jobs = [(Path(c.scans), out, scene_id, c.options, c.overwrite) for scene_id in scene_ids]
    from tqdm import tqdm

    bar = {"total": len(jobs), "desc": "prepare-scannet", "unit": "scene", "dynamic_ncols": True, "disable": None}
    if c.workers == 1:
        return [_job(job) for job in tqdm(jobs, **bar)]
    # spawned workers, as synth's: no state forked from a parent that may hold torch / BLAS threads
    with ProcessPoolExecutor(min(c.workers, len(jobs)), mp_context=multiprocessing.get_context("spawn")) as pool:
        return list(tqdm(pool.map(_job, jobs), **bar))


def run(args: argparse.Namespace) -> int:
    c = dataclass_from_args(PrepareConfig, args)
    results = prepare(c)
    exported = [r for r in results if r.status == "exported"]
    skipped = [r for r in results if r.status == "skipped"]
    failed = [r for r in results if r.status == "failed"]
    print(f"exported {len(exported)} scenes ({sum(r.frames for r in exported)} frames) to {Path(c.out) / 'scans'}, "
          f"skipped {len(skipped)} already exported, {len(failed)} failed")
    for r in results:
        if r.missing:
            print(f"  {r.scene_id}: no {' or '.join(r.missing)} beside the .sens file (not copied)")
    for r in failed:
        print(f"  FAILED {r.error}")
    if failed:
        raise Loc3rError(f"{len(failed)} of {len(results)} scenes failed: {', '.join(r.scene_id for r in failed)}")
    return 0

