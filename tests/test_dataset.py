"""SituatedQADataset at scale: bounded memory for the scene caches, cache building shared by ranks."""

import numpy as np

from loc3r.data.dataset import SituatedQADataset, cache_nbytes


def dataset(root, cache_dir, **kwargs) -> SituatedQADataset:
    return SituatedQADataset(root, "train", num_frames=3, image_size=64, grid_hw=(4, 4), cache_dir=cache_dir, **kwargs)


def test_scene_caches_in_memory_are_bounded_and_samples_unchanged(synth_data, tmp_path):
    unbounded = dataset(synth_data, tmp_path, max_cache_bytes=None)
    assert len(unbounded.scene_ids) >= 2
    one_scene = cache_nbytes(unbounded.scene(unbounded.scene_ids[0]))
    bounded = dataset(synth_data, tmp_path, max_cache_bytes=int(1.5 * one_scene))
    # visit every scene twice, alternating, so evicted scenes are read back from their files
    first_of = {}
    for i, r in enumerate(unbounded.records):
        first_of.setdefault(r.scene_id, i)
    order = list(first_of.values()) * 2
    for i in order:
        a, b = unbounded[i], bounded[i]
        assert np.array_equal(a.frames, b.frames) and np.array_equal(a.layout_xy, b.layout_xy)
        assert np.array_equal(a.position_xy, b.position_xy) and a.yaw_rad == b.yaw_rad
        assert bounded.scenes_in_memory == [unbounded.records[i].scene_id]  # only the latest one is kept
    assert sorted(unbounded.scenes_in_memory) == unbounded.scene_ids


def test_prepare_builds_only_this_ranks_share_of_the_caches(synth_data, tmp_path):
    ds = dataset(synth_data, tmp_path)
    ds.prepare(rank=1, world_size=2)
    built = sorted(p.name.split("_T")[0] for p in tmp_path.glob("*.npz"))
    assert built == ds.scene_ids[1::2]
    ds.prepare(rank=0, world_size=2)
    assert sorted(p.name.split("_T")[0] for p in tmp_path.glob("*.npz")) == ds.scene_ids


def test_loop_starts_are_videos_of_the_same_loop_in_their_own_bev_frames(synth_data, tmp_path):
    """--loop-starts K: question i on start s is item s * N + i, a video begun s/K of the way round the looped scan
    (wrapping), in the BEV frame of its own first camera; the speaker stands at the same place in the room."""
    from loc3r import geometry
    from loc3r.data.dataset import LoopStarts
    from loc3r.data.scannet import ScanNetScene, sample_frame_ids, uniform_indices

    assert sample_frame_ids(range(10, 34), 8).tolist() == (10 + uniform_indices(24, 8)).tolist()
    assert sample_frame_ids(range(10, 34), 8, 8).tolist() == [18, 21, 25, 28, 31, 10, 14, 17]  # 8 + 0, 3, 7, ...

    base = dataset(synth_data, tmp_path)
    looped = LoopStarts(base, 3)
    n = len(base)
    assert len(looped) == 3 * n and len(looped.records) == 3 * n
    i = next(k for k, r in enumerate(base.records) if looped[k].has_situation)
    scene = ScanNetScene(synth_data, base.records[i].scene_id)
    valid = scene.valid_frame_ids
    views = [looped[s * n + i] for s in range(3)]
    assert views[0].frame_ids.tolist() == base[i].frame_ids.tolist()  # start 0: the scan's own video
    room = []
    for s, v in enumerate(views):
        assert v.frame_ids[0] == valid[round(s * len(valid) / 3)]
        assert v.question == base[i].question and v.has_situation
        w2b = base.scene(v.scene_id, (s, 3)).world_to_bev
        c2w = np.linalg.inv(w2b) @ v.camera_poses_bev.astype(np.float64)
        np.testing.assert_allclose(c2w, scene.read_poses(v.frame_ids), atol=1e-4)
        first = v.camera_poses_bev[0]  # the BEV frame: origin under its first camera, +y that camera's heading
        assert np.allclose(first[:2, 3], 0, atol=1e-5) and abs(first[0, 2]) < 1e-5 and first[1, 2] > 0
        xy, yaw = geometry.bev_to_world_pose(w2b, v.position_xy, v.yaw_rad)  # back into the room
        room.append((*xy, np.cos(yaw), np.sin(yaw)))
    np.testing.assert_allclose(room, [room[0]] * 3, atol=1e-4)
    assert len({round(float(v.yaw_rad), 3) for v in views}) == 3  # three frames of reference
    keys = looped.video_keys
    assert len(set(keys)) == 3 * len(set(base.video_keys)) and keys[:n] == base.video_keys
