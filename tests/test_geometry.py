"""Geometry: frames, yaw conversions, unprojection and layout targets against closed forms and brute force."""

import numpy as np
import pytest

from loc3r import geometry as g
from loc3r.errors import Loc3rError


def random_c2w(rng, n):
    """Hand-held-like camera poses: random yaw, small pitch and roll, random position."""
    eye = rng.uniform(-3, 3, (n, 3)) + [0, 0, 1.5]
    yaw = rng.uniform(-np.pi, np.pi, n)
    pitch = rng.uniform(-0.3, 0.3, n)
    target = eye + np.stack([np.cos(yaw) * np.cos(pitch), np.sin(yaw) * np.cos(pitch), np.sin(pitch)], -1)
    c2w = g.look_at_c2w(eye, target)
    roll = rng.uniform(-0.1, 0.1, n)
    c, s = np.cos(roll), np.sin(roll)
    Rroll = np.zeros((n, 3, 3))
    Rroll[:, 0, 0], Rroll[:, 0, 1], Rroll[:, 1, 0], Rroll[:, 1, 1], Rroll[:, 2, 2] = c, -s, s, c, 1
    c2w[:, :3, :3] = c2w[:, :3, :3] @ Rroll
    return c2w


def test_wrap_angle_range():
    a = np.array([-np.pi, np.pi, 3 * np.pi, -3 * np.pi + 1e-9, 0.1, 7.0])
    w = g.wrap_angle(a)
    assert np.all(w > -np.pi) and np.all(w <= np.pi)
    assert np.allclose(np.cos(w), np.cos(a)) and np.allclose(np.sin(w), np.sin(a))
    assert g.wrap_angle(-np.pi) == np.pi


def test_first_camera_at_origin_facing_plus_y():
    rng = np.random.default_rng(0)
    c2w = random_c2w(rng, 8)
    w2b = g.bev_frame_of_video(c2w)
    c2b = g.poses_to_bev(w2b, c2w)
    assert np.allclose(c2b[0, :2, 3], 0.0, atol=1e-12)
    assert np.isclose(c2b[0, 2, 3], c2w[0, 2, 3])  # height is kept
    assert np.isclose(g.camera_yaw(c2b[0]), np.pi / 2)
    fwd = c2b[0, :3, 2]
    assert abs(fwd[0]) < 1e-12 and fwd[1] > 0
    # +x is the camera's right for a level camera
    level = g.look_at_c2w([1.0, 2.0, 1.5], [3.0, 5.0, 1.5])
    w2b = g.bev_from_first_camera(level)
    right_bev = (w2b[:3, :3] @ level[:3, 0])
    assert np.allclose(right_bev, [1, 0, 0])


def test_bev_skips_invalid_first_frames():
    rng = np.random.default_rng(1)
    c2w = random_c2w(rng, 4)
    c2w[0] = -np.inf
    assert g.first_valid_index(c2w) == 1
    assert np.allclose(g.bev_frame_of_video(c2w), g.bev_from_first_camera(c2w[1]))
    with pytest.raises(Loc3rError):
        g.bev_frame_of_video(np.full((2, 4, 4), -np.inf))


def test_world_bev_round_trip_points_and_poses():
    rng = np.random.default_rng(2)
    w2b = g.bev_from_first_camera(random_c2w(rng, 1)[0])
    pts = rng.normal(size=(50, 3)) * 4
    assert np.allclose(g.bev_to_world_points(w2b, g.world_to_bev_points(w2b, pts)), pts)
    xy, yaw = rng.normal(size=(50, 2)), rng.uniform(-np.pi, np.pi, 50)
    bxy, byaw = g.world_to_bev_pose(w2b, xy, yaw)
    xy2, yaw2 = g.bev_to_world_pose(w2b, bxy, byaw)
    assert np.allclose(xy2, xy) and np.allclose(g.angle_diff(yaw2, yaw), 0)
    # A yaw in the world equals the yaw of the rotated direction vector in BEV.
    d = np.stack([np.cos(yaw), np.sin(yaw), np.zeros_like(yaw)], -1)
    assert np.allclose(g.angle_diff(g.yaw_of_direction(d @ w2b[:3, :3].T), byaw), 0)


def test_camera_yaw_is_consistent_across_frames():
    rng = np.random.default_rng(3)
    c2w = random_c2w(rng, 6)
    w2b = g.bev_frame_of_video(c2w)
    _, byaw = g.world_to_bev_pose(w2b, c2w[:, :2, 3], g.camera_yaw(c2w))
    assert np.allclose(g.angle_diff(byaw, g.camera_yaw(g.poses_to_bev(w2b, c2w))), 0)


def test_sqa3d_quaternion_yaw():
    # The release's example: (x,y,z,w) = (0,0,0.0998,0.995) is a rotation of 0.2 rad about z; forward is -x.
    q = np.array([0.0, 0.0, 0.09983341664682724, 0.9950041652780182])
    assert np.isclose(g.sqa3d_rotvec_z(q), 0.2)
    assert np.isclose(g.sqa3d_quat_to_yaw(q), g.wrap_angle(0.2 + np.pi))
    yaws = np.linspace(-np.pi + 1e-6, np.pi, 37)
    assert np.allclose(g.angle_diff(g.sqa3d_quat_to_yaw(g.yaw_to_sqa3d_quat(yaws)), yaws), 0, atol=1e-9)


def test_unproject_then_project():
    rng = np.random.default_rng(4)
    K = np.array([[50.0, 0, 31.5], [0, 52.0, 23.5], [0, 0, 1]])
    depth = rng.uniform(0.5, 5, (48, 64))
    pts = g.unproject_depth(depth, K)
    uv, z = g.project_points(pts, K)
    v, u = np.mgrid[:48, :64]
    assert np.allclose(uv[..., 0], u) and np.allclose(uv[..., 1], v) and np.allclose(z, depth)


def brute_force_layout(depth, K, c2b, grid, min_frac, extent=1.0):
    """Pixel by pixel: a pixel starting at (v, u) belongs to the cell whose row / column boundaries
    k * H * extent / gh (k * W * extent / gw) it has passed, and to none beyond H * extent (W * extent)."""
    T, H, W = depth.shape
    gh, gw = grid
    xy = np.zeros((T, gh * gw, 2))
    valid = np.zeros((T, gh * gw), bool)
    for t in range(T):
        if not np.all(np.isfinite(c2b[t])):
            continue
        cells = {}
        for v in range(H):
            for u in range(W):
                if v >= H * extent or u >= W * extent:
                    continue
                row = sum(v >= k * H * extent / gh for k in range(1, gh))
                col = sum(u >= k * W * extent / gw for k in range(1, gw))
                cid = row * gw + col
                cells.setdefault(cid, [0, []])
                cells[cid][0] += 1
                d = depth[t, v, u]
                if d > 0 and np.isfinite(d):
                    pc = np.array([(u - K[0, 2]) * d / K[0, 0], (v - K[1, 2]) * d / K[1, 1], d, 1.0])
                    cells[cid][1].append((c2b[t] @ pc)[:2])
        for cid, (n, pts) in cells.items():
            if len(pts) >= max(1, np.ceil(min_frac * n)):
                valid[t, cid] = True
                xy[t, cid] = np.median(np.array(pts), axis=0)
    return xy, valid


@pytest.mark.parametrize("shape,grid,extent", [((3, 12, 16), (3, 4), 1.0), ((2, 13, 17), (4, 5), 1.0),
                                               ((2, 24, 32), (3, 4), 0.8)])
def test_layout_targets_equal_brute_force(shape, grid, extent):
    rng = np.random.default_rng(5)
    T, H, W = shape
    depth = rng.uniform(0.3, 6, shape)
    depth[rng.random(shape) < 0.3] = 0.0  # holes
    depth[0, : H // 2, : W // 2] = 0.0  # a fully invalid corner
    K = np.array([[20.0, 0, W / 2], [0, 20.0, H / 2], [0, 0, 1]])
    c2w = random_c2w(rng, T)
    c2b = g.poses_to_bev(g.bev_frame_of_video(c2w), c2w)
    c2b[-1] = -np.inf  # lost tracking
    out = g.layout_targets(depth, K, c2b, grid, min_valid_frac=0.5, extent=extent)
    ref_xy, ref_valid = brute_force_layout(depth, K, c2b, grid, 0.5, extent)
    assert np.array_equal(out.valid, ref_valid)
    assert np.allclose(out.xy, ref_xy, atol=1e-5)
    assert not out.valid[-1].any() and out.n_invalid_frames == 1
    assert out.valid.any() and not out.valid.all()
    seen = (np.arange(H)[:, None] < H * extent) & (np.arange(W)[None] < W * extent)
    assert out.n_invalid_pixels == int(((depth[:-1] == 0) & seen).sum())
    assert np.all(out.xy[~out.valid] == 0)


def test_msqa_aligned_pose_to_raw_by_hand():
    """axisAlignment = a 90 degree turn about z, then a shift by (1, 2, 0): aligned (1, 2, 0) is the raw origin,
    and an aligned facing of +y is raw +x (yaw 0)."""
    A = g.make_transform(g.rot_z(np.pi / 2), [1.0, 2.0, 0.0])
    xy, yaw = g.aligned_to_raw_pose(A, [1.0, 2.0, 0.5], [0.0, 1.0])
    assert np.allclose(xy, [0, 0], atol=1e-12) and abs(yaw) < 1e-12
    xy, yaw = g.aligned_to_raw_pose(A, [1.0, 3.0, 0.0], [-1.0, 0.0])  # aligned +y of the origin, facing -x
    assert np.allclose(xy, [1.0, 0.0], atol=1e-12) and np.isclose(yaw, np.pi / 2)  # raw +y


def test_ground_path_of_first_camera_is_right_and_forward_of_the_first_camera():
    """A camera that moves 0.5 m along the first camera's right (+x) and 1 m along its forward (+z), whatever the
    first camera's pose in the world: the path seen from above in the first camera's frame is (0.5, 1.0)."""
    rng = np.random.default_rng(0)
    tilt = np.array([[1, 0, 0], [0, np.cos(-1.9), -np.sin(-1.9)], [0, np.sin(-1.9), np.cos(-1.9)]])
    first = g.make_transform(g.rot_z(0.7) @ tilt, rng.normal(size=3))
    moved = first @ g.make_transform(np.eye(3), [0.5, 0.3, 1.0])  # 0.3 m down (camera +y) is dropped
    np.testing.assert_allclose(g.ground_path_of_first_camera(np.stack([first, moved])), [[0, 0], [0.5, 1.0]],
                               atol=1e-9)
