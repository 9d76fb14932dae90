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
