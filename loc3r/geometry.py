"""Coordinate frames, poses, angles, depth unprojection and layout targets: the only home of these conventions.

Frames (see ../shared/DESIGN.md):
- World: the data set's frame, metres, +z up (ScanNet raw or axis-aligned frame, our synthetic rooms).
- Camera: OpenCV axes (x right, y down, z forward). Poses are 4x4 camera-to-world matrices (`c2w`).
- BEV frame of a video: gravity-aligned and anchored to the first valid frame. Origin = that camera's centre
  projected on the ground plane (z = 0); +y = its forward axis projected on the ground plane; +x = +y turned
  90 degrees clockwise seen from above (for a level camera this is the camera's right axis); z = world z.
  So the first camera sits at the BEV origin facing +y (yaw = +pi/2).
- Yaw: angle of a facing direction in the x-y plane, counter-clockwise from +x, radians, wrapped to (-pi, pi].

All functions are vectorised over leading dimensions and take numpy arrays (float64 inside for accuracy).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from loc3r.errors import Loc3rError

# SQA3D's agent faces along -x of its own frame before `rotation` is applied: the release's
# utils/visualize_data.py draws the facing arrow's head at -x. Only yaw matters (the quaternions are yaw-only).
SQA3D_AGENT_FORWARD = np.array([-1.0, 0.0, 0.0])


# ---------------------------------------------------------------------------------------------------------
# Angles and rigid transforms
# ---------------------------------------------------------------------------------------------------------

def wrap_angle(rad):
    """Wrap angles to (-pi, pi]."""
    rad = np.asarray(rad, dtype=np.float64)
    wrapped = np.mod(rad + np.pi, 2 * np.pi) - np.pi  # [-pi, pi)
    return np.where(wrapped == -np.pi, np.pi, wrapped)


def angle_diff(a_rad, b_rad):
    """Signed smallest difference a - b, in (-pi, pi]."""
    return wrap_angle(np.asarray(a_rad) - np.asarray(b_rad))


def yaw_of_direction(direction):
    """Yaw (rad) of direction vectors [..., >=2]: atan2(dy, dx)."""
    d = np.asarray(direction, dtype=np.float64)
    return wrap_angle(np.arctan2(d[..., 1], d[..., 0]))


def rot_z(yaw_rad):
    """Rotation matrices [..., 3, 3] about +z by yaw_rad."""
    c, s = np.cos(yaw_rad), np.sin(yaw_rad)
    z, o = np.zeros_like(c), np.ones_like(c)
    return np.stack([np.stack([c, -s, z], -1), np.stack([s, c, z], -1), np.stack([z, z, o], -1)], -2)


def make_transform(rotation, translation):
    """4x4 homogeneous matrices [..., 4, 4] from rotations [..., 3, 3] and translations [..., 3]."""
    rotation, translation = np.asarray(rotation, np.float64), np.asarray(translation, np.float64)
    out = np.zeros(rotation.shape[:-2] + (4, 4))
    out[..., :3, :3] = rotation
    out[..., :3, 3] = translation
    out[..., 3, 3] = 1.0
    return out


def invert_transform(T):
    """Inverse of rigid 4x4 transforms [..., 4, 4]."""
    T = np.asarray(T, np.float64)
    R, t = T[..., :3, :3], T[..., :3, 3]
    Rt = np.swapaxes(R, -1, -2)
    return make_transform(Rt, -np.einsum("...ij,...j->...i", Rt, t))


def transform_points(T, points):
    """Apply 4x4 transforms [..., 4, 4] (broadcast) to points [..., 3]."""
    T, points = np.asarray(T, np.float64), np.asarray(points, np.float64)
    return np.einsum("...ij,...j->...i", T[..., :3, :3], points) + T[..., :3, 3]


def look_at_c2w(eye, target, up=(0.0, 0.0, 1.0)):
    """Camera-to-world pose (OpenCV axes) of a camera at `eye` looking at `target`, with zero roll."""
    eye, target = np.asarray(eye, np.float64), np.asarray(target, np.float64)
    z = target - eye
    z = z / np.linalg.norm(z, axis=-1, keepdims=True)
    x = np.cross(z, np.broadcast_to(np.asarray(up, np.float64), z.shape))  # right = forward x up
    x = x / np.linalg.norm(x, axis=-1, keepdims=True)
    y = np.cross(z, x)  # down
    return make_transform(np.stack([x, y, z], -1), eye)


# ---------------------------------------------------------------------------------------------------------
# Camera poses and the BEV frame
# ---------------------------------------------------------------------------------------------------------

def valid_pose_mask(c2w):
    """True for poses [..., 4, 4] that are finite (ScanNet writes -inf when tracking was lost)."""
    return np.isfinite(np.asarray(c2w, np.float64)).all(axis=(-1, -2))


def camera_yaw(c2w):
    """World yaw (rad) of the cameras' forward axis (+z of OpenCV camera) projected on the ground plane."""
    return yaw_of_direction(np.asarray(c2w, np.float64)[..., :3, 2])


def bev_from_first_camera(c2w_first) -> np.ndarray:
    """World-to-BEV transform [4, 4] anchored to a camera pose (the first valid frame of a video)."""
    c2w_first = np.asarray(c2w_first, np.float64)
    if not valid_pose_mask(c2w_first):
        raise Loc3rError("first camera pose is not finite: the BEV frame needs a valid first frame")
    forward = c2w_first[:3, 2]
    if np.hypot(forward[0], forward[1]) < 1e-6:
        raise Loc3rError("the first valid camera's forward axis (third column of its pose) has no horizontal "
                         "component: the camera looks straight up or down, or the pose is not a rotation; the BEV "
                         "frame needs its heading")
    yaw = camera_yaw(c2w_first)
    # BEV axes in world coordinates: +y along the heading, +x clockwise from it. Rotation BEV->world is
    # rot_z(yaw - pi/2) (it maps +y to the heading).
    bev_to_world = make_transform(rot_z(yaw - np.pi / 2), [c2w_first[0, 3], c2w_first[1, 3], 0.0])
    return invert_transform(bev_to_world)


def first_valid_index(c2w) -> int:
    """Index of the first finite pose in [T, 4, 4]."""
    valid = np.flatnonzero(valid_pose_mask(c2w))
    if valid.size == 0:
        raise Loc3rError("no valid camera pose in the video: every pose is non-finite")
    return int(valid[0])


def ground_path_of_first_camera(c2w) -> np.ndarray:
    """[T, 2] camera positions seen from above in the first camera's own frame (x its right, y its forward, metres):
    the BEV of a video whose poses carry no gravity direction, such as CUT3R's (its world is the first camera's
    frame), the first camera's tilt ignored."""
    c2w = np.asarray(c2w, np.float64)
    relative = np.linalg.inv(c2w[0]) @ c2w
    return relative[:, [0, 2], 3]


def bev_frame_of_video(c2w) -> np.ndarray:
    """World-to-BEV transform [4, 4] of a video whose camera poses are c2w [T, 4, 4]."""
    c2w = np.asarray(c2w, np.float64)
    return bev_from_first_camera(c2w[first_valid_index(c2w)])


def poses_to_bev(world_to_bev, c2w):
    """Camera-to-BEV poses [..., 4, 4] from camera-to-world poses (non-finite poses stay non-finite)."""
    return np.asarray(world_to_bev, np.float64) @ np.asarray(c2w, np.float64)


def world_to_bev_points(world_to_bev, points):
    """World points [..., 3] -> BEV points [..., 3]."""
    return transform_points(world_to_bev, points)


def bev_to_world_points(world_to_bev, points):
    """BEV points [..., 3] -> world points [..., 3]."""
    return transform_points(invert_transform(world_to_bev), points)


def _frame_yaw(world_to_bev) -> float:
    """Yaw of the BEV x axis seen in world coordinates (BEV yaw = world yaw - this)."""
    R = np.asarray(world_to_bev, np.float64)[:3, :3]
    return float(np.arctan2(R[0, 1], R[0, 0]))


def world_to_bev_pose(world_to_bev, position_xy, yaw_rad):
    """(position [..., 2], yaw) in the world frame -> the same in the BEV frame (position on the ground)."""
    p = np.asarray(position_xy, np.float64)
    p3 = np.concatenate([p, np.zeros(p.shape[:-1] + (1,))], -1)
    return world_to_bev_points(world_to_bev, p3)[..., :2], wrap_angle(np.asarray(yaw_rad) - _frame_yaw(world_to_bev))


def bev_to_world_pose(world_to_bev, position_xy, yaw_rad):
    """(position [..., 2], yaw) in the BEV frame -> the same in the world frame."""
    p = np.asarray(position_xy, np.float64)
    p3 = np.concatenate([p, np.zeros(p.shape[:-1] + (1,))], -1)
    return bev_to_world_points(world_to_bev, p3)[..., :2], wrap_angle(np.asarray(yaw_rad) + _frame_yaw(world_to_bev))


# ---------------------------------------------------------------------------------------------------------
# SQA3D quaternions (x, y, z, w; yaw-only rotations about +z)
# ---------------------------------------------------------------------------------------------------------

def quat_xyzw_to_matrix(q):
    """Rotation matrices [..., 3, 3] from unit quaternions [..., 4] stored (x, y, z, w)."""
    q = np.asarray(q, np.float64)
    q = q / np.linalg.norm(q, axis=-1, keepdims=True)
    x, y, z, w = q[..., 0], q[..., 1], q[..., 2], q[..., 3]
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)], -1),
        np.stack([2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)], -1),
        np.stack([2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)], -1),
    ], -2)


def sqa3d_quat_to_yaw(q_xyzw):
    """World yaw (rad) of the direction an SQA3D agent faces, from its rotation quaternion (x, y, z, w)."""
    forward = quat_xyzw_to_matrix(q_xyzw) @ SQA3D_AGENT_FORWARD
    return yaw_of_direction(forward)


def yaw_to_sqa3d_quat(yaw_rad):
    """SQA3D rotation quaternion (x, y, z, w) of an agent facing world yaw `yaw_rad` (inverse of the above)."""
    # The agent's forward is -x, whose own yaw is pi: rotate about z by (yaw - pi).
    half = wrap_angle(np.asarray(yaw_rad, np.float64) - np.pi) / 2
    zeros = np.zeros_like(half)
    return np.stack([zeros, zeros, np.sin(half), np.cos(half)], -1)


def sqa3d_rotvec_z(q_xyzw):
    """The z component of the rotation vector of yaw-only quaternions (what SQA3D's official metric compares)."""
    q = np.asarray(q_xyzw, np.float64)
    return wrap_angle(2 * np.arctan2(q[..., 2], q[..., 3]))


# ---------------------------------------------------------------------------------------------------------
# Depth and layout targets
# ---------------------------------------------------------------------------------------------------------

def unproject_depth(depth_m, K):
    """Camera-frame points [..., H, W, 3] of depth maps [..., H, W] (metres) with intrinsics K [..., 3, 3].

    Pixel (u, v) is the centre-less integer grid convention of ScanNet / OpenCV: x = (u - cx) * d / fx.
    """
    depth_m, K = np.asarray(depth_m, np.float64), np.asarray(K, np.float64)
    H, W = depth_m.shape[-2:]
    v, u = np.meshgrid(np.arange(H, dtype=np.float64), np.arange(W, dtype=np.float64), indexing="ij")
    fx, fy = K[..., 0, 0, None, None], K[..., 1, 1, None, None]
    cx, cy = K[..., 0, 2, None, None], K[..., 1, 2, None, None]
    return np.stack([(u - cx) * depth_m / fx, (v - cy) * depth_m / fy, depth_m], -1)


def depth_to_points(depth_m, K, c2x):
    """Points [..., H, W, 3] in the frame of c2x (camera-to-world or camera-to-BEV poses [..., 4, 4])."""
    cam = unproject_depth(depth_m, K)
    c2x = np.asarray(c2x, np.float64)[..., None, None, :, :]
    return transform_points(c2x, cam)


def project_points(points_cam, K):
    """Pixel coordinates [..., 2] and depth [...] of camera-frame points [..., 3] with one intrinsics K [3, 3]."""
    p, K = np.asarray(points_cam, np.float64), np.asarray(K, np.float64)
    z = p[..., 2]
    with np.errstate(divide="ignore", invalid="ignore"):
        u = K[0, 0] * p[..., 0] / z + K[0, 2]
        v = K[1, 1] * p[..., 1] / z + K[1, 2]
    return np.stack([u, v], -1), z


def scale_intrinsics(K, from_hw, to_hw):
    """Intrinsics [3, 3] of an image resized from (H, W) to (H', W') (pixel-edge convention of cv2/PIL)."""
    K = np.array(K, np.float64)
    sy, sx = to_hw[0] / from_hw[0], to_hw[1] / from_hw[1]
    K[0, 0] *= sx
    K[1, 1] *= sy
    K[0, 2] = (K[0, 2] + 0.5) * sx - 0.5
    K[1, 2] = (K[1, 2] + 0.5) * sy - 0.5
    return K


@dataclass
class LayoutTargets:
    """Per-token BEV layout supervision of a video."""

    xy: np.ndarray  # [T, gh*gw, 2] float32, median BEV (x, y) in metres of the pixels each token covers (0 if masked)
    valid: np.ndarray  # [T, gh*gw] bool, False where too few valid depth pixels or the frame's pose is invalid
    n_invalid_frames: int  # frames dropped for a non-finite pose
    n_invalid_pixels: int  # pixels dropped for zero / non-finite depth (in frames with a valid pose)


def token_cell_index(H: int, W: int, grid_hw: tuple[int, int], extent: float = 1.0) -> np.ndarray:
    """[H, W] index of the pooled vision token covering each pixel, -1 where no token looks.

    The tokens split the top-left `extent` of the frame's height and width into gh x gw equal cells: the vision
    tower's patches cover (S // patch) * patch of the S pixels (SigLIP-384/14: 27 * 14 = 378, the last 6 rows
    and columns are cut off) and the bilinear 2x2 pooling resamples that patch grid to gh x gw equal cells.
    """
    gh, gw = grid_hw
    u = np.arange(H) / (H * extent)  # where each pixel row starts, as a fraction of the covered height
    v = np.arange(W) / (W * extent)
    rows = np.where(u < 1.0, np.floor(u * gh), -1).astype(np.int64)  # extent 1: (row * gh) // H exactly
    cols = np.where(v < 1.0, np.floor(v * gw), -1).astype(np.int64)
    return np.where((rows[:, None] >= 0) & (cols[None, :] >= 0), rows[:, None] * gw + cols[None, :], -1)


def layout_targets(depth_m, K, c2bev, grid_hw: tuple[int, int], min_valid_frac: float = 0.1,
                   extent: float = 1.0) -> LayoutTargets:
    """Median BEV (x, y) per pooled vision token, from depth [T, H, W] (metres, 0 = invalid), K [T|-, 3, 3]
    and camera-to-BEV poses [T, 4, 4]; the tokens' cells are token_cell_index's (`extent`: the fraction of the
    frame they cover). A token is valid when at least `min_valid_frac` of its pixels have valid depth and the
    frame's pose is finite. The median is numpy's (mean of the two middle values).
    """
    depth_m = np.asarray(depth_m, np.float64)
    c2bev = np.asarray(c2bev, np.float64)
    T, H, W = depth_m.shape
    gh, gw = grid_hw
    G = gh * gw
    pose_ok = valid_pose_mask(c2bev)  # [T]
    cell = token_cell_index(H, W, grid_hw, extent)
    seen = cell >= 0  # [H, W] pixels some token looks at
    depth_ok = np.isfinite(depth_m) & (depth_m > 0)
    pixel_ok = depth_ok & pose_ok[:, None, None] & seen
    K = np.broadcast_to(np.asarray(K, np.float64), (T, 3, 3))
    safe_pose = np.where(pose_ok[:, None, None], c2bev, np.eye(4))
    pts = depth_to_points(np.where(pixel_ok, depth_m, 1.0), K, safe_pose)[..., :2]  # [T, H, W, 2]

    key = (np.arange(T)[:, None, None] * G + cell[None]).reshape(-1)[pixel_ok.reshape(-1)]  # [P] token id
    counts = np.bincount(key, minlength=T * G)  # valid pixels per token
    cell_sizes = np.bincount(cell[seen], minlength=G)  # pixels per token
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    lo = starts + np.maximum(counts - 1, 0) // 2
    hi = starts + counts // 2
    xy = np.zeros((T * G, 2))
    for axis in range(2):
        vals = pts[..., axis].reshape(-1)[pixel_ok.reshape(-1)]
        order = np.lexsort((vals, key))  # by token, then value
        s = vals[order]
        has = counts > 0
        xy[has, axis] = 0.5 * (s[lo[has]] + s[hi[has]])
    valid = counts >= np.maximum(1, np.ceil(min_valid_frac * np.tile(cell_sizes, T)))
    xy[~valid] = 0.0
    return LayoutTargets(
        xy=xy.reshape(T, G, 2).astype(np.float32),
        valid=valid.reshape(T, G),
        n_invalid_frames=int((~pose_ok).sum()),
        n_invalid_pixels=int((~depth_ok & pose_ok[:, None, None] & seen).sum()),
    )


def yaw_bin_centres(bins: int) -> np.ndarray:
    """Centres of `bins` equal yaw bins over (-pi, pi]: -pi + (b + 0.5) * 2 pi / bins, radians [bins]."""
    return -np.pi + (np.arange(bins) + 0.5) * (2 * np.pi / bins)


def aligned_to_raw_pose(axis_alignment, location_xyz, facing_xy) -> tuple[np.ndarray, float]:
    """A pose given in ScanNet's axis-aligned frame (MSQA's `location` [x, y, z] and facing vector `orientation`
    [fx, fy, 0], the scan's axisAlignment applied, not re-centred) -> the raw scan frame the camera poses live in:
    position (x, y) and yaw. axisAlignment maps raw to aligned: aligned = A raw."""
    inverse = invert_transform(np.asarray(axis_alignment, np.float64))
    position = transform_points(inverse, np.asarray(location_xyz, np.float64).reshape(1, 3))[0, :2]
    direction = inverse[:3, :3] @ np.array([facing_xy[0], facing_xy[1], 0.0])
    return position, float(np.arctan2(direction[1], direction[0]))
