"""Per-scene cache: the T sampled frames resized for the vision tower, their poses in the video's BEV frame and
the layout targets of every pooled vision token. Built once from the raw scan, reused by training and evaluation.

File: <cache_dir>/<scene_id>_T<T>_S<S>_G<gh>x<gw>.npz (default cache_dir = <data_root>/cache), written atomically
so an interrupted build never leaves a half-written file; a corrupt cache file is rebuilt. The build parameters
are in the name; what the cache was built from is in its `source` fingerprint (sizes and modification times of the
scan's frame / pose / intrinsic directories, of the sampled frames' files, the intrinsics, the meta file and the
mesh, in whichever layout the scan is: loc3r.data.scannet): when the scan's files change (re-exported,
re-synthesised, new poses), the cache is rebuilt instead of serving old frames and poses.
"""

from __future__ import annotations

import hashlib
import os
import zipfile
from dataclasses import dataclass, fields
from pathlib import Path

import numpy as np

from loc3r import geometry
from loc3r.data.scannet import ScanNetScene
from loc3r.data.video import resize_frames
from loc3r.errors import naming
from loc3r.io import write_npz

CACHE_VERSION = 3  # 2: the source fingerprint; 3: last_frame_id


@dataclass
class SceneCache:
    frame_ids: np.ndarray  # [T] int64 source frame ids (uniform over valid poses)
    frames: np.ndarray  # [T, S, S, 3] uint8 resized RGB
    c2w: np.ndarray  # [T, 4, 4] float64 camera-to-world (raw scan frame)
    world_to_bev: np.ndarray  # [4, 4] float64 world -> BEV of this video
    c2bev: np.ndarray  # [T, 4, 4] float32 camera-to-BEV
    layout_xy: np.ndarray  # [T, G, 2] float32 BEV targets per pooled vision token
    layout_valid: np.ndarray  # [T, G] bool
    mesh_center: np.ndarray  # [3] raw mesh bounding-box centre (NaN when the scan has no mesh)
    n_invalid_pixels: int  # zero / non-finite depth pixels excluded from the targets
    n_invalid_poses: int  # frames of the whole scan skipped for a non-finite pose
    last_frame_id: int  # the scan's last frame id: its length is (last_frame_id + 1) / fps seconds
    source: str = ""  # source_fingerprint of the scan files it was built from
    version: int = CACHE_VERSION


def source_fingerprint(scene: ScanNetScene, frame_ids) -> str:
    """A hash of the sizes and modification times of what a scene cache is built from (scene.files.source_files: for
    ScanNet's SensReader export the color / depth / pose / intrinsic directories (files added, removed or replaced),
    the sampled frames' color, depth and pose files, the intrinsics, the meta file and the mesh). Cheap (a few
    dozen stat calls), unlike hashing a scan's contents. Files are named relative to the scan's folder."""
    h = hashlib.sha1()
    for p in scene.files.source_files(frame_ids):
        name = os.path.relpath(p, scene.dir)
        try:
            st = p.stat()
            h.update(f"{name} {st.st_size} {st.st_mtime_ns}\n".encode())
        except FileNotFoundError:
            h.update(f"{name} missing\n".encode())
    return h.hexdigest()


def scene_cache_path(cache_dir: str | Path, scene_id: str, num_frames: int, image_size: int, grid_hw,
               grid_extent: float = 1.0, loop_start: tuple[int, int] = (0, 1)) -> Path:
    extent = "" if grid_extent == 1.0 else f"e{grid_extent:.4f}"
    start = "" if loop_start[0] == 0 else f"_start{loop_start[0]}of{loop_start[1]}"
    return Path(cache_dir) / f"{scene_id}_T{num_frames}_S{image_size}_G{grid_hw[0]}x{grid_hw[1]}{extent}{start}.npz"


def build_scene_cache(scene: ScanNetScene, num_frames: int, image_size: int, grid_hw,
                      min_valid_frac: float = 0.1, grid_extent: float = 1.0,
                      loop_start: tuple[int, int] = (0, 1)) -> SceneCache:
    """Sample T frames over the valid poses and compute everything training needs from them (`grid_extent`: the
    fraction of the frame the vision tokens cover, Loc3RConfig.frame_grid_extent; `loop_start`: see
    ScanNetScene.sampled_frame_ids)."""
    ids = scene.sampled_frame_ids(num_frames, loop_start)
    c2w = scene.read_poses(ids)  # its errors name their file
    with naming(scene.pose_dir):  # the BEV frame's: a first camera without a heading
        world_to_bev = geometry.bev_frame_of_video(c2w)
    c2bev = geometry.poses_to_bev(world_to_bev, c2w)
    frames = resize_frames(np.stack([scene.read_color(int(i)) for i in ids]), image_size)
    depth = np.stack([scene.read_depth_m(int(i)) for i in ids])
    targets = geometry.layout_targets(depth, scene.intrinsic_depth, c2bev, grid_hw, min_valid_frac, grid_extent)
    center = scene.mesh_bbox_center if scene.mesh_path.exists() else np.full(3, np.nan)
    return SceneCache(
        frame_ids=ids.astype(np.int64), frames=frames, c2w=c2w, world_to_bev=world_to_bev,
        c2bev=c2bev.astype(np.float32), layout_xy=targets.xy, layout_valid=targets.valid,
        mesh_center=np.asarray(center, np.float64), n_invalid_pixels=targets.n_invalid_pixels,
        n_invalid_poses=scene.n_invalid_poses, last_frame_id=max(scene.frame_ids),
        source=source_fingerprint(scene, ids))


def load_scene_cache(path: Path) -> SceneCache | None:
    """The cache at `path`, or None when absent, unreadable or of another version."""
    try:
        with np.load(path) as z:
            if int(z["version"]) != CACHE_VERSION:
                return None
            values = {f.name: z[f.name] for f in fields(SceneCache)}
    except (FileNotFoundError, OSError, KeyError, ValueError, zipfile.BadZipFile, EOFError):
        return None
    for name in ("n_invalid_pixels", "n_invalid_poses", "last_frame_id", "version"):
        values[name] = int(values[name])
    values["source"] = str(values["source"])
    return SceneCache(**values)


def scene_cache(data_root: str | Path, scene_id: str, num_frames: int, image_size: int, grid_hw,
                cache_dir: str | Path | None = None, grid_extent: float = 1.0,
                loop_start: tuple[int, int] = (0, 1)) -> SceneCache:
    """Load the scene's cache, building and writing it first if needed."""
    cache_dir = Path(cache_dir) if cache_dir is not None else Path(data_root) / "cache"
    path = scene_cache_path(cache_dir, scene_id, num_frames, image_size, grid_hw, grid_extent, loop_start)
    cached = load_scene_cache(path)
    scene = ScanNetScene(data_root, scene_id)
    if cached is not None and cached.source == source_fingerprint(scene, cached.frame_ids):
        return cached  # else the scan changed since: rebuild
    built = build_scene_cache(scene, num_frames, image_size, grid_hw, grid_extent=grid_extent, loop_start=loop_start)
    write_npz(path, **{f.name: np.asarray(getattr(built, f.name)) for f in fields(SceneCache)})
    return built
