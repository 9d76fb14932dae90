"""Reader of ScanNet scans, real or synthetic, in the layouts users have them in, behind one interface (ScanNetScene).

ScanNet's SensReader export (SensExportLayout; `loc3r prepare-scannet` writes it from `.sens` files):

    <root>/scans/<scene_id>/color/<i>.jpg        RGB frames
                            depth/<i>.png        uint16 depth in millimetres, 0 = no measurement
                            pose/<i>.txt         4x4 camera-to-world (OpenCV camera axes); -inf where tracking was lost
                            intrinsic/intrinsic_color.txt, intrinsic/intrinsic_depth.txt   4x4 matrices
                            <scene_id>.txt       metadata, with `axisAlignment = <16 numbers>` (raw -> aligned)
                            <scene_id>_vh_clean_2.ply   the reconstructed mesh (raw frame)

Video-3D-LLM / LLaVA-3D's posed images (`<root>/posed_images/<scene_id>/<05d>.jpg|.png|.txt`): see
loc3r.data.posed_images. A scan is opened in the first layout found (find_layout).

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
from loc3r.data.posed_images import PosedImagesLayout
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


def read_meta(path: Path) -> dict[str, str]:
    """`key = value` lines of a ScanNet <scene_id>.txt (empty when the file is absent)."""
    if not path.exists():
        return {}
    out = {}
    for line in path.read_text().splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            out[key.strip()] = value.strip()
    return out


def read_axis_alignment(path: Path) -> np.ndarray:
    """[4, 4] raw -> axis-aligned of a ScanNet <scene_id>.txt's `axisAlignment` line (identity when it has none, as
    ScanNet's test scans)."""
    text = read_meta(path).get("axisAlignment")
    if text is None:
        return np.eye(4)
    try:
        m = np.array(text.split(), dtype=np.float64)
    except ValueError:
        m = np.zeros(0)
    if m.size != 16 or not np.isfinite(m).all():
        raise Loc3rError(f"{path}: axisAlignment must be 16 finite numbers")
    return m.reshape(4, 4)


class SensExportLayout:
    """Where ScanNet's SensReader export keeps a scan's files (the module docstring's first layout). A layout says
    where a scan's files are; ScanNetScene reads them."""

    name = "scannet"

    def __init__(self, root: Path, scene_id: str):
        self.root, self.scene_id = root, scene_id
        self.dir = root / "scans" / scene_id
        self.frame_dir, self.pose_dir = self.dir / "color", self.dir / "pose"
        self.intrinsic_color = self.dir / "intrinsic" / "intrinsic_color.txt"
        self.intrinsic_depth = self.dir / "intrinsic" / "intrinsic_depth.txt"
        self.meta = self.dir / f"{scene_id}.txt"
        self.mesh = self.dir / f"{scene_id}_vh_clean_2.ply"

    def color(self, i: int) -> Path:
        return self.dir / "color" / f"{i}.jpg"

    def depth(self, i: int) -> Path:
        return self.dir / "depth" / f"{i}.png"

    def pose(self, i: int) -> Path:
        return self.dir / "pose" / f"{i}.txt"

    def axis_alignment_without_meta(self) -> np.ndarray:
        return np.eye(4)  # as ScanNet's test scans, which have no axisAlignment

    def source_files(self, frame_ids) -> list[Path]:
        """What a cache built from these frames depends on (loc3r.data.cache.source_fingerprint)."""
        entries = [self.dir / d for d in ("color", "depth", "pose", "intrinsic")]
        entries += [self.intrinsic_color, self.intrinsic_depth, self.meta, self.mesh]
        for i in np.asarray(frame_ids).tolist():
            entries += [self.color(i), self.depth(i), self.pose(i)]
        return entries


LAYOUTS = {"scannet": SensExportLayout, "posed_images": PosedImagesLayout}


def find_layout(root: Path, scene_id: str, layout: str | None = None):
    """The layout a scan is in: `layout` (a name of LAYOUTS) when given, else SensReader's export where
    `<root>/scans/<scene_id>/color/` exists, else the posed images where `<root>/posed_images/<scene_id>/` does
    (else SensReader's, whose missing folder ScanNetScene names)."""
    if layout is not None:
        if layout not in LAYOUTS:
            raise Loc3rError(f"unknown scan layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
        return LAYOUTS[layout](root, scene_id)
    sens, posed = SensExportLayout(root, scene_id), PosedImagesLayout(root, scene_id)
    return posed if not sens.frame_dir.is_dir() and posed.dir.is_dir() else sens


class ScanNetScene:
    """One scan: frame ids, frames, depth, poses, intrinsics, axis alignment and mesh, in whichever layout its files
    are (find_layout: ScanNet's SensReader export preferred, else Video-3D-LLM / LLaVA-3D's posed images; `layout`
    names one). Every reader of scans goes through this class; `files` says where the scan's files are."""

    def __init__(self, root: str | Path, scene_id: str, layout: str | None = None):
        self.root = Path(root)
        self.scene_id = paths.scene_id(scene_id, str(self.root / "scans"))  # caches and plots are named by it
        self.files = find_layout(self.root, scene_id, layout)
        self.layout = self.files.name
        self.dir = self.files.dir  # the scan's folder
        if not self.dir.is_dir():
            others = [LAYOUTS[n](self.root, scene_id).dir for n in LAYOUTS if n != self.layout]
            raise Loc3rError(f"{self.dir}: unknown scene id {scene_id!r} (no such directory, nor "
                             f"{', '.join(str(d) for d in others)})")

    @cached_property
    def frame_ids(self) -> list[int]:
        """Frame indices of the `<i>.jpg` colour files (ScanNet's: the frame's number in the sensor stream), sorted."""
        directory = self.files.frame_dir
        if not directory.is_dir():
            raise Loc3rError(f"{directory}: missing color directory")
        ids = sorted(int(p.stem) for p in directory.glob("*.jpg") if p.stem.isdigit())
        if not ids:
            raise Loc3rError(f"{directory}: no frames (<i>.jpg)")
        return ids

    @property
    def pose_dir(self) -> Path:
        """The folder of the pose files (errors about the poses of the whole scan name it)."""
        return self.files.pose_dir

    def read_color(self, i: int) -> np.ndarray:
        """[H, W, 3] uint8 RGB."""
        return np.asarray(read_image(self.files.color(i)).convert("RGB"))

    def read_depth_m(self, i: int) -> np.ndarray:
        """[H, W] float32 metres, 0 where there is no measurement."""
        path = self.files.depth(i)
        im = read_image(path)
        depth_mm = np.asarray(im)
        if depth_mm.ndim != 2 or depth_mm.dtype not in (np.uint16, np.int32, np.uint8):
            raise Loc3rError(f"{path}: expected a single-channel 16-bit depth image in millimetres, got mode {im.mode}")
        return depth_mm.astype(np.float32) / 1000.0

    def read_pose(self, i: int) -> np.ndarray:
        """[4, 4] camera-to-world; non-finite when tracking was lost."""
        return read_matrix_txt(self.files.pose(i))

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
            raise Loc3rError(f"{self.pose_dir}: no frame with a valid pose to sample from")
        s, k = loop_start
        return sample_frame_ids(valid, num_frames, round(s * len(valid) / k))

    @cached_property
    def intrinsic_color(self) -> np.ndarray:
        return read_intrinsics(self.files.intrinsic_color)

    @cached_property
    def intrinsic_depth(self) -> np.ndarray:
        return read_intrinsics(self.files.intrinsic_depth)

    @cached_property
    def axis_alignment(self) -> np.ndarray:
        """[4, 4] raw -> axis-aligned transform: ScanNet's meta file's when the scan has one, else the layout's
        (identity for SensReader's export, as ScanNet's test scans; EmbodiedScan's for posed images)."""
        if self.files.meta.is_file():
            return read_axis_alignment(self.files.meta)
        return self.files.axis_alignment_without_meta()

    @property
    def mesh_path(self) -> Path:
        """The raw mesh `<scene_id>_vh_clean_2.ply` (it may be absent: only SQA3D's positions need it)."""
        return self.files.mesh

    @cached_property
    def mesh_bbox_center(self) -> np.ndarray:
        """[3] centre of the raw mesh's axis-aligned bounding box: the origin of SQA3D's positions."""
        v = read_ply_vertices(self.mesh_path)
        return (v.max(0) + v.min(0)) / 2


def list_scenes(root: str | Path) -> list[str]:
    """Scene ids of the scans under <root>/scans and <root>/posed_images, sorted; hidden entries (an interrupted
    writer's `.<scene>.*.tmp`) are not scenes."""
    folders = [Path(root) / "scans", Path(root) / "posed_images"]
    if not any(f.is_dir() for f in folders):
        raise Loc3rError(f"{folders[0]}: no scans directory (expected ScanNet's SensReader export, or "
                         f"{folders[1]} of Video-3D-LLM / LLaVA-3D)")
    return sorted({p.name for f in folders if f.is_dir() for p in f.iterdir()
                   if p.is_dir() and not p.name.startswith(".")})
