"""Ray-casting renderer of a synthetic room: RGB with simple shading and exact metric depth.

Rays go through pixel centres of a pinhole camera (OpenCV axes, pixel (u, v) at x = (u - cx) / fx as in
geometry.unproject_depth) and are scaled to unit camera-z, so the hit distance along a ray *is* the z-depth
that ScanNet's depth maps store. Surfaces: floor (z = 0) and ceiling planes, walls (vertical rectangles on the
outline edges, with doors and windows as coloured rectangles on them) and object parts (oriented boxes,
intersected by slab tests in their local frames). Shading: Lambertian from two fixed directional lights plus
ambient, so faces with different normals get different shades; faint floor tiles and a darker skirting
board give texture. Everything is vectorised numpy over the pixels of one frame.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loc3r.synth import shapes
from loc3r.synth.scene import Scene

HFOV_DEG = 65.0  # horizontal field of view of the synthetic camera
AMBIENT = 0.42
LIGHTS = ((np.array([0.45, 0.25, 0.86]), 0.50), (np.array([-0.55, 0.8, 0.25]), 0.22))  # (direction, strength)
TILE_M = 0.5  # floor tile size
SKIRTING_M = 0.08  # height of the darker band at the foot of the walls


def intrinsics(size_px: int, hfov_deg: float = HFOV_DEG) -> np.ndarray:
    """Pinhole intrinsics [3, 3] of a square image with the given horizontal field of view."""
    f = (size_px / 2) / np.tan(np.radians(hfov_deg) / 2)
    c = (size_px - 1) / 2
    return np.array([[f, 0.0, c], [0.0, f, c], [0.0, 0.0, 1.0]])


@dataclass
class _Geometry:
    """A scene flattened into arrays for ray casting. Surface ids: 0 floor, 1 ceiling, 2 + k wall k,
    2 + W + 6 b + 2 axis + (normal > 0) face of box b (axis 0, 1, 2 = local x, y, z)."""

    wall_a: np.ndarray  # [W, 2] wall start points
    wall_e: np.ndarray  # [W, 2] wall direction vectors (end - start)
    openings: list  # (wall, s0, s1, z0, z1, rgb) per door / window, s in metres along the wall
    box_center: np.ndarray  # [B, 3]
    box_half: np.ndarray  # [B, 3]
    box_cos: np.ndarray  # [B] cos(yaw)
    box_sin: np.ndarray  # [B] sin(yaw)
    box_corners: np.ndarray  # [B, 8, 3] world corners
    height_m: float
    surface_rgb: np.ndarray  # [2 + W + 6B, 3] float32 shaded colour of each surface (0-255)
    wall_shade: np.ndarray  # [W] shading factor of each wall (for the doors and windows on it)


def _lambert(normals) -> np.ndarray:
    """Shading factors [...] of unit normals [..., 3]: ambient plus the fixed directional lights."""
    shade = np.full(normals.shape[:-1], AMBIENT)
    for direction, strength in LIGHTS:
        shade += strength * np.clip(normals @ (direction / np.linalg.norm(direction)), 0.0, None)
    return shade


def _flatten(scene: Scene) -> _Geometry:
    """The arrays of a scene the ray caster works on (see _Geometry)."""
    room = scene.room
    a, b = shapes.polygon_edges(room.outline_xy)
    e = b - a
    wall_normals = np.pad(shapes.rotate_xy(e / np.linalg.norm(e, axis=-1, keepdims=True), np.pi / 2), ((0, 0), (0, 1)))
    openings = [(o.wall, o.offset_m, o.offset_m + o.width_m, o.bottom_m, o.bottom_m + o.height_m,
                 np.asarray(o.rgb, np.float64)) for o in room.openings]
    normals = [[0.0, 0.0, 1.0], [0.0, 0.0, -1.0], *wall_normals]
    rgbs = [room.floor_rgb, room.ceiling_rgb] + [room.wall_rgb] * len(a)
    centers, halves, yaws = [], [], []
    for obj in scene.objects:
        for center, size, rgb in obj.world_parts():
            centers.append(center)
            halves.append(size / 2)
            yaws.append(obj.yaw)
            for axis in range(3):
                for sign in (-1.0, 1.0):
                    n_local = np.eye(3)[axis] * sign
                    normals.append(np.append(shapes.rotate_xy(n_local[:2], obj.yaw), n_local[2]))
                    rgbs.append(rgb)
    yaws, centers, halves = np.array(yaws), np.array(centers).reshape(-1, 3), np.array(halves).reshape(-1, 3)
    signs = np.array(np.meshgrid([-1, 1], [-1, 1], [-1, 1], indexing="ij"), np.float64).reshape(3, -1).T  # [8, 3]
    local = signs[None] * halves[:, None]  # [B, 8, 3]
    corners = centers[:, None] + np.concatenate([shapes.rotate_xy(local[..., :2], yaws[:, None]), local[..., 2:]], -1)
    return _Geometry(a, e, openings, centers, halves, np.cos(yaws), np.sin(yaws), corners, room.height_m,
                     _shaded(rgbs, normals), _lambert(wall_normals))


def _shaded(rgbs, normals) -> np.ndarray:
    """[n, 3] float32 colours of surfaces with base colours rgbs [n, 3] and unit normals [n, 3]."""
    shade = _lambert(np.array(normals, np.float64))
    return np.clip(np.array(rgbs, np.float64) * shade[:, None], 0, 255).astype(np.float32)


def render(scene: Scene, c2w, K, size_px: int) -> tuple[np.ndarray, np.ndarray]:
    """Render frames of camera-to-world poses c2w [T, 4, 4] (scene's frame, OpenCV axes) with intrinsics K [3, 3].

    Returns RGB [T, S, S, 3] uint8 and z-depth [T, S, S] float32 metres (0 where no surface was hit).
    """
    geo = _flatten(scene)
    K = np.asarray(K, np.float64)
    v, u = np.meshgrid(np.arange(size_px, dtype=np.float64), np.arange(size_px, dtype=np.float64), indexing="ij")
    x_cam, y_cam = (u - K[0, 2]) / K[0, 0], (v - K[1, 2]) / K[1, 1]  # [S, S] ray directions at camera z = 1
    c2w = np.asarray(c2w, np.float64)
    rgb = np.zeros((len(c2w), size_px, size_px, 3), np.uint8)
    depth = np.zeros((len(c2w), size_px, size_px), np.float32)
    for t, pose in enumerate(c2w):
        R = pose[:3, :3]
        dirs = tuple(R[k, 0] * x_cam + R[k, 1] * y_cam + R[k, 2] for k in range(3))  # world x, y, z: 3 x [S, S]
        rgb[t], depth[t] = _render_frame(geo, pose, K, dirs)
    return rgb, depth


class _Hits:
    """Nearest hit so far per pixel: distance t [S, S] and surface id [S, S]."""

    def __init__(self, shape):
        self.t = np.full(shape, np.inf)
        self.surface = np.zeros(shape, np.int64)

    def take(self, t_new, surface, block=(slice(None), slice(None))):
        """Keep the hits t_new (inf where none) within `block` of the image that are nearer than the current ones."""
        t_old = self.t[block]
        closer = t_new < t_old
        t_old[closer] = t_new[closer]
        self.surface[block][closer] = surface[closer] if np.ndim(surface) else surface


def _render_frame(geo: _Geometry, c2w, K, dirs) -> tuple[np.ndarray, np.ndarray]:
    """RGB [S, S, 3] uint8 and z-depth [S, S] of rays from the camera centre along dirs (3 x [S, S], unit
    camera z). Colours are looked up per surface id, then floor tiles, skirting boards, doors and windows are
    painted on the pixels of the floor and walls (flat per-channel indexing: fancy indexing of [S, S, 3] is slow)."""
    origin = c2w[:3, 3]
    size = dirs[0].shape[0]
    hits = _Hits(dirs[0].shape)
    with np.errstate(divide="ignore", invalid="ignore"):
        _cast_room(geo, origin, dirs, hits)
        for b in range(len(geo.box_center)):
            block = _box_block(geo, b, c2w, K, size)
            if block is not None:
                _cast_box(geo, b, origin, tuple(d[block] for d in dirs), hits, block)
    depth = np.where(np.isfinite(hits.t), hits.t, 0.0)
    t, surface = depth.reshape(-1), hits.surface.reshape(-1)
    dx, dy, dz = (d.reshape(-1) for d in dirs)
    color = np.stack([geo.surface_rgb[:, c].take(surface) for c in range(3)])  # [3, N] float32

    floor = np.flatnonzero(surface == 0)
    x, y = origin[0] + t[floor] * dx[floor], origin[1] + t[floor] * dy[floor]
    tile = 0.94 + 0.06 * ((np.floor(x / TILE_M) + np.floor(y / TILE_M)) % 2)
    on_wall = np.flatnonzero((surface >= 2) & (surface < 2 + len(geo.wall_a)))
    wall = surface[on_wall] - 2
    x, y, z = (origin[k] + t[on_wall] * d[on_wall] for k, d in enumerate((dx, dy, dz)))
    skirting = on_wall[z < SKIRTING_M]
    for c in range(3):
        color[c, floor] *= tile
        color[c, skirting] *= 0.8
    for k, s0, s1, z0, z1, rgb in geo.openings:
        along = ((x - geo.wall_a[k, 0]) * geo.wall_e[k, 0] + (y - geo.wall_a[k, 1]) * geo.wall_e[k, 1]) \
            / np.linalg.norm(geo.wall_e[k])
        inside = on_wall[(wall == k) & (along >= s0) & (along <= s1) & (z >= z0) & (z <= z1)]
        for c in range(3):
            color[c, inside] = min(rgb[c] * geo.wall_shade[k], 255)
    color = (color.T + 0.5).astype(np.uint8).reshape(size, size, 3)  # every factor above is <= 1: no overflow
    return color, depth


def _cast_room(geo: _Geometry, origin, dirs, hits: _Hits) -> None:
    """Floor, ceiling and walls."""
    dx, dy, dz = dirs
    # Floor and ceiling planes: outside the room the walls are hit first, so the planes need no bounds.
    t_floor = -origin[2] / dz
    hits.take(np.where((dz < 0) & (t_floor > 0), t_floor, np.inf), 0)
    t_ceil = (geo.height_m - origin[2]) / dz
    hits.take(np.where((dz > 0) & (t_ceil > 0), t_ceil, np.inf), 1)
    # Walls: the 2D ray against each outline edge a + s * e, s in [0, 1].
    for k, ((ax, ay), (ex, ey)) in enumerate(zip(geo.wall_a, geo.wall_e)):
        rx, ry = ax - origin[0], ay - origin[1]
        denom = dx * ey - dy * ex
        t_wall = (rx * ey - ry * ex) / denom
        s_wall = (rx * dy - ry * dx) / denom
        hits.take(np.where((t_wall > 0) & (s_wall >= 0) & (s_wall <= 1), t_wall, np.inf), 2 + k)


def _box_block(geo: _Geometry, b: int, c2w, K, size_px: int):
    """The image rectangle (row slice, column slice) that box b can cover, or None if it is behind the camera."""
    cam = (geo.box_corners[b] - c2w[:3, 3]) @ c2w[:3, :3]  # [8, 3] camera coordinates
    if (cam[:, 2] <= 1e-3).all():
        return None
    if (cam[:, 2] <= 1e-3).any():  # straddles the camera plane: its projection is unbounded
        return slice(None), slice(None)
    u = K[0, 0] * cam[:, 0] / cam[:, 2] + K[0, 2]
    v = K[1, 1] * cam[:, 1] / cam[:, 2] + K[1, 2]
    u0, u1 = max(int(np.floor(u.min())), 0), min(int(np.ceil(u.max())) + 1, size_px)
    v0, v1 = max(int(np.floor(v.min())), 0), min(int(np.ceil(v.max())) + 1, size_px)
    if u0 >= u1 or v0 >= v1:
        return None
    return slice(v0, v1), slice(u0, u1)


def _cast_box(geo: _Geometry, b: int, origin, dirs, hits: _Hits, block) -> None:
    """Slab test of rays dirs (3 x [h, w]) against box b in its local frame (it only turns about z)."""
    c, s = geo.box_cos[b], geo.box_sin[b]
    rel = origin - geo.box_center[b]
    o_local = (c * rel[0] + s * rel[1], -s * rel[0] + c * rel[1], rel[2])
    d_local = (c * dirs[0] + s * dirs[1], -s * dirs[0] + c * dirs[1], dirs[2])  # 3 x [h, w]
    t_lo = []
    t_near = t_far = None
    for k in range(3):
        inv = 1.0 / d_local[k]
        ta, tb = (-geo.box_half[b, k] - o_local[k]) * inv, (geo.box_half[b, k] - o_local[k]) * inv
        lo, hi = np.minimum(ta, tb), np.maximum(ta, tb)
        t_lo.append(lo)
        t_near = lo if t_near is None else np.maximum(t_near, lo)
        t_far = hi if t_far is None else np.minimum(t_far, hi)
    hit = (t_near <= t_far) & (t_near > 1e-6) & (t_near < hits.t[block])
    if not hit.any():
        return
    axis = np.stack([lo[hit] for lo in t_lo], -1).argmax(-1)  # the slab entered last is the face hit ...
    d_axis = np.stack([d[hit] for d in d_local], -1)[np.arange(len(axis)), axis]
    face = 2 + len(geo.wall_a) + 6 * b + 2 * axis + (d_axis < 0)  # ... and its normal opposes the ray
    hits.t[block][hit] = t_near[hit]
    hits.surface[block][hit] = face
