"""Egocentric spatial relations between a speaker's pose and the objects of a scene.

A speaker stands at (x, y) facing yaw (rad, CCW from +x; loc3r.geometry's convention). The *relative bearing*
of an object is the angle of its bounding-box centre seen from the speaker, minus the yaw: 0 = straight
ahead, +pi/2 = on the left, -pi/2 = on the right, pi = behind. Distances are to the object's footprint (the
nearest point of its bounding box on the floor), which is what "close to me" means for a 2 m bed.

Each relation has a strict tolerance (a situation is only *described* with relations that hold strictly) and
a loose one (a pose *fits* a description when every relation holds loosely); see `holds`.
"""

from __future__ import annotations

import numpy as np

from loc3r import geometry
from loc3r.synth import shapes
from loc3r.synth.scene import Scene

# Egocentric sectors: centre bearing (rad). Each covers +-45 degrees around its centre.
SECTOR_CENTER = {"front": 0.0, "left": np.pi / 2, "behind": np.pi, "right": -np.pi / 2}
SECTOR_HALF_WIDTH = np.pi / 4

# (strict, loose) tolerances.
NEAR_M = (0.8, 1.1)  # "next to / by / in front of X": footprint distance at most this
FACING_RAD = (np.radians(15), np.radians(30))  # "facing X": |bearing| at most this
SIDE_RAD = (np.radians(30), np.radians(45))  # "X on my left / right / behind me": within this of the sector centre
BETWEEN_T = ((0.3, 0.7), (0.15, 0.85))  # "between A and B": projection on the segment A-B (fraction)
BETWEEN_LATERAL_M = (0.5, 0.8)  # and at most this far from the segment's line
BETWEEN_MIN_GAP_M = 1.2  # the two centres must be at least this far apart to stand between them

RELATIONS = ("near", "facing", "left", "right", "behind", "between")
RELATION_ARITY = {"near": 1, "facing": 1, "left": 1, "right": 1, "behind": 1, "between": 2}


def relative_bearing(scene: Scene, position_xy, yaw_rad) -> np.ndarray:
    """[P, B] bearing (rad, (-pi, pi]) of every object centre from poses: positions [P, 2], yaws [P]."""
    p = np.asarray(position_xy, np.float64).reshape(-1, 2)
    centers = np.array([o.center[:2] for o in scene.objects]).reshape(-1, 2)
    world = geometry.yaw_of_direction(centers[None] - p[:, None])  # [P, B]
    return geometry.angle_diff(world, np.asarray(yaw_rad, np.float64).reshape(-1, 1))


def object_distance(scene: Scene, position_xy) -> np.ndarray:
    """[P, B] distance (m) from positions [P, 2] to every object's footprint (0 inside it)."""
    p = np.asarray(position_xy, np.float64).reshape(-1, 2)
    return np.maximum(shapes.footprint_distance(p, *scene.footprints()), 0.0)


def sector_offset(bearing_rad, sector: str) -> np.ndarray:
    """|bearing - sector centre| (rad, in [0, pi])."""
    return np.abs(geometry.angle_diff(bearing_rad, SECTOR_CENTER[sector]))


def _unary(relation: str, objects, p, yaw, level: int, grid: bool) -> np.ndarray:
    """A one-object relation for several objects: bool [P, n] for poses, [P, Y, n] for grid=True."""
    centers = np.array([o.center[:2] for o in objects]).reshape(-1, 2)
    if relation == "near":
        d = shapes.footprint_distance(p, centers, np.array([o.size[:2] / 2 for o in objects]).reshape(-1, 2),
                                      np.array([o.yaw for o in objects]))  # [P, n]
        ok = d <= NEAR_M[level]
        return np.broadcast_to(ok[:, None], (len(p), len(yaw), len(objects))) if grid else ok
    if relation == "facing":
        center, tolerance = 0.0, FACING_RAD[level]
    else:  # left, right, behind
        center, tolerance = SECTOR_CENTER[relation], SIDE_RAD[level]
    to_object = centers[None] - p[:, None]  # [P, n, 2]
    to_object /= np.maximum(np.linalg.norm(to_object, axis=-1, keepdims=True), 1e-12)
    sector_dir = np.stack([np.cos(yaw + center), np.sin(yaw + center)], -1)  # [P or Y, 2]
    if grid:
        cos_offset = np.swapaxes(to_object @ sector_dir.T, 1, 2)  # [P, Y, n]
    else:
        cos_offset = (to_object * sector_dir[:, None]).sum(-1)  # [P, n]
    return cos_offset >= np.cos(tolerance)


def holds(scene: Scene, relation: str, object_ids, position_xy, yaw_rad, loose: bool, grid: bool = False):
    """Whether `relation` with the objects `object_ids` (one, or two for "between") holds at poses.

    Poses are positions [P, 2] with yaws [P] (returns bool [P]), or with grid=True every position with every
    yaw of yaws [Y] (returns bool [P, Y]). Angles are compared through cosines (cos of the offset from the
    sector centre >= cos of the tolerance): exact, and no wrapping of large arrays.
    """
    level = 1 if loose else 0
    index = {o.id: i for i, o in enumerate(scene.objects)}
    objects = [scene.objects[index[i]] for i in object_ids]
    p = np.asarray(position_xy, np.float64).reshape(-1, 2)
    yaw = np.asarray(yaw_rad, np.float64).reshape(-1)
    if relation != "between":
        return _unary(relation, objects[:1], p, yaw, level, grid)[..., 0]
    a, b = objects[0].center[:2], objects[1].center[:2]
    ab = b - a
    length = np.linalg.norm(ab)
    t = (p - a) @ ab / length**2
    lateral = np.abs((p - a) @ shapes.rotate_xy(ab / length, np.pi / 2))
    lo, hi = BETWEEN_T[level]
    ok = (length >= BETWEEN_MIN_GAP_M) & (t >= lo) & (t <= hi) & (lateral <= BETWEEN_LATERAL_M[level])
    return np.broadcast_to(ok[:, None], (len(p), len(yaw))) if grid else ok


def unary_table(scene: Scene, position_xy, yaw_rad: float, loose: bool) -> dict[str, np.ndarray]:
    """For one pose, which objects satisfy each one-object relation: relation -> bool [B] (scene.objects order)."""
    p, yaw = np.asarray(position_xy, np.float64).reshape(1, 2), np.array([yaw_rad], np.float64)
    return {r: _unary(r, scene.objects, p, yaw, int(loose), False)[0]
            for r in RELATIONS if RELATION_ARITY[r] == 1}
