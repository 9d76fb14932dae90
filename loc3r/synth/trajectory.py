"""A hand-held scan of a synthetic room: one walking loop around the room, looking inwards.

The path is the room outline moved inwards by a margin (0.45-1.1 m), pushed out of furniture along the
gradient of a clearance field (points stuck in a pocket jump to the nearest cell that is free enough) so that
the walker keeps `CLEARANCE_M` from walls and object footprints, smoothed, and sampled at equal arc length
from a random start, walking either way round. The camera looks along the (smoothed) walking direction turned
towards the room by 45-75 degrees, and turns further where that view would end at a wall or furniture closer
than LOOK_AHEAD_M. It is 1.2-1.7 m above the floor, pitched 10-22 degrees down, with smooth jitter on
position, height, yaw, pitch and roll (a hand-held phone, not a robot)."""

from __future__ import annotations

import numpy as np

from loc3r import geometry
from loc3r.synth import shapes
from loc3r.synth.scene import Scene

CLEARANCE_M = 0.45  # distance the walking path keeps from furniture and walls
HEIGHT_RANGE_M = (1.2, 1.7)
LOOK_AHEAD_M = 1.5  # free floor the camera has in front of it (it turns away from walls closer than this)


def _resample_loop(points, n: int, phase: float = 0.0) -> np.ndarray:
    """n points [n, 2] at equal arc length along the closed polyline `points`, starting at fraction `phase`."""
    closed = np.concatenate([points, points[:1]])
    seg = np.linalg.norm(np.diff(closed, axis=0), axis=-1)
    s = np.concatenate([[0.0], np.cumsum(seg)])
    target = (phase + np.arange(n) / n) % 1.0 * s[-1]
    return np.stack([np.interp(target, s, closed[:, k]) for k in range(2)], -1)


class _ClearanceField:
    """The scene's clearance (distance to walls and furniture, m) on a 10 cm grid, interpolated bilinearly."""

    CELL_M = 0.1

    def __init__(self, scene: Scene):
        self.lo = scene.room.outline_xy.min(0) - 0.2
        shape = np.ceil((scene.room.outline_xy.max(0) + 0.2 - self.lo) / self.CELL_M).astype(int) + 1
        ij = np.stack(np.meshgrid(np.arange(shape[0]), np.arange(shape[1]), indexing="ij"), -1).reshape(-1, 2)
        self.value = scene.clearance_m(self.lo + ij * self.CELL_M).reshape(shape)  # [nx, ny]
        self.grad = np.stack(np.gradient(self.value, self.CELL_M), -1)  # [nx, ny, 2]

    def __call__(self, points, field=None):
        """Bilinear interpolation of `field` (default: the clearance) at points [N, 2]."""
        field = self.value if field is None else field
        f = (np.asarray(points) - self.lo) / self.CELL_M
        i = np.clip(np.floor(f).astype(int), 0, np.array(self.value.shape) - 2)
        t = np.clip(f - i, 0.0, 1.0)
        tx, ty = (t[:, 0], t[:, 1]) if field.ndim == 2 else (t[:, :1], t[:, 1:])
        x, y = i[:, 0], i[:, 1]
        return ((1 - tx) * (1 - ty) * field[x, y] + tx * (1 - ty) * field[x + 1, y]
                + (1 - tx) * ty * field[x, y + 1] + tx * ty * field[x + 1, y + 1])


    def free_cells(self, clearance_m: float) -> np.ndarray:
        """Centres [M, 2] of the grid cells with at least this clearance."""
        return self.lo + np.argwhere(self.value >= clearance_m) * self.CELL_M


def _push_out(field: _ClearanceField, points, iterations: int, clearance_m: float = CLEARANCE_M) -> np.ndarray:
    """Move points up the clearance gradient until they are `clearance_m` from walls and furniture; points
    stuck in a pocket between furniture jump to the nearest grid cell that is that free."""
    p = np.array(points, np.float64)
    for _ in range(iterations):
        c = field(p)
        bad = c < clearance_m
        if not bad.any():
            return p
        grad = field(p[bad], field.grad)
        grad /= np.maximum(np.linalg.norm(grad, axis=-1, keepdims=True), 1e-9)
        p[bad] += grad * np.clip(clearance_m - c[bad], 0.02, 0.1)[:, None]
    stuck = np.flatnonzero(field(p) < clearance_m)
    free = field.free_cells(clearance_m + 0.05)
    if stuck.size and free.size:
        p[stuck] = free[np.linalg.norm(p[stuck, None] - free[None], axis=-1).argmin(-1)]
    return p


def _look_distance(field: _ClearanceField, xy, yaw, max_m: float = 2.0) -> np.ndarray:
    """[N] free distance (m, up to max_m) ahead of points xy [N, 2] looking along yaw [N]."""
    steps = np.arange(0.1, max_m + 1e-9, 0.1)  # [K]
    ahead = xy[:, None] + steps[None, :, None] * np.stack([np.cos(yaw), np.sin(yaw)], -1)[:, None]  # [N, K, 2]
    blocked = field(ahead.reshape(-1, 2)).reshape(len(xy), len(steps)) < 0.05
    return np.where(blocked.any(-1), steps[blocked.argmax(-1)], max_m)


def _smooth_noise(rng, n: int, amplitude: float) -> np.ndarray:
    """[n] smooth periodic jitter: a few low-frequency sinusoids, peak about `amplitude`."""
    x = np.arange(n) / n * 2 * np.pi
    waves = sum(np.sin(f * x + rng.uniform(0, 2 * np.pi)) * rng.uniform(0.5, 1.0) for f in rng.integers(1, 6, 3))
    return amplitude * waves / 2.0


def walking_loop(scene: Scene, rng: np.random.Generator, n_samples: int = 240) -> tuple[np.ndarray, _ClearanceField]:
    """Closed walking path [n_samples, 2] (counter-clockwise) inside the room, clear of furniture, and the
    clearance field it was pushed along."""
    outline = scene.room.outline_xy
    margin = rng.uniform(0.7, 1.1)
    while True:  # the inset must stay a valid loop: shrink the margin for narrow rooms and L arms
        loop = shapes.inset_polygon(outline, margin)
        area, _ = shapes.polygon_area_centroid(loop)
        if area > 0.5 and (shapes.wall_distance(loop, outline) > margin - 1e-6).all() or margin < 0.45:
            break
        margin *= 0.85
    field = _ClearanceField(scene)
    path = _push_out(field, _resample_loop(loop, n_samples), iterations=30)
    for _ in range(3):  # circular moving average, then push again where smoothing cut a corner into furniture
        path = sum(np.roll(path, k, axis=0) for k in range(-4, 5)) / 9.0
        path = _push_out(field, path, iterations=10)
    return path, field


def camera_path(scene: Scene, n_frames: int, rng: np.random.Generator) -> np.ndarray:
    """Camera-to-world poses [n_frames, 4, 4] (scene's frame, OpenCV axes) of one hand-held loop round the room."""
    loop, field = walking_loop(scene, rng)
    clockwise = rng.random() < 0.5
    if clockwise:
        loop = loop[::-1]
    xy = _resample_loop(loop, n_frames, phase=rng.uniform())
    xy = xy + np.stack([_smooth_noise(rng, n_frames, 0.04), _smooth_noise(rng, n_frames, 0.04)], -1)
    xy = _push_out(field, xy, iterations=10)

    # Heading: the walking direction averaged over a sixth of the loop, so that the view turns steadily
    # instead of swinging round at the corners of the path.
    dense = _resample_loop(loop, 240)
    step = np.roll(dense, -1, axis=0) - dense
    step /= np.maximum(np.linalg.norm(step, axis=-1, keepdims=True), 1e-9)
    tangent = sum(np.roll(step, k, axis=0) for k in range(-20, 21))
    nearest = np.linalg.norm(xy[:, None] - dense[None], axis=-1).argmin(-1)
    inwards = rng.uniform(np.radians(45), np.radians(75)) * (-1 if clockwise else 1)  # the room is on the left CCW
    yaw = geometry.yaw_of_direction(tangent[nearest]) + inwards + _smooth_noise(rng, n_frames, np.radians(6))
    # Nobody scans a wall from 30 cm: turn the smallest amount that leaves LOOK_AHEAD_M of free view.
    turns = np.radians([0, 20, -20, 40, -40, 60, -60, 90, -90, 135, -135, 180])
    look = np.stack([_look_distance(field, xy, yaw + t) for t in turns], -1)  # [T, turns]
    enough = look >= LOOK_AHEAD_M
    best = np.where(enough.any(-1), enough.argmax(-1), look.argmax(-1))
    yaw = yaw + turns[best]
    pitch = rng.uniform(np.radians(10), np.radians(22)) + _smooth_noise(rng, n_frames, np.radians(3))
    roll = _smooth_noise(rng, n_frames, np.radians(2))
    height = np.clip(rng.uniform(*HEIGHT_RANGE_M) + _smooth_noise(rng, n_frames, 0.05), *HEIGHT_RANGE_M)

    eye = np.concatenate([xy, height[:, None]], -1)
    forward = np.stack([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), -np.sin(pitch)], -1)
    c2w = geometry.look_at_c2w(eye, eye + forward)
    c2w[:, :3, :3] = c2w[:, :3, :3] @ geometry.rot_z(roll)  # roll about the optical (camera z) axis
    return c2w
