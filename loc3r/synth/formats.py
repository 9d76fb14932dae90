"""Writers of the real on-disk formats: ScanNet posed images, meta data and meshes, SQA3D question records.

ScanNet (the layout of its posed-image export, https://github.com/ScanNet/ScanNet): per scene
`color/<i>.jpg`, `depth/<i>.png` (uint16 millimetres, 0 = no depth), `pose/<i>.txt` (4x4 camera-to-world),
`intrinsic/intrinsic_{color,depth}.txt` and `intrinsic/extrinsic_{color,depth}.txt` (4x4), `<scene_id>.txt` (key = value
lines, among them `axisAlignment`, the row-major 4x4 raw -> axis-aligned transform) and
`<scene_id>_vh_clean_2.ply` (binary little-endian PLY: x, y, z float; red, green, blue, alpha uchar; triangle
faces as `list uchar int vertex_indices`), all in the scan's raw frame.

SQA3D (https://github.com/SilongYong/SQA3D, assets/dataset.md): question and annotation records with keys in
the release's order; `position` is relative to the centre of the raw mesh's axis-aligned bounding box and
`rotation` is the agent's yaw-only quaternion (geometry.yaw_to_sqa3d_quat).
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

from loc3r import geometry
from loc3r.synth import shapes
from loc3r.synth.scene import Scene

JPEG_QUALITY = 90


def matrix_text(M) -> str:
    """A 4x4 matrix as ScanNet writes it: 4 lines of 4 space-separated numbers."""
    return "".join(" ".join(f"{v:.6f}" for v in row) + "\n" for row in np.asarray(M, np.float64))


def jpeg_bytes(rgb: np.ndarray) -> bytes:
    """RGB [H, W, 3] uint8 -> JPEG bytes (fixed quality and settings, so bytes depend on the pixels only)."""
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, format="JPEG", quality=JPEG_QUALITY)
    return buffer.getvalue()


def write_color(path, rgb: np.ndarray) -> None:
    """RGB [H, W, 3] uint8 -> a JPEG file (jpeg_bytes)."""
    Path(path).write_bytes(jpeg_bytes(rgb))


def depth_to_mm(depth_m: np.ndarray) -> np.ndarray:
    """Depth [H, W] metres -> uint16 millimetres, 0 where there is no depth."""
    return np.clip(np.round(np.asarray(depth_m, np.float64) * 1000.0), 0, 65535).astype(np.uint16)


def write_depth_mm(path, depth_mm: np.ndarray) -> None:
    """uint16 depth [H, W] -> 16-bit PNG (PIL mode I;16), as stored: ScanNet's depth/<i>.png."""
    Image.fromarray(np.asarray(depth_mm, np.uint16)).save(path, format="PNG", compress_level=1)  # fast; ~1.5x level 6


def write_depth(path, depth_m: np.ndarray) -> None:
    """Depth [H, W] metres -> 16-bit PNG of millimetres, 0 where there is no depth."""
    write_depth_mm(path, depth_to_mm(depth_m))


def scene_meta_text(scene: Scene, axis_alignment, K, size_px: int, n_frames: int) -> str:
    """`<scene_id>.txt` in ScanNet's key = value format (colour and depth share one camera here)."""
    A = np.asarray(axis_alignment, np.float64).reshape(-1)
    lines = {
        "axisAlignment": " ".join(repr(float(v) + 0.0) for v in A),  # full precision: it defines the aligned frame
        "colorHeight": size_px, "colorToDepthExtrinsics": " ".join(f"{v:.6f}" for v in np.eye(4).reshape(-1)),
        "colorWidth": size_px, "depthHeight": size_px, "depthWidth": size_px,
        "fx_color": f"{K[0, 0]:.6f}", "fx_depth": f"{K[0, 0]:.6f}", "fy_color": f"{K[1, 1]:.6f}",
        "fy_depth": f"{K[1, 1]:.6f}", "mx_color": f"{K[0, 2]:.6f}", "mx_depth": f"{K[0, 2]:.6f}",
        "my_color": f"{K[1, 2]:.6f}", "my_depth": f"{K[1, 2]:.6f}",
        "numColorFrames": n_frames, "numDepthFrames": n_frames, "numIMUmeasurements": 0,
        "sceneType": scene.scene_type,
    }
    return "".join(f"{k} = {v}\n" for k, v in lines.items())


# ---------------------------------------------------------------------------------------------------------
# Mesh
# ---------------------------------------------------------------------------------------------------------

def _quad(corners, rgb, vertices, colors, faces) -> None:
    """Append a flat-coloured quad (4 corners [4, 3] in order) as two triangles."""
    base = len(vertices)
    vertices.extend(corners)
    colors.extend([tuple(rgb) + (255,)] * 4)
    faces.extend([(base, base + 1, base + 2), (base, base + 2, base + 3)])


def scene_mesh(scene: Scene) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Floor, walls (with doors and windows) and object boxes: vertices [V, 3] float32, colours [V, 4] uint8,
    triangles [F, 3] int32."""
    vertices, colors, faces = [], [], []
    outline = scene.room.outline_xy
    # Floor: a fan of triangles. An L-shaped outline is star-shaped from its one reflex corner.
    a, b = shapes.polygon_edges(outline)
    e_in, e_out = a - np.roll(a, 1, 0), b - a
    reflex = np.flatnonzero(e_in[:, 0] * e_out[:, 1] - e_in[:, 1] * e_out[:, 0] < 0)
    start = int(reflex[0]) if len(reflex) else 0
    base = len(vertices)
    vertices.extend([(x, y, 0.0) for x, y in np.roll(outline, -start, 0)])
    colors.extend([tuple(scene.room.floor_rgb) + (255,)] * len(outline))
    faces.extend((base, base + k, base + k + 1) for k in range(1, len(outline) - 1))
    # Walls, and doors / windows 1 cm in front of them.
    h = scene.room.height_m
    for k in range(len(a)):
        _quad([(*a[k], 0.0), (*b[k], 0.0), (*b[k], h), (*a[k], h)], scene.room.wall_rgb, vertices, colors, faces)
    for o in scene.room.openings:
        e = (b[o.wall] - a[o.wall]) / np.linalg.norm(b[o.wall] - a[o.wall])
        p0 = a[o.wall] + e * o.offset_m + shapes.rotate_xy(e, np.pi / 2) * 0.01
        p1 = p0 + e * o.width_m
        z0, z1 = o.bottom_m, o.bottom_m + o.height_m
        _quad([(*p0, z0), (*p1, z0), (*p1, z1), (*p0, z1)], o.rgb, vertices, colors, faces)
    # Object parts: 6 faces each.
    for obj in scene.objects:
        for center, size, rgb in obj.world_parts():
            ring = shapes.footprint_corners(center[:2], size[:2] / 2, obj.yaw)  # [4, 2] counter-clockwise
            lo, hi = center[2] - size[2] / 2, center[2] + size[2] / 2
            _quad([(*p, hi) for p in ring], rgb, vertices, colors, faces)  # top
            _quad([(*p, lo) for p in ring[::-1]], rgb, vertices, colors, faces)  # bottom
            for k in range(4):
                p, q = ring[k], ring[(k + 1) % 4]
                _quad([(*p, lo), (*q, lo), (*q, hi), (*p, hi)], rgb, vertices, colors, faces)
    return np.array(vertices, np.float32), np.array(colors, np.uint8), np.array(faces, np.int32)


def write_ply(path, vertices: np.ndarray, colors: np.ndarray, faces: np.ndarray) -> None:
    """Binary little-endian PLY with ScanNet's vertex and face properties."""
    header = ("ply\nformat binary_little_endian 1.0\ncomment loc3r synthetic room\n"
              f"element vertex {len(vertices)}\nproperty float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nproperty uchar alpha\n"
              f"element face {len(faces)}\nproperty list uchar int vertex_indices\nend_header\n")
    v = np.empty(len(vertices), [("xyz", "<f4", (3,)), ("rgba", "u1", (4,))])
    v["xyz"], v["rgba"] = vertices, colors
    f = np.empty(len(faces), [("n", "u1"), ("idx", "<i4", (3,))])
    f["n"], f["idx"] = 3, faces
    with open(path, "wb") as fh:
        fh.write(header.encode("ascii"))
        fh.write(v.tobytes())
        fh.write(f.tobytes())


def mesh_bbox_center(vertices: np.ndarray) -> np.ndarray:
    """[3] centre of the vertices' axis-aligned bounding box (what SQA3D positions are relative to)."""
    v = np.asarray(vertices, np.float64)
    return (v.max(0) + v.min(0)) / 2


# ---------------------------------------------------------------------------------------------------------
# SQA3D records
# ---------------------------------------------------------------------------------------------------------

def sqa3d_question(scene_id: str, question_id: int, situation: str, alternatives: list[str], question: str) -> dict:
    return {"alternative_situation": list(alternatives), "question": question, "question_id": question_id,
            "scene_id": scene_id, "situation": situation}


def sqa3d_annotation(scene_id: str, question_id: int, answer: str, answer_type: str, question_type: str,
                     position_raw_xy, yaw_raw: float, bbox_center) -> dict:
    """An annotation; the pose is given in the raw frame and stored relative to the mesh bbox centre."""
    q = geometry.yaw_to_sqa3d_quat(yaw_raw)
    return {
        "answer_type": answer_type,
        "answers": [{"answer": answer, "answer_confidence": "yes", "answer_id": 1}],
        "position": {"x": float(position_raw_xy[0] - bbox_center[0]), "y": float(position_raw_xy[1] - bbox_center[1]),
                     "z": 0},
        "question_id": question_id,
        "question_type": question_type,
        "rotation": {"_w": float(q[3]), "_x": 0, "_y": 0, "_z": float(q[2])},
        "scene_id": scene_id,
    }


def sqa3d_file(split: str, records_key: str, records: list[dict]) -> dict:
    """A whole SQA3D json file: the release's header fields, then `questions` or `annotations`."""
    return {
        "info": {"description": "Synthetic rooms of loc3r in the format of SQA3D v1 (balanced).", "version": "1.0"},
        "license": {"name": "procedurally generated by `loc3r synth`, no third-party content"},
        "data_type": "scannet",
        "data_subtype": f"{split}_synth",
        "task_type": "sqa",
        records_key: records,
    }

