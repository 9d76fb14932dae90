"""`loc3r synth`: generate synthetic rooms in the ScanNet posed-image and SQA3D formats.

    loc3r synth --out DIR --scenes N --seed S [--rooms basic|realistic] [--frames 32] [--size 128] [--workers 1]

`--rooms basic` (the default, what the tiny model learns from on a CPU) furnishes small rectangular rooms with
4-6 large objects of distinct categories and vivid distinct colours, and describes situations as "next to A,
facing B"; `--rooms realistic` gives rooms of 3-9 m, some L-shaped, with 4-12 objects of repeated categories
and colours, small objects and objects on others, and seven kinds of situation descriptions (scene.py, situations.py).

writes
    DIR/scans/scene%04d_00/...                     ScanNet posed images, meta data and mesh (formats.py)
    DIR/sqa_task/balanced/v1_balanced_{questions,sqa_annotations}_{train,val,test}_scannetv2.json
    DIR/synth/scene%04d_00.json                    the ground truth, described below
    DIR/scanqa/, DIR/msqa/, DIR/vsibench/          the scenes in ScanQA, MSQA and VSI-Bench formats (benchmarks.py)
    DIR/scannet_raw/scene%04d_00/                  with --sens: the room as ScanNet downloads it, <scene_id>.sens
                                                   (version 4; the same JPEG bytes, depth and poses as scans/),
                                                   <scene_id>.txt and <scene_id>_vh_clean_2.ply: the input of
                                                   `loc3r prepare-scannet`

Scene i depends only on (seed, i) (numpy SeedSequence), so worker count and scene count do not change it,
and the same arguments give byte-identical files. Splits are by scene, about 80/10/10 (at least one val and
one test scene when N >= 3); with --held-out every scene is a test scene (a test set from its own seed).
Every scene directory is written beside its target and swapped in whole, and
json files are replaced atomically: an interrupted run leaves old or new files, never half-written ones.
Scenes of an earlier run into the same DIR beyond N are removed, and so is scannet_raw/ by a run without --sens.

The raw frame of a scene (its poses, depth, mesh and everything in its json) is the room's axis-aligned frame
moved by a random rotation about z and a translation in x, y, as ScanNet's scans are; `axisAlignment` maps
raw -> aligned. SQA3D positions are relative to the centre of the raw mesh's bounding box.

DIR/synth/<scene_id>.json (all positions metres, yaws radians CCW from +x, in the RAW frame):
    scene_id, scene_type, style (basic | realistic), seed, index
    axis_alignment      4x4 raw -> aligned (as in <scene_id>.txt)
    mesh_bbox_center    [x, y, z] of the raw mesh (SQA3D position = raw position - this, x and y)
    room                outline_xy [[x, y], ...] counter-clockwise, height_m, floor/wall/ceiling_rgb,
                        openings [{kind: door|window, wall: edge index k (vertex k -> k+1), offset_m (along the
                        wall from vertex k), width_m, bottom_m, height_m, rgb}]
    objects             [{id, category, color, center [x, y, z] (bounding-box centre), size [sx, sy, sz] (local
                        axes: width, depth with the front at local +y, height), yaw, on_top_of (id or null)}]
    situations          [{id, position [x, y], yaw, template, objects {slot: object id}, text,
                        alternatives [{template, objects, text}], question_ids}]
    questions           [{question_id, situation_id (null for non-situated questions, asked with
                        NO_SITUATION at a random free pose), position, yaw, spec (language.answer's input),
                        question, answer, question_type, answer_type}]
"""

from __future__ import annotations

import argparse
import multiprocessing
import shutil
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import ClassVar

import numpy as np

from loc3r import geometry
from loc3r.command import add_dataclass_arguments, dataclass_from_args
from loc3r.constants import NO_SITUATION
from loc3r.data import sens
from loc3r.data.sqa3d import SPLITS
from loc3r.errors import Loc3rError
from loc3r.io import atomic_dir, write_json
from loc3r.synth import formats
from loc3r.synth.benchmarks import write_benchmark_files
from loc3r.synth.render import intrinsics, render
from loc3r.synth.scene import STYLES, Scene, sample_scene
from loc3r.synth.situations import describe_scene
from loc3r.synth.trajectory import camera_path

MAX_SCENES = 10000  # scene ids are scene%04d_00
MAX_FRAMES = 10000
SIZE_RANGE_PX = (32, 2048)
QUESTION_ID_STRIDE = 1000  # question ids of scene i: (i + 1) * stride + k
RAW_OFFSET_M = 4.0  # the raw frame's translation is uniform in [-this, this] in x and y


def scene_id_of(index: int) -> str:
    """ScanNet-style id of scene `index`: scene0007_00."""
    return f"scene{index:04d}_00"


def scene_splits(n_scenes: int, seed: int) -> list[str]:
    """The split of every scene: a seeded shuffle, ~10% val, ~10% test (at least one each when n >= 3)."""
    n_held = max(1, round(0.1 * n_scenes)) if n_scenes >= 3 else 0
    order = np.random.default_rng(np.random.SeedSequence([seed, n_scenes, 1])).permutation(n_scenes)
    splits = ["train"] * n_scenes
    for k, i in enumerate(order[:2 * n_held]):
        splits[i] = "test" if k < n_held else "val"
    return splits


@dataclass
class SceneData:
    """Everything of one generated scene, before it is written."""

    scene_id: str
    aligned: Scene  # the room in its axis-aligned frame
    raw: Scene  # the same room in the raw frame
    axis_alignment: np.ndarray  # [4, 4] raw -> aligned
    c2w_raw: np.ndarray  # [T, 4, 4] camera-to-raw poses, rounded to the 6 decimals that are written
    K: np.ndarray  # [3, 3] intrinsics of colour and depth
    rgb: np.ndarray  # [T, S, S, 3] uint8
    depth_m: np.ndarray  # [T, S, S] float32 z-depth, metres
    mesh: tuple[np.ndarray, np.ndarray, np.ndarray]  # raw-frame vertices [V, 3], colours [V, 4], triangles [F, 3]
    situations: list[dict]  # records as in the scene json (raw frame)
    questions: list[dict]


def build_scene(seed: int, index: int, frames: int, size: int, style: str = "basic",
                relations: int = 0) -> SceneData:
    """Sample and render scene `index` of a data set seeded by `seed` (in memory); relations: more questions per
    situation that need its pose and the room together (situations.relation_questions)."""
    rng_scene, rng_raw, rng_path, rng_language = (np.random.default_rng(s)
                                                  for s in np.random.SeedSequence([seed, index]).spawn(4))
    scene_id = scene_id_of(index)
    aligned = sample_scene(rng_scene, scene_id, style)
    aligned_to_raw = geometry.make_transform(geometry.rot_z(rng_raw.uniform(-np.pi, np.pi)),
                                             [*rng_raw.uniform(-RAW_OFFSET_M, RAW_OFFSET_M, 2), 0.0])
    axis_alignment = geometry.invert_transform(aligned_to_raw)
    raw = aligned.transformed(aligned_to_raw)
    # Poses are written with 6 decimals (as ScanNet's files): render exactly the poses that are written.
    c2w_raw = np.round(aligned_to_raw @ camera_path(aligned, frames, rng_path), 6)
    K = intrinsics(size)
    rgb, depth_m = render(aligned, axis_alignment @ c2w_raw, K, size)
    situations, questions = describe_scene(raw, rng_language, relations)
    questions = [{"question_id": (index + 1) * QUESTION_ID_STRIDE + k, **q} for k, q in enumerate(questions)]
    for s in situations:
        s["question_ids"] = [q["question_id"] for q in questions if q["situation_id"] == s["id"]]
    return SceneData(scene_id, aligned, raw, axis_alignment, c2w_raw, K, rgb, depth_m, formats.scene_mesh(raw),
                     situations, questions)


SENS_FPS = 30  # the frame rate of the timestamps in --sens files (microseconds, as ScanNet's)


def write_scannet_raw(out_dir, data: SceneData) -> None:
    """The scene as ScanNet downloads it: DIR/scannet_raw/<scene_id>/<scene_id>.sens (JPEG colour, zlib depth in
    millimetres, the poses of scans/ as float32), <scene_id>.txt and <scene_id>_vh_clean_2.ply."""
    scene_id, size = data.scene_id, data.rgb.shape[1]
    K4 = np.eye(4)
    K4[:3, :3] = data.K
    header = sens.SensHeader("loc3r synth", K4, np.eye(4), K4, np.eye(4), "jpeg", "zlib_ushort", size, size, size,
                             size, depth_shift=1000.0)
    with atomic_dir(Path(out_dir) / "scannet_raw" / scene_id) as tmp:
        with sens.writing(tmp / f"{scene_id}.sens", header) as writer:
            for i in range(len(data.c2w_raw)):
                stamp_us = round(i * 1e6 / SENS_FPS)
                writer.add(data.c2w_raw[i], formats.jpeg_bytes(data.rgb[i]),
                           sens.compress_depth(formats.depth_to_mm(data.depth_m[i])), stamp_us, stamp_us)
        (tmp / f"{scene_id}.txt").write_text(
            formats.scene_meta_text(data.raw, data.axis_alignment, data.K, size, len(data.c2w_raw)))
        formats.write_ply(tmp / f"{scene_id}_vh_clean_2.ply", *data.mesh)


def write_scene(out_dir, data: SceneData, seed: int, index: int,
                with_sens: bool = False) -> tuple[list[dict], list[dict]]:
    """Write a scene's ScanNet files and its description json (with_sens: also as ScanNet downloads it,
    write_scannet_raw); returns its SQA3D questions and annotations."""
    out_dir, scene_id, frames = Path(out_dir), data.scene_id, len(data.c2w_raw)
    if with_sens:
        write_scannet_raw(out_dir, data)
    with atomic_dir(out_dir / "scans" / scene_id) as tmp:
        for sub in ("color", "depth", "pose", "intrinsic"):
            (tmp / sub).mkdir()
        for i in range(frames):
            formats.write_color(tmp / "color" / f"{i}.jpg", data.rgb[i])
            formats.write_depth(tmp / "depth" / f"{i}.png", data.depth_m[i])
            (tmp / "pose" / f"{i}.txt").write_text(formats.matrix_text(data.c2w_raw[i]))
        K4 = np.eye(4)
        K4[:3, :3] = data.K
        for name in ("intrinsic_color", "intrinsic_depth"):
            (tmp / "intrinsic" / f"{name}.txt").write_text(formats.matrix_text(K4))
        for name in ("extrinsic_color", "extrinsic_depth"):
            (tmp / "intrinsic" / f"{name}.txt").write_text(formats.matrix_text(np.eye(4)))
        (tmp / f"{scene_id}.txt").write_text(
            formats.scene_meta_text(data.raw, data.axis_alignment, data.K, data.rgb.shape[1], frames))
        formats.write_ply(tmp / f"{scene_id}_vh_clean_2.ply", *data.mesh)

    bbox_center = formats.mesh_bbox_center(data.mesh[0])
    by_id = {s["id"]: s for s in data.situations}
    sqa_questions, sqa_annotations = [], []
    for q in data.questions:
        s = by_id.get(q["situation_id"])
        text, alternatives = (s["text"], [a["text"] for a in s["alternatives"]]) if s else (NO_SITUATION, [])
        sqa_questions.append(formats.sqa3d_question(scene_id, q["question_id"], text, alternatives, q["question"]))
        sqa_annotations.append(formats.sqa3d_annotation(scene_id, q["question_id"], q["answer"], q["answer_type"],
                                                        q["question_type"], q["position"], q["yaw"], bbox_center))
    description = {**data.raw.to_json(), "seed": seed, "index": index, "axis_alignment": data.axis_alignment.tolist(),
                   "mesh_bbox_center": bbox_center.tolist(), "situations": data.situations, "questions": data.questions}
    write_json(out_dir / "synth" / f"{scene_id}.json", description)
    return sqa_questions, sqa_annotations


def generate_scene(out_dir, seed: int, index: int, frames: int, size: int, style: str = "basic",
                   with_sens: bool = False, relations: int = 0) -> tuple[list[dict], list[dict]]:
    """Build and write scene `index`; returns its SQA3D question and annotation records."""
    return write_scene(out_dir, build_scene(seed, index, frames, size, style, relations), seed, index, with_sens)


def _check(n_scenes: int, seed: int, frames: int, size: int, workers: int, style: str = "basic") -> None:
    """One-line Loc3rErrors for arguments out of range."""
    if style not in STYLES:
        raise Loc3rError(f"--rooms must be one of {', '.join(STYLES)}, got {style!r}")
    if not 1 <= n_scenes <= MAX_SCENES:
        raise Loc3rError(f"--scenes must be between 1 and {MAX_SCENES}, got {n_scenes}")
    if seed < 0:
        raise Loc3rError(f"--seed must be >= 0, got {seed}")
    if not 2 <= frames <= MAX_FRAMES:
        raise Loc3rError(f"--frames must be between 2 and {MAX_FRAMES}, got {frames}")
    if not (SIZE_RANGE_PX[0] <= size <= SIZE_RANGE_PX[1] and size % 16 == 0):
        lo, hi = SIZE_RANGE_PX
        raise Loc3rError(f"--size must be a multiple of 16 between {lo} and {hi}, got {size}")
    if workers < 1:
        raise Loc3rError(f"--workers must be >= 1, got {workers}")


MARKER = ".loc3r-synth"  # written into every data root synth writes: synth only ever rewrites its own roots


def written_by_synth(out_dir: Path) -> bool:
    """Whether out_dir is a data root this command wrote (its marker, or the synth/ ground truth of older runs)."""
    return (out_dir / MARKER).is_file() or any((out_dir / "synth").glob("scene*_00.json"))


def generate(out_dir, n_scenes: int, seed: int, frames: int = 32, size: int = 128, workers: int = 1,
             style: str = "basic", held_out: bool = False, overwrite: bool = False, with_sens: bool = False,
             relations: int = 0) -> None:
    """Write `n_scenes` synthetic rooms (seeded by `seed`) of a style of scene.STYLES under out_dir; see the
    module docstring. held_out: every scene in the test split (a test set from a seed no model trained on).
    with_sens: also write every room as ScanNet downloads it, under out_dir/scannet_raw (write_scannet_raw).
    relations: more questions per situation whose answers need its pose and the room together (training rooms).
    A non-empty out_dir that synth did not write (real ScanNet / SQA3D data use the same names) is refused
    unless overwrite."""
    _check(n_scenes, seed, frames, size, workers, style)
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise Loc3rError(f"{out_dir}: exists and is not a directory")
    if out_dir.is_dir() and any(out_dir.iterdir()) and not written_by_synth(out_dir) and not overwrite:
        raise Loc3rError(f"{out_dir}: not empty and not written by `loc3r synth` (synthetic scenes use ScanNet's "
                         "scene ids and SQA3D's file names and would replace real data): choose another --out, or "
                         "pass --overwrite")
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / MARKER).write_text("written by loc3r synth\n")
    remove_temporaries(out_dir)  # what an interrupted run left (never read as data, see list_scenes)
    if not with_sens:  # .sens files of an earlier run would no longer match the scans written now
        shutil.rmtree(out_dir / "scannet_raw", ignore_errors=True)
    job = partial(generate_scene, out_dir, seed, frames=frames, size=size, style=style, with_sens=with_sens,
                  relations=relations)
    from tqdm import tqdm

    bar = partial(tqdm, total=n_scenes, desc="synth", unit="room", dynamic_ncols=True, disable=None)  # a terminal's
    if workers == 1:
        results = [job(i) for i in bar(range(n_scenes))]
    else:  # spawned workers: no state forked from a parent that may hold torch / BLAS threads
        with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            results = list(bar(pool.map(job, range(n_scenes))))

    splits = ["test"] * n_scenes if held_out else scene_splits(n_scenes, seed)
    balanced = out_dir / "sqa_task" / "balanced"
    for split in SPLITS:
        questions = [q for (qs, _), s in zip(results, splits) if s == split for q in qs]
        annotations = [a for (_, anns), s in zip(results, splits) if s == split for a in anns]
        write_json(balanced / f"v1_balanced_questions_{split}_scannetv2.json",
                   formats.sqa3d_file(split, "questions", questions), indent=None)
        write_json(balanced / f"v1_balanced_sqa_annotations_{split}_scannetv2.json",
                   formats.sqa3d_file(split, "annotations", annotations), indent=None)
    _remove_stale_scenes(out_dir, {scene_id_of(i) for i in range(n_scenes)})
    write_benchmark_files(out_dir, {scene_id_of(i): s for i, s in enumerate(splits)}, seed)
    for video in (out_dir / "vsibench" / "scannet").glob("scene*.mp4"):  # of test scenes an earlier run had
        if video.stem not in {scene_id_of(i) for i, s in enumerate(splits) if s == "test"}:
            video.unlink()


def remove_temporaries(out_dir: Path) -> None:
    """Remove the temporaries an interrupted synth leaves in out_dir: `.scene*` directories under scans/ and
    `.scene*` / `.v1_*` files under synth/ and sqa_task/balanced/ (io.atomic_dir / atomic_path name them so)."""
    for pattern in ("scans/.scene*", "synth/.scene*", "sqa_task/balanced/.v1_*", "scanqa/.ScanQA*", "msqa/.msqa*",
                    "vsibench/.test*", "vsibench/scannet/.scene*", "scannet_raw/.scene*"):
        for p in out_dir.glob(pattern):
            if p.is_dir():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)


def _remove_stale_scenes(out_dir: Path, keep: set[str]) -> None:
    """Remove scenes an earlier run wrote into out_dir (those with a synth/<id>.json) that are not in `keep`."""
    for description in sorted((out_dir / "synth").glob("scene*_00.json")):
        if description.stem not in keep:
            shutil.rmtree(out_dir / "scans" / description.stem, ignore_errors=True)
            shutil.rmtree(out_dir / "scannet_raw" / description.stem, ignore_errors=True)
            description.unlink()


@dataclass
class SynthConfig:
    """The settings of `loc3r synth` (its flags are generated from these fields and their comments)."""

    out: Path  # output directory (scans/, sqa_task/, synth/, scanqa/, msqa/, vsibench/)
    scenes: int  # number of rooms
    seed: int  # random seed (same seed -> identical files)
    frames: int = 32  # frames per room video
    size: int = 128  # image side in pixels, a multiple of 16
    workers: int = 1  # processes rendering scenes in parallel
    overwrite: bool = False  # write into a non-empty directory synth did not write (replacing what has the same names)
    held_out: bool = False  # every scene in the test split (a test set from a seed no model was trained on)
    rooms: str = "basic"  # basic: small rooms, 4-6 large objects of unique colours; realistic: varied rooms
    sens: bool = False  # also write the rooms as ScanNet downloads them (scannet_raw/<scene_id>/<scene_id>.sens, ...)
    relations: int = 0  # more questions a situation needing its pose and the room (left / right, navigation, distance)

    CHOICES: ClassVar[dict] = {"rooms": STYLES}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(parser, SynthConfig)


def run(args: argparse.Namespace) -> int:
    c = dataclass_from_args(SynthConfig, args)
    generate(c.out, c.scenes, c.seed, frames=c.frames, size=c.size, workers=c.workers, style=c.rooms,
             held_out=c.held_out, overwrite=c.overwrite, with_sens=c.sens, relations=c.relations)
    print(f"wrote {c.scenes} scenes to {c.out}")
    return 0
