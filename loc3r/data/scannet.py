"""Reader of ScanNet scans in the posed-images layout (what ScanNet's SensReader exports), real or synthetic.

    <root>/scans/<scene_id>/color/<i>.jpg        RGB frames
                            depth/<i>.png        uint16 depth in millimetres, 0 = no measurement
                            pose/<i>.txt         4x4 camera-to-world (OpenCV camera axes); -inf where tracking was lost
                            intrinsic/intrinsic_color.txt, intrinsic/intrinsic_depth.txt   4x4 matrices
                            <scene_id>.txt       metadata, with `axisAlignment = <16 numbers>` (raw -> aligned)
                            <scene_id>_vh_clean_2.ply   the reconstructed mesh (raw frame)

Poses, depth and the mesh live in the raw scan frame (+z up). Every read failure raises a one-line
`Loc3rError` naming the file.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from loc3r import geometry
from loc3r.data import paths
from loc3r.errors import Loc3rError


def read_matrix_txt(path: Path, shape=(4, 4)) -> np.ndarray:
    """A whitespace-separated matrix file (pose, intrinsics). Non-finite values are kept (lost tracking)."""
    try:
        values = np.array(path.read_text().split(), dtype=np.float64)
    except FileNotFoundError:
        raise Loc3rError(f"{path}: file not found") from None
    except ValueError:
        raise Loc3rError(f"{path}: not a matrix of numbers") from None
    if values.size != int(np.prod(shape)):
        raise Loc3rError(f"{path}: expected {shape[0]}x{shape[1]} numbers, found {values.size}")
    return values.reshape(shape)


def read_intrinsics(path: Path) -> np.ndarray:
    """[3, 3] pinhole intrinsics of a 4x4 ScanNet intrinsic file; a one-line error for a zero, negative or
    non-finite focal length or a non-finite principal point (they would silently give garbage layout targets)."""
    K = read_matrix_txt(path)[:3, :3]
    fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
    if not (np.isfinite([fx, fy, cx, cy]).all() and fx > 0 and fy > 0):
        raise Loc3rError(f"{path}: invalid intrinsics (fx={fx:g}, fy={fy:g}, cx={cx:g}, cy={cy:g}): the focal lengths "
                         "must be positive and all four finite")
    return K


def read_image(path: Path) -> Image.Image:
    """Open and fully decode an image file, turning any failure into a one-line error."""
    try:
        with Image.open(path) as im:
            im.load()
            return im.copy()
    except FileNotFoundError:
        raise Loc3rError(f"{path}: file not found") from None
    except (UnidentifiedImageError, OSError, SyntaxError) as e:
        raise Loc3rError(f"{path}: corrupt or unreadable image ({e})") from None


def read_ply_vertices(path: Path) -> np.ndarray:
    """Vertex positions [N, 3] of a PLY mesh (ascii or binary little/big endian, as ScanNet writes it)."""
    types = {"char": "i1", "uchar": "u1", "short": "i2", "ushort": "u2", "int": "i4", "uint": "u4",
             "float": "f4", "double": "f8", "int8": "i1", "uint8": "u1", "int16": "i2", "uint16": "u2",
             "int32": "i4", "uint32": "u4", "float32": "f4", "float64": "f8"}
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise Loc3rError(f"{path}: file not found") from None
    end = data.find(b"end_header")
    if not data.startswith(b"ply") or end < 0:
        raise Loc3rError(f"{path}: not a PLY file")
    header = data[:end].decode("ascii", "replace").splitlines()
    body = data[data.index(b"\n", end) + 1:]
    fmt, n_vertex, props, in_vertex = None, 0, [], False
    for line in header:
        words = line.split()
        if words[:1] == ["format"]:
            fmt = words[1]
        elif words[:1] == ["element"]:
            in_vertex = words[1] == "vertex"
            if in_vertex:
                n_vertex = int(words[2])
        elif words[:1] == ["property"] and in_vertex:
            if words[1] == "list" or words[1] not in types:
                raise Loc3rError(f"{path}: unsupported vertex property {' '.join(words[1:])}")
            props.append((words[2], types[words[1]]))
    names = [p[0] for p in props]
    if not {"x", "y", "z"} <= set(names) or n_vertex == 0:
        raise Loc3rError(f"{path}: PLY has no vertex x, y, z")
    try:
        if fmt == "ascii":
            rows = body.decode("ascii").split("\n")[:n_vertex]
            table = np.array([r.split()[: len(props)] for r in rows], dtype=np.float64)
            cols = {n: table[:, k] for k, n in enumerate(names)}
        else:
            order = "<" if fmt == "binary_little_endian" else ">"
            dtype = np.dtype([(n, order + t) for n, t in props])
            table = np.frombuffer(body, dtype=dtype, count=n_vertex)
            cols = {n: table[n].astype(np.float64) for n in names}
    except (ValueError, UnicodeDecodeError):
        raise Loc3rError(f"{path}: truncated or corrupt vertex data") from None
    return np.stack([cols["x"], cols["y"], cols["z"]], -1)


def uniform_indices(n: int, num_frames: int) -> np.ndarray:
    """T indices spread uniformly over n items, first and last included (repeats if n < T)."""
    return np.round(np.linspace(0, n - 1, num_frames)).astype(np.int64)


def sample_frame_ids(valid_ids, num_frames: int, start: int = 0) -> np.ndarray:
    """T frame ids uniformly spread over the valid ones, first and last included (repeats if too few). `start`: for
    a scan that is a closed loop (loc3r synth's walk around the room), the video begins at the start-th valid frame
    and wraps around to the frames before it."""
    valid_ids = np.roll(np.asarray(valid_ids), -start)
    if valid_ids.size == 0:
        raise Loc3rError("no frame with a valid pose to sample from")
    return valid_ids[uniform_indices(valid_ids.size, num_frames)]


class ScanNetScene:
    """One scan: frame ids, frames, depth, poses, intrinsics, axis alignment and mesh."""

    def __init__(self, root: str | Path, scene_id: str):
        self.root = Path(root)
        self.scene_id = paths.scene_id(scene_id, str(self.root / "scans"))  # caches and plots are named by it
        self.dir = self.root / "scans" / scene_id
        if not self.dir.is_dir():
            raise Loc3rError(f"{self.dir}: unknown scene id {scene_id!r} (no such directory)")

    @cached_property
    def frame_ids(self) -> list[int]:
        """Frame indices present in color/, sorted numerically."""
        color = self.dir / "color"
        if not color.is_dir():
            raise Loc3rError(f"{color}: missing color directory")
        ids = sorted(int(p.stem) for p in color.glob("*.jpg") if p.stem.isdigit())
        if not ids:
            raise Loc3rError(f"{color}: no frames (<i>.jpg)")
        return ids

    def read_color(self, i: int) -> np.ndarray:
        """[H, W, 3] uint8 RGB."""
        return np.asarray(read_image(self.dir / "color" / f"{i}.jpg").convert("RGB"))

    def read_depth_m(self, i: int) -> np.ndarray:
        """[H, W] float32 metres, 0 where there is no measurement."""
        path = self.dir / "depth" / f"{i}.png"
        im = read_image(path)
        depth_mm = np.asarray(im)
        if depth_mm.ndim != 2 or depth_mm.dtype not in (np.uint16, np.int32, np.uint8):
            raise Loc3rError(f"{path}: expected a single-channel 16-bit depth image in millimetres, got mode {im.mode}")
        return depth_mm.astype(np.float32) / 1000.0

    def read_pose(self, i: int) -> np.ndarray:
        """[4, 4] camera-to-world; non-finite when tracking was lost."""
        return read_matrix_txt(self.dir / "pose" / f"{i}.txt")

    def read_poses(self, ids) -> np.ndarray:
        """[N, 4, 4] camera-to-world poses of the given frames."""
        return np.stack([self.read_pose(int(i)) for i in ids])

    @cached_property
    def valid_frame_ids(self) -> list[int]:
        """Frames whose pose is finite (ScanNet marks lost tracking with -inf)."""
        poses = self.read_poses(self.frame_ids)
        return [i for i, ok in zip(self.frame_ids, geometry.valid_pose_mask(poses)) if ok]

    @property
    def n_invalid_poses(self) -> int:
        return len(self.frame_ids) - len(self.valid_frame_ids)

    def sampled_frame_ids(self, num_frames: int, loop_start: tuple[int, int] = (0, 1)) -> np.ndarray:
        """T frame ids uniformly over this scan's valid poses (sample_frame_ids); the error names the pose directory.
        loop_start (s, K): the video of a looped scan that begins s/K of the way round its valid frames."""
        valid = self.valid_frame_ids
        if not valid:
            raise Loc3rError(f"{self.dir / 'pose'}: no frame with a valid pose to sample from")
        s, k = loop_start
        return sample_frame_ids(valid, num_frames, round(s * len(valid) / k))

    @cached_property
    def intrinsic_color(self) -> np.ndarray:
        return read_intrinsics(self.dir / "intrinsic" / "intrinsic_color.txt")

    @cached_property
    def intrinsic_depth(self) -> np.ndarray:
        return read_intrinsics(self.dir / "intrinsic" / "intrinsic_depth.txt")

    @cached_property
    def metadata(self) -> dict[str, str]:
        """`key = value` lines of <scene_id>.txt (empty when the file is absent)."""
        path = self.dir / f"{self.scene_id}.txt"
        if not path.exists():
            return {}
        out = {}
        for line in path.read_text().splitlines():
            if "=" in line:
                key, value = line.split("=", 1)
                out[key.strip()] = value.strip()
        return out

    @cached_property
    def axis_alignment(self) -> np.ndarray:
        """[4, 4] raw -> axis-aligned transform (identity when the scene has none, as ScanNet's test scans)."""
        text = self.metadata.get("axisAlignment")
        if text is None:
            return np.eye(4)
        try:
            m = np.array(text.split(), dtype=np.float64)
        except ValueError:
            m = np.zeros(0)
        if m.size != 16 or not np.isfinite(m).all():
            raise Loc3rError(f"{self.dir / (self.scene_id + '.txt')}: axisAlignment must be 16 finite numbers")
        return m.reshape(4, 4)

    @property
    def mesh_path(self) -> Path:
        return self.dir / f"{self.scene_id}_vh_clean_2.ply"

    @cached_property
    def mesh_bbox_center(self) -> np.ndarray:
        """[3] centre of the raw mesh's axis-aligned bounding box: the origin of SQA3D's positions."""
        v = read_ply_vertices(self.mesh_path)
        return (v.max(0) + v.min(0)) / 2


def list_scenes(root: str | Path) -> list[str]:
    """Scene ids under <root>/scans, sorted; hidden entries (an interrupted writer's `.<scene>.*.tmp`) are not
    scenes."""
    scans = Path(root) / "scans"
    if not scans.is_dir():
        raise Loc3rError(f"{scans}: no scans directory (expected the ScanNet posed-images layout)")
    return sorted(p.name for p in scans.iterdir() if p.is_dir() and not p.name.startswith("."))
