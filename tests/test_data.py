"""Readers of the real formats, on small files written here by hand (not by our synthetic writer)."""

import json
import struct
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from loc3r import geometry
from loc3r.data import cache as cache_mod
from loc3r.data.dataset import SituatedQADataset
from loc3r.data.scannet import ScanNetScene, read_ply_vertices, sample_frame_ids
from loc3r.data.sqa3d import read_sqa3d
from loc3r.errors import Loc3rError

# Exactly the SQA3D release layout and field order (cf. the release's dataset documentation).
QUESTIONS = """{"info": {"description": "This is v1.0 of the SQA3D dataset."}, "license": {"url": "http://creativecommons.org/licenses/by/4.0/"},
 "data_type": "scannet", "data_subtype": "test_scannetv2", "task_type": "Open-Ended",
 "questions": [
  {"alternative_situation": ["I stand looking out of the window in thought and a radiator is right in front of me.",
                             "I am looking outside through the window behind the desk."],
   "question": "What color is the desk to my right?", "question_id": 220602000000,
   "scene_id": "scene0380_00", "situation": "I am facing a window and there is a desk on my right and a chair behind me."},
  {"alternative_situation": [], "question": "How many chairs are there?", "question_id": 220602000001,
   "scene_id": "scene0380_00", "situation": "I am standing in the room"}
 ]}"""
ANNOTATIONS = """{"info": {"description": "This is v1.0 of the SQA3D dataset."}, "license": {"url": "http://creativecommons.org/licenses/by/4.0/"},
 "data_type": "scannet", "data_subtype": "test_scannetv2",
 "annotations": [
  {"answer_type": "number", "answers": [{"answer": "two", "answer_confidence": "yes", "answer_id": 1}],
   "position": {"x": 0.3, "y": 0.4, "z": 0}, "question_id": 220602000001, "question_type": "N/A",
   "rotation": {"_w": 1, "_x": 0, "_y": 0, "_z": 0}, "scene_id": "scene0380_00"},
  {"answer_type": "other", "answers": [{"answer": "brown", "answer_confidence": "yes", "answer_id": 1}],
   "position": {"x": 1.0, "y": -1.0, "z": 0}, "question_id": 220602000000, "question_type": "N/A",
   "rotation": {"_w": 1.0, "_x": 0, "_y": 0, "_z": 0}, "scene_id": "scene0380_00"}
 ]}"""

SCENE = "scene0380_00"
K = np.array([[30.0, 0, 15.5], [0, 30.0, 11.5], [0, 0, 1]])


def write_ply(path, vertices):
    header = ("ply\nformat binary_little_endian 1.0\ncomment made by hand\n"
              f"element vertex {len(vertices)}\nproperty float x\nproperty float y\nproperty float z\n"
              "property uchar red\nproperty uchar green\nproperty uchar blue\nproperty uchar alpha\n"
              "element face 0\nproperty list uchar int vertex_indices\nend_header\n")
    body = b"".join(struct.pack("<fffBBBB", *v, 200, 100, 50, 255) for v in vertices)
    path.write_bytes(header.encode() + body)


@pytest.fixture()
def data_root(tmp_path):
    """A 6-frame scan (frame 0 lost tracking) with a mesh, and the SQA3D test split."""
    scan = tmp_path / "scans" / SCENE
    for sub in ("color", "depth", "pose", "intrinsic"):
        (scan / sub).mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(6):
        Image.fromarray(rng.integers(0, 255, (24, 32, 3), dtype=np.uint8)).save(scan / "color" / f"{i}.jpg")
        depth_mm = rng.integers(500, 4000, (24, 32)).astype(np.uint16)
        depth_mm[:3] = 0
        Image.fromarray(depth_mm).save(scan / "depth" / f"{i}.png")
        # Camera i at (0.2 i, 0, 1.5) looking along world +x.
        c2w = geometry.look_at_c2w([0.2 * i, 0, 1.5], [0.2 * i + 1, 0, 1.5])
        if i == 0:
            c2w = np.full((4, 4), -np.inf)
        np.savetxt(scan / "pose" / f"{i}.txt", c2w)
    K4 = np.eye(4)
    K4[:3, :3] = K
    np.savetxt(scan / "intrinsic" / "intrinsic_color.txt", K4)
    np.savetxt(scan / "intrinsic" / "intrinsic_depth.txt", K4)
    align = geometry.make_transform(geometry.rot_z(0.3), [1.0, -2.0, 0.0])
    (scan / f"{SCENE}.txt").write_text("colorHeight = 24\naxisAlignment = " + " ".join(f"{v:.9f}" for v in align.ravel()) + "\n")
    write_ply(scan / f"{SCENE}_vh_clean_2.ply", [(-1.0, 0.0, 0.0), (3.0, 2.0, 2.5), (0.5, 1.0, 1.0)])
    base = tmp_path / "sqa_task" / "balanced"
    base.mkdir(parents=True)
    (base / "v1_balanced_questions_test_scannetv2.json").write_text(QUESTIONS)
    (base / "v1_balanced_sqa_annotations_test_scannetv2.json").write_text(ANNOTATIONS)
    return tmp_path


def test_scannet_reader(data_root):
    scene = ScanNetScene(data_root, SCENE)
    assert scene.frame_ids == list(range(6))
    assert scene.valid_frame_ids == [1, 2, 3, 4, 5] and scene.n_invalid_poses == 1
    assert np.allclose(scene.intrinsic_depth, K)
    assert scene.read_color(2).shape == (24, 32, 3)
    depth = scene.read_depth_m(2)
    assert depth.dtype == np.float32 and depth[:3].max() == 0 and 0.5 <= depth[3:].min()
    assert np.allclose(scene.axis_alignment, geometry.make_transform(geometry.rot_z(0.3), [1, -2, 0]), atol=1e-8)
    assert np.allclose(scene.mesh_bbox_center, [1.0, 1.0, 1.25])
    assert list(sample_frame_ids(scene.valid_frame_ids, 3)) == [1, 3, 5]
    assert list(sample_frame_ids([4, 7], 4)) == [4, 4, 7, 7]


def test_ascii_ply(tmp_path):
    p = tmp_path / "m.ply"
    p.write_text("ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\n"
                 "end_header\n0 0 0\n2 4 6\n")
    assert np.allclose(read_ply_vertices(p), [[0, 0, 0], [2, 4, 6]])


def test_sqa3d_reader_joins_by_question_id(data_root):
    recs = read_sqa3d(data_root, "test")
    assert [r.question_id for r in recs] == [220602000000, 220602000001]
    r = recs[0]
    assert r.answers == ["brown"] and r.situation.startswith("I am facing a window")
    assert len(r.alternative_situation) == 2 and r.answer_type == "other"
    assert np.allclose(r.position, [1.0, -1.0, 0.0]) and np.allclose(r.rotation_xyzw, [0, 0, 0, 1])


def test_situation_pose_in_bev_by_hand(data_root):
    """First valid camera at (0.2, 0) facing world +x: BEV +y = world +x, BEV +x = world -y.
    Raw position = (1, -1) + mesh centre (1, 1) = (2, 0) -> BEV (0, 1.8). Identity rotation: the SQA3D
    agent faces world -x = BEV -y -> yaw -pi/2."""
    ds = SituatedQADataset(data_root, "test", num_frames=3, image_size=16, grid_hw=(2, 2))
    s = ds[0]
    assert s.has_situation
    assert np.allclose(s.position_xy, [0.0, 1.8], atol=1e-6)
    assert np.isclose(s.yaw_rad, -np.pi / 2)
    assert list(s.frame_ids) == [1, 3, 5]
    assert np.allclose(s.camera_poses_bev[0, :2, 3], 0, atol=1e-6)
    assert np.allclose(s.camera_poses_bev[2, :2, 3], [0, 0.8], atol=1e-6)
    assert s.frames.shape == (3, 16, 16, 3) and s.layout_xy.shape == (3, 4, 2)
    # The top rows have no depth: the top tokens still have enough valid pixels; targets lie ahead (+y).
    assert s.layout_valid.all() and (s.layout_xy[..., 1] > 0).all()
    q = ds[1]
    assert not q.has_situation and q.situation == "I am standing in the room." and q.answer == "two"


def test_cache_is_built_once_and_reused(data_root, monkeypatch):
    ds = SituatedQADataset(data_root, "test", num_frames=3, image_size=16, grid_hw=(2, 2))
    first = ds[0]
    files = list((data_root / "cache").glob("*.npz"))
    assert len(files) == 1 and not list((data_root / "cache").glob(".*"))
    monkeypatch.setattr(cache_mod, "build_scene_cache", lambda *a, **k: pytest.fail("cache rebuilt"))
    again = SituatedQADataset(data_root, "test", num_frames=3, image_size=16, grid_hw=(2, 2))[0]
    assert np.array_equal(first.frames, again.frames) and np.array_equal(first.layout_xy, again.layout_xy)


def test_corrupt_cache_is_rebuilt(data_root):
    SituatedQADataset(data_root, "test", num_frames=3, image_size=16, grid_hw=(2, 2))[0]
    path = next((data_root / "cache").glob("*.npz"))
    path.write_bytes(b"garbage")
    s = SituatedQADataset(data_root, "test", num_frames=3, image_size=16, grid_hw=(2, 2))[0]
    assert s.frames.shape == (3, 16, 16, 3) and cache_mod.load_scene_cache(path) is not None


@pytest.mark.parametrize("breakage,message", [
    (lambda r: (r / "scans" / SCENE / "color" / "3.jpg").write_bytes(b"not a jpeg"), "3.jpg: corrupt"),
    (lambda r: (r / "scans" / SCENE / "depth" / "5.png").unlink(), "5.png: file not found"),
    (lambda r: (r / "scans" / SCENE / "pose" / "3.txt").write_text("1 2 3"), "3.txt: expected 4x4"),
    (lambda r: (r / "scans" / SCENE / "pose" / "2.txt").write_text("a b c d"), "2.txt: not a matrix"),
    (lambda r: (r / "scans" / SCENE / "intrinsic" / "intrinsic_depth.txt").write_text(
        "0 0 8 0\n0 0 8 0\n0 0 1 0\n0 0 0 1\n"), "intrinsic_depth.txt: invalid intrinsics"),
    (lambda r: (r / "scans" / SCENE / "intrinsic" / "intrinsic_depth.txt").write_text(
        "20 0 nan 0\n0 20 8 0\n0 0 1 0\n0 0 0 1\n"), "intrinsic_depth.txt: invalid intrinsics"),
])
def test_bad_scan_files_fail_clearly_and_leave_no_cache(data_root, breakage, message):
    breakage(data_root)
    ds = SituatedQADataset(data_root, "test", num_frames=3, image_size=16, grid_hw=(2, 2))
    with pytest.raises(Loc3rError, match=message):
        ds[0]
    assert not (data_root / "cache").exists() or not any((data_root / "cache").iterdir())


def test_bad_sqa3d_files_fail_clearly(data_root):
    base = data_root / "sqa_task" / "balanced"
    q = json.loads(QUESTIONS)
    del q["questions"][1]["situation"]
    (base / "v1_balanced_questions_test_scannetv2.json").write_text(json.dumps(q))
    with pytest.raises(Loc3rError, match=r"questions_test_scannetv2.json: entry 1 is missing field 'situation'"):
        read_sqa3d(data_root, "test")
    a = json.loads(ANNOTATIONS)
    a["annotations"][0]["position"].pop("y")
    (base / "v1_balanced_questions_test_scannetv2.json").write_text(QUESTIONS)
    (base / "v1_balanced_sqa_annotations_test_scannetv2.json").write_text(json.dumps(a))
    with pytest.raises(Loc3rError, match=r"entry 0 field position.y is missing"):
        read_sqa3d(data_root, "test")
    (base / "v1_balanced_sqa_annotations_test_scannetv2.json").write_text("{not json")
    with pytest.raises(Loc3rError, match="not valid JSON"):
        read_sqa3d(data_root, "test")
    with pytest.raises(Loc3rError, match="val_scannetv2.json: file not found"):
        read_sqa3d(data_root, "val")


def test_unknown_scene(data_root):
    with pytest.raises(Loc3rError, match="unknown scene id 'scene9999_00'"):
        ScanNetScene(data_root, "scene9999_00")


def test_a_scene_without_valid_poses_is_named(data_root):
    for f in (data_root / "scans" / SCENE / "pose").glob("*.txt"):
        f.write_text("\n".join(["-inf -inf -inf -inf"] * 4) + "\n")
    with pytest.raises(Loc3rError, match=f"{SCENE}/pose: no frame with a valid pose"):
        SituatedQADataset(data_root, "test", num_frames=3, image_size=16, grid_hw=(2, 2))[0]


def test_a_cache_follows_its_scan_when_the_files_change(data_root):
    """A re-exported scan (new poses, new frames) gives a new cache, not the old one under the same name."""
    import os

    ds = lambda: SituatedQADataset(data_root, "test", num_frames=3, image_size=16, grid_hw=(2, 2))  # noqa: E731
    first = ds()[0]
    pose = data_root / "scans" / SCENE / "pose" / f"{first.frame_ids[1]}.txt"
    c2w = np.loadtxt(pose)
    c2w[0, 3] += 0.5  # the camera moved 0.5 m in x
    pose.write_text("\n".join(" ".join(f"{v:.6f}" for v in row) for row in c2w) + "\n")
    st = pose.stat()
    os.utime(pose, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # a later modification time, whatever the clock
    again = ds()[0]
    assert not np.allclose(again.camera_poses_bev, first.camera_poses_bev)
    assert len(list((data_root / "cache").glob("*.npz"))) == 1  # rebuilt in place
    assert np.array_equal(ds()[0].camera_poses_bev, again.camera_poses_bev)  # and reused while the scan stays


def test_the_real_sqa3d_test_split_parses_whole(tmp_path):
    """The released test split (../shared/data/sqa3d, byte for byte as published): every question parses and joins
    its annotation, every quaternion converts to a yaw that converts back to the same rotation."""
    import shutil

    from loc3r import geometry
    from loc3r.data.sqa3d import read_sqa3d

    beside = Path(__file__).resolve().parents[2] / "shared" / "data" / "sqa3d"  # ../shared beside the repository
    release = next((p for p in (beside, Path("/work/shared/data/sqa3d")) if p.is_dir()), beside)
    assert release.is_dir(), f"the SQA3D test split is expected at {beside}"
    balanced = tmp_path / "sqa_task" / "balanced"
    balanced.mkdir(parents=True)
    for f in release.glob("*.json"):
        shutil.copy(f, balanced / f.name)
    records = read_sqa3d(tmp_path, "test")
    assert len(records) == 3519 and len({r.scene_id for r in records}) == 67
    assert len({(r.scene_id, r.situation) for r in records}) == 719
    for r in records:
        yaw = geometry.sqa3d_quat_to_yaw(r.rotation_xyzw)
        assert np.isfinite(yaw)
        q = geometry.yaw_to_sqa3d_quat(yaw)  # a yaw-only rotation about z: the same facing after the round trip
        assert abs(geometry.angle_diff(geometry.sqa3d_quat_to_yaw(q), yaw)) < 1e-6
