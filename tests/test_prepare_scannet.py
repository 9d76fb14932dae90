"""ScanNet .sens files (loc3r/data/sens.py) and `loc3r prepare-scannet`: the reader against the writer, the export
against synth's own scans/, the frames --frames / --every take, resuming a killed run, and bad files."""

from __future__ import annotations

import filecmp
import os
import struct
from pathlib import Path

import numpy as np
import pytest

from loc3r.cli import main as cli_main
from loc3r.data import sens
from loc3r.data.scannet import ScanNetScene, read_matrix_txt
from loc3r.errors import Loc3rError
from loc3r.synth import formats
from loc3r.synth.writer import generate

W, H = 8, 6  # tiny frames


def _header(**changes) -> sens.SensHeader:
    K = np.array([[5, 0, 4, 0], [0, 5, 3, 0], [0, 0, 1, 0], [0, 0, 0, 1]], np.float32)
    fields = {"sensor_name": "test", "intrinsic_color": K, "extrinsic_color": np.eye(4), "intrinsic_depth": K,
              "extrinsic_depth": np.eye(4), "color_compression": "jpeg", "depth_compression": "zlib_ushort",
              "color_width": W, "color_height": H, "depth_width": W, "depth_height": H}
    return sens.SensHeader(**(fields | changes))


def make_sens(path: Path, n_frames: int, invalid=(), seed: int = 0) -> list[tuple[np.ndarray, bytes, np.ndarray]]:
    """A .sens of n_frames random frames (poses with -inf at the `invalid` indices); returns (pose, jpeg, depth_mm)."""
    rng = np.random.default_rng(seed)
    frames = []
    path.parent.mkdir(parents=True, exist_ok=True)
    with sens.writing(path, _header()) as writer:
        for i in range(n_frames):
            pose = np.eye(4)
            pose[:3, 3] = np.round(rng.uniform(-3, 3, 3), 6)
            if i in invalid:
                pose[:] = -np.inf
            jpeg = formats.jpeg_bytes(rng.integers(0, 256, (H, W, 3), dtype=np.uint8))
            depth = rng.integers(0, 5000, (H, W)).astype(np.uint16)
            writer.add(pose, jpeg, sens.compress_depth(depth), 1000 * i, 1000 * i + 1)
            frames.append((pose, jpeg, depth))
    return frames


def prepare(*argv) -> int:
    return cli_main(["prepare-scannet", *map(str, argv)])


def tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


# ---------------------------------------------------------------------------------------------------------
# The .sens reader and writer
# ---------------------------------------------------------------------------------------------------------

def test_writer_then_reader_round_trip(tmp_path):
    path = tmp_path / "a.sens"
    frames = make_sens(path, 5, invalid={2})
    with sens.SensReader(path) as reader:
        h = reader.header
        assert (h.sensor_name, h.color_compression, h.depth_compression, h.num_frames) == ("test", "jpeg",
                                                                                             "zlib_ushort", 5)
        assert (h.color_width, h.color_height, h.depth_width, h.depth_height, h.depth_shift) == (W, H, W, H, 1000.0)
        np.testing.assert_array_equal(h.intrinsic_color, _header().intrinsic_color)
        headers = list(reader.frame_headers())
        assert [f.index for f in headers] == list(range(5))
        assert [(f.timestamp_color, f.timestamp_depth) for f in headers] == [(1000 * i, 1000 * i + 1) for i in range(5)]
        for f, (pose, jpeg, depth) in zip(headers, frames):
            np.testing.assert_array_equal(f.camera_to_world, pose.astype(np.float32))
        read = list(reader.frames([4, 1]))  # file order, the others skipped
        assert [f.index for f, _, _ in read] == [1, 4]
        for f, color, depth in read:
            assert color == frames[f.index][1]
            np.testing.assert_array_equal(reader.depth_mm(f, depth), frames[f.index][2])
    # the file is exactly the documented layout: header, 5 frames, an empty IMU section
    name = len("test")
    header_bytes = 4 + 8 + name + 4 * 64 + 4 * 2 + 4 * 4 + 4 + 8
    assert path.stat().st_size == header_bytes + sum(96 + len(j) + f.depth_bytes
                                                     for f, (_, j, _) in zip(headers, frames)) + 8


def _patch(path: Path, offset: int, fmt: str, value) -> None:
    data = bytearray(path.read_bytes())
    struct.pack_into(fmt, data, offset, value)
    path.write_bytes(bytes(data))


CAMERA_OFFSET = 4 + 8 + len("test") + 4 * 64  # colour compression, then depth compression, ...


@pytest.mark.parametrize("change, message", [
    (lambda p: _patch(p, 0, "<I", 3), "not a ScanNet .sens file of version 4"),
    (lambda p: _patch(p, CAMERA_OFFSET, "<i", 7), "unknown colour compression type 7"),
    (lambda p: _patch(p, CAMERA_OFFSET + 4, "<i", -1), "unknown depth compression type -1"),
    (lambda p: p.write_bytes(p.read_bytes()[:100]), "truncated"),
    (lambda p: p.write_bytes(p.read_bytes()[:-200]), "run past the end of the file"),
    (lambda p: _patch(p, CAMERA_OFFSET + 28, "<Q", 10 ** 9), "sizes do not add up"),
    (lambda p: p.write_bytes(p.read_bytes() + b"xyz"), "not the IMU section"),
    (lambda p: p.write_bytes(b"\xff\xd8\xff\xe0 a JPEG, not a .sens file"), "not a ScanNet .sens file"),
])
def test_bad_sens_files_are_one_line_errors_naming_the_file(tmp_path, change, message):
    path = tmp_path / "bad.sens"
    make_sens(path, 3)
    change(path)
    with pytest.raises(Loc3rError) as e, sens.SensReader(path) as reader:
        list(reader.frame_headers())
    assert str(path) in str(e.value) and message in str(e.value) and "\n" not in str(e.value)


def test_a_frames_byte_count_past_the_end_of_the_file(tmp_path):
    path = tmp_path / "a.sens"
    make_sens(path, 3)
    with sens.SensReader(path) as reader:
        second = list(reader.frame_headers())[1]
    _patch(path, second.color_offset - 16, "<Q", 1 << 40)  # its colour byte count
    with (pytest.raises(Loc3rError, match="frame 1's colour and depth bytes .* run past the end of the file"),
          sens.SensReader(path) as reader):
        list(reader.frame_headers())


# ---------------------------------------------------------------------------------------------------------
# prepare-scannet
# ---------------------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def synth_root(tmp_path_factory):
    """Two synthetic rooms of 6 frames of 32 px, written directly and as ScanNet downloads them."""
    root = tmp_path_factory.mktemp("synth_sens")
    generate(root, n_scenes=2, seed=5, frames=6, size=32, with_sens=True)
    return root


def test_export_of_synths_sens_equals_synths_scans(synth_root, tmp_path):
    raw = synth_root / "scannet_raw"
    assert sorted(p.name for p in raw.iterdir()) == ["scene0000_00", "scene0001_00"]
    assert prepare("--scans", raw, "--out", tmp_path) == 0
    for scene_id in ("scene0000_00", "scene0001_00"):
        ours = tree(tmp_path / "scans" / scene_id)
        assert ours.pop(".loc3r-prepare.json")
        # JPEG bytes as synth encodes them, depth PNGs and poses byte for byte, intrinsics, meta file and mesh
        assert ours == tree(synth_root / "scans" / scene_id)


def test_export_in_parallel_equals_one_process(synth_root, tmp_path):
    assert prepare("--scans", synth_root / "scannet_raw", "--out", tmp_path / "one", "--every", "2") == 0
    assert prepare("--scans", synth_root / "scannet_raw", "--out", tmp_path / "two", "--every", "2",
                   "--workers", "2") == 0
    assert tree(tmp_path / "one") == tree(tmp_path / "two")


@pytest.mark.parametrize("num_frames", [3, 4, 9])
def test_frames_exports_what_training_samples(tmp_path, num_frames):
    scans = tmp_path / "raw"
    make_sens(scans / "scene0001_00" / "scene0001_00.sens", 7, invalid={0, 3})
    assert prepare("--scans", scans, "--out", tmp_path / "all") == 0
    assert prepare("--scans", scans, "--out", tmp_path / "some", "--frames", num_frames) == 0
    full, some = ScanNetScene(tmp_path / "all", "scene0001_00"), ScanNetScene(tmp_path / "some", "scene0001_00")
    assert full.frame_ids == list(range(7)) and full.valid_frame_ids == [1, 2, 4, 5, 6]
    taken = full.sampled_frame_ids(num_frames)
    assert some.frame_ids == sorted(set(taken.tolist()))  # exactly those frames, nothing else
    np.testing.assert_array_equal(some.sampled_frame_ids(num_frames), taken)  # and training samples them again
    assert np.isinf(full.read_pose(3)).all()  # the lost-tracking pose is written as it is
    assert (tmp_path / "all" / "scans" / "scene0001_00" / "pose" / "0.txt").read_text().startswith("-inf -inf")


def test_every_kth_frame(tmp_path):
    scans = tmp_path / "raw"
    frames = make_sens(scans / "scene0002_00" / "scene0002_00.sens", 8)
    assert prepare("--scans", scans, "--out", tmp_path / "out", "--every", 3) == 0
    scene = ScanNetScene(tmp_path / "out", "scene0002_00")
    assert scene.frame_ids == [0, 3, 6]
    for i in scene.frame_ids:
        assert (scene.dir / "color" / f"{i}.jpg").read_bytes() == frames[i][1]
        np.testing.assert_array_equal(np.asarray(scene.read_depth_m(i) * 1000).round(), frames[i][2])
        np.testing.assert_allclose(read_matrix_txt(scene.dir / "pose" / f"{i}.txt"), frames[i][0], atol=1e-6)


def test_already_exported_scenes_are_skipped_and_other_options_refused(synth_root, tmp_path, capsys):
    raw = synth_root / "scannet_raw"
    assert prepare("--scans", raw, "--out", tmp_path) == 0
    color = tmp_path / "scans" / "scene0000_00" / "color" / "0.jpg"
    before = color.stat().st_mtime_ns
    capsys.readouterr()
    assert prepare("--scans", raw, "--out", tmp_path) == 0
    assert "skipped 2 already exported" in capsys.readouterr().out and color.stat().st_mtime_ns == before
    assert prepare("--scans", raw, "--out", tmp_path, "--frames", "2") == 2
    captured = capsys.readouterr()
    assert "exported with other options (every frame, now --frames 2)" in captured.out
    assert captured.err.count("\n") == 1 and "2 of 2 scenes failed" in captured.err
    assert prepare("--scans", raw, "--out", tmp_path, "--frames", "2", "--overwrite") == 0
    assert ScanNetScene(tmp_path, "scene0000_00").frame_ids == [0, 5]


def test_a_changed_sens_file_is_exported_again(tmp_path):
    sens_path = tmp_path / "raw" / "scene0003_00" / "scene0003_00.sens"
    make_sens(sens_path, 3, seed=1)
    assert prepare("--scans", tmp_path / "raw", "--out", tmp_path / "out") == 0
    frames = make_sens(sens_path, 4, seed=2)
    os.utime(sens_path, ns=(1, 1))  # another modification time, whatever the clock's resolution
    assert prepare("--scans", tmp_path / "raw", "--out", tmp_path / "out") == 0
    scene = ScanNetScene(tmp_path / "out", "scene0003_00")
    assert scene.frame_ids == [0, 1, 2, 3] and (scene.dir / "color" / "3.jpg").read_bytes() == frames[3][1]


def test_a_killed_export_is_resumed(synth_root, tmp_path):
    raw = synth_root / "scannet_raw"
    assert prepare("--scans", raw, "--out", tmp_path / "clean") == 0
    # what a kill leaves: one scene done, the other half-written in its temporary, an old copy mid-swap
    out = tmp_path / "killed"
    assert prepare("--scans", raw, "--out", out, "--scenes", "scene0000_00") == 0
    half = out / "scans" / ".scene0001_00.x1y2z3.tmp"
    (half / "color").mkdir(parents=True)
    (half / "color" / "0.jpg").write_bytes(b"half a jpeg")
    (out / "scans" / ".scene0000_00.old").mkdir()
    assert prepare("--scans", raw, "--out", out) == 0
    assert tree(out) == tree(tmp_path / "clean")  # temporaries gone, nothing else differs


def test_a_truncated_sens_among_good_ones(synth_root, tmp_path, capsys):
    scans = tmp_path / "raw"
    for scene_id in ("scene0000_00", "scene0001_00"):
        (scans / scene_id).mkdir(parents=True)
        for f in (synth_root / "scannet_raw" / scene_id).iterdir():
            (scans / scene_id / f.name).write_bytes(f.read_bytes())
    bad = scans / "scene0000_00" / "scene0000_00.sens"
    bad.write_bytes(bad.read_bytes()[: bad.stat().st_size // 2])
    make_sens(scans / "scene0005_00" / "scene0005_00.sens", 3)  # no .txt, no mesh beside it
    assert prepare("--scans", scans, "--out", tmp_path / "out") == 2
    captured = capsys.readouterr()
    failed = [line for line in captured.out.splitlines() if "FAILED" in line]
    assert len(failed) == 1 and str(bad) in failed[0] and "truncated" in failed[0]
    assert "exported 2 scenes" in captured.out and "scene0005_00: no scene0005_00.txt or" in captured.out
    assert captured.err.strip() == "loc3r: error: 1 of 3 scenes failed: scene0000_00"
    assert sorted(p.name for p in (tmp_path / "out" / "scans").iterdir()) == ["scene0001_00", "scene0005_00"]
    assert filecmp.cmp(tmp_path / "out" / "scans" / "scene0001_00" / "color" / "3.jpg",
                       synth_root / "scans" / "scene0001_00" / "color" / "3.jpg", shallow=False)


def test_bad_arguments_and_names(tmp_path, capsys):
    make_sens(tmp_path / "raw" / "scene0001_00" / "scene0001_00.sens", 2)
    for argv, message in [(["--frames", "2", "--every", "2"], "--frames and --every exclude each other"),
                          (["--every", "0"], "--every must be >= 1"),
                          (["--scenes", "../etc"], "is not a scene name"),
                          (["--scenes", "scene0009_00"], "scene0009_00.sens: file not found")]:
        assert prepare("--scans", tmp_path / "raw", "--out", tmp_path / "out", *argv) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert not (tmp_path / "out" / "scans").exists()
    os.rename(tmp_path / "raw" / "scene0001_00", tmp_path / "raw" / "x")
    assert prepare("--scans", tmp_path / "raw", "--out", tmp_path / "out") == 2
    assert "no <scene_id>/<scene_id>.sens files" in capsys.readouterr().err
