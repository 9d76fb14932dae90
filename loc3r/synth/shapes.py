"""2D shapes on the floor plan: room polygons, oriented object footprints, distances and overlaps.

Everything is in metres on the ground plane (x, y) of whatever frame the caller uses; functions are vectorised
over points and footprints. A footprint is an oriented rectangle: centre (x, y), half extents (hx, hy) along
its local axes, and a yaw (rad, CCW from +x) that turns its local +x axis into the frame's.
Frames and angles themselves belong to loc3r.geometry; this module only measures shapes.
"""

from __future__ import annotations

import numpy as np


def rotate_xy(xy, yaw_rad):
    """Rotate 2D vectors [..., 2] CCW by yaw_rad (broadcast)."""
    xy = np.asarray(xy, np.float64)
    c, s = np.cos(yaw_rad), np.sin(yaw_rad)
    return np.stack([c * xy[..., 0] - s * xy[..., 1], s * xy[..., 0] + c * xy[..., 1]], -1)


def footprint_corners(center_xy, half_xy, yaw_rad) -> np.ndarray:
    """Corners [..., 4, 2] (CCW) of oriented rectangles."""
    signs = np.array([[-1, -1], [1, -1], [1, 1], [-1, 1]], np.float64)
    local = signs * np.asarray(half_xy, np.float64)[..., None, :]  # [..., 4, 2]
    return np.asarray(center_xy, np.float64)[..., None, :] + rotate_xy(local, np.asarray(yaw_rad)[..., None])


def polygon_edges(polygon_xy) -> tuple[np.ndarray, np.ndarray]:
    """Edges of a closed polygon [V, 2]: start points [V, 2] and end points [V, 2] (edge k: vertex k -> k+1)."""
    a = np.asarray(polygon_xy, np.float64)
    return a, np.roll(a, -1, axis=0)


def points_in_polygon(points_xy, polygon_xy) -> np.ndarray:
    """[N] bool: whether points [N, 2] are inside a simple polygon [V, 2] (crossing number)."""
    p = np.asarray(points_xy, np.float64)[:, None, :]  # [N, 1, 2]
    a, b = polygon_edges(polygon_xy)
    straddles = (a[None, :, 1] > p[..., 1]) != (b[None, :, 1] > p[..., 1])  # [N, V]
    with np.errstate(divide="ignore", invalid="ignore"):  # horizontal edges never straddle: their x is unused
        slope = (b[:, 0] - a[:, 0]) / (b[:, 1] - a[:, 1])  # [V] dx / dy of each edge
        x_cross = a[None, :, 0] + (p[..., 1] - a[None, :, 1]) * slope[None]
    return (straddles & (p[..., 0] < x_cross)).sum(-1) % 2 == 1


def distance_to_segments(points_xy, a, b) -> np.ndarray:
    """[N, S] distances from points [N, 2] to segments a [S, 2] -> b [S, 2]."""
    p = np.asarray(points_xy, np.float64)[:, None, :]
    a, b = np.asarray(a, np.float64)[None], np.asarray(b, np.float64)[None]
    e = b - a
    s = np.clip(((p - a) * e).sum(-1) / np.maximum((e * e).sum(-1), 1e-12), 0.0, 1.0)
    return np.linalg.norm(p - (a + s[..., None] * e), axis=-1)


def wall_distance(points_xy, polygon_xy) -> np.ndarray:
    """[N] signed distance to the room outline: positive inside the room, negative outside."""
    a, b = polygon_edges(polygon_xy)
    d = distance_to_segments(points_xy, a, b).min(-1)
    return np.where(points_in_polygon(points_xy, polygon_xy), d, -d)


def footprint_distance(points_xy, center_xy, half_xy, yaw_rad) -> np.ndarray:
    """[N, B] signed distance from points [N, 2] to footprints [B]: negative inside, 0 on the boundary."""
    p = np.asarray(points_xy, np.float64)[:, None, :] - np.asarray(center_xy, np.float64)[None]
    local = rotate_xy(p, -np.asarray(yaw_rad, np.float64)[None])  # [N, B, 2]
    q = np.abs(local) - np.asarray(half_xy, np.float64)[None]
    outside = np.linalg.norm(np.maximum(q, 0.0), axis=-1)
    inside = np.minimum(q.max(-1), 0.0)
    return outside + inside


def footprints_overlap(center_a, half_a, yaw_a, center_b, half_b, yaw_b) -> bool:
    """Whether two oriented rectangles intersect (separating axis test)."""
    ca, cb = footprint_corners(center_a, half_a, yaw_a), footprint_corners(center_b, half_b, yaw_b)
    for yaw in (yaw_a, yaw_b):
        for axis in rotate_xy(np.eye(2), yaw):
            pa, pb = ca @ axis, cb @ axis
            if pa.max() <= pb.min() or pb.max() <= pa.min():
                return False
    return True


def footprint_inside_polygon(center_xy, half_xy, yaw_rad, polygon_xy, margin_m: float = 0.0) -> bool:
    """Whether an oriented rectangle lies inside the polygon, at least `margin_m` from its outline."""
    corners = footprint_corners(center_xy, half_xy, yaw_rad)
    # Points along the rectangle's edges catch a reflex (L-shape) corner poking into the rectangle's side.
    t = np.linspace(0.0, 1.0, 9)[:-1, None]
    boundary = np.concatenate([corners[k] + t * (corners[(k + 1) % 4] - corners[k]) for k in range(4)])
    if (wall_distance(boundary, polygon_xy) < margin_m).any():
        return False
    inside_vertex = footprint_distance(np.asarray(polygon_xy, np.float64), np.asarray(center_xy)[None],
                                       np.asarray(half_xy)[None], np.asarray([yaw_rad]))
    return not (inside_vertex < margin_m).any()


def polygon_area_centroid(polygon_xy) -> tuple[float, np.ndarray]:
    """Area (m^2) and centroid [2] of a simple CCW polygon (shoelace formula)."""
    a, b = polygon_edges(polygon_xy)
    cross = a[:, 0] * b[:, 1] - b[:, 0] * a[:, 1]
    area = 0.5 * cross.sum()
    centroid = ((a + b) * cross[:, None]).sum(0) / (6.0 * area)
    return float(area), centroid


def inset_polygon(polygon_xy, margin_m: float) -> np.ndarray:
    """The polygon [V, 2] moved inwards by margin_m along its edge normals (valid for small margins of
    rectilinear or convex CCW polygons: each vertex moves to the intersection of its two offset edges)."""
    p = np.asarray(polygon_xy, np.float64)
    e_in, e_out = p - np.roll(p, 1, 0), np.roll(p, -1, 0) - p  # edges into and out of each vertex
    n_in = rotate_xy(e_in / np.linalg.norm(e_in, axis=-1, keepdims=True), np.pi / 2)  # inward (left) normals
    n_out = rotate_xy(e_out / np.linalg.norm(e_out, axis=-1, keepdims=True), np.pi / 2)
    return p + margin_m * (n_in + n_out) / (1.0 + (n_in * n_out).sum(-1, keepdims=True))
