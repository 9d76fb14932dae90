"""The layouts peer projects publish, read where they are: a synthetic scan written as ScanNet's SensReader export is
rewritten here as Video-3D-LLM / LLaVA-3D posed images (with its axis alignment in ScanNet's meta file or in
EmbodiedScan / LLaVA-3D info files), and as VLM-3R's videos; every layout must give the samples of the export."""

import json
import os
import pickle
import shutil
from dataclasses import fields

import numpy as np
import pytest

from loc3r.constants import NO_SITUATION
from loc3r.data import embodiedscan
from loc3r.data.benchmarks import QARecord
from loc3r.data.cache import source_fingerprint
from loc3r.data.dataset import VideoQADataset
from loc3r.data.scannet import ScanNetScene, list_scenes
from loc3r.errors import Loc3rError
from loc3r.model.config import Loc3RConfig
from loc3r.model.processor import make_benchmark_dataset

SCENE = "scene0000_00"
ALIGNMENTS = ("scannet_meta", "embodiedscan_json", "embodiedscan_pkl", "llava3d_json")


@pytest.fixture(scope="module")
def sens_root(tmp_path_factory):
    """One synthetic room (train split) of 8 frames at 64 px, as ScanNet's SensReader export."""
    from loc3r.synth.writer import generate

    root = tmp_path_factory.mktemp("sens")
    generate(root, n_scenes=1, seed=5, frames=8, size=64)
    return root


def embodiedscan_entry(scan: ScanNetScene, arrays) -> dict:
    """The scan's entry of EmbodiedScan's info files (keys as embodiedscan_dataset.py reads them); `arrays`: the
    container of matrices (np.asarray for the pickles, lists for JSON)."""
    images = [{"img_path": f"scannet/posed_images/{SCENE}/{i:05d}.jpg",
               "depth_path": f"scannet/posed_images/{SCENE}/{i:05d}.png", "cam2global": arrays(scan.read_pose(i))}
              for i in scan.frame_ids]
    k4 = np.eye(4)
    k4[:3, :3] = scan.intrinsic_color
    return {"sample_idx": f"scannet/{SCENE}", "axis_align_matrix": arrays(scan.axis_alignment), "images": images,
            "cam2img": arrays(k4), "depth_cam2img": arrays(k4), "instances": []}


def write_posed_images(src, dst, alignment: str, frame_stride: int = 1):
    """dst: the scan of `src` as Video-3D-LLM's generate_image_scannet.py writes it (frame i as <05d>.jpg of
    i * frame_stride, as its --fast keeps the index of every tenth frame), ScanNet's scans/<id>/ holding only the
    mesh (and with alignment "scannet_meta" the meta file), the benchmark files copied. The axis alignment in
    ScanNet's meta file or in an info file of EmbodiedScan (JSON, pickle) or LLaVA-3D (JSON)."""
    scan = ScanNetScene(src, SCENE, layout="scannet")
    out = dst / "posed_images" / SCENE
    out.mkdir(parents=True)
    for i in scan.frame_ids:
        name = f"{i * frame_stride:05d}"
        shutil.copyfile(scan.files.color(i), out / f"{name}.jpg")
        shutil.copyfile(scan.files.depth(i), out / f"{name}.png")
        shutil.copyfile(scan.files.pose(i), out / f"{name}.txt")
    shutil.copyfile(scan.files.intrinsic_color, out / "intrinsic.txt")
    shutil.copyfile(scan.files.intrinsic_depth, out / "depth_intrinsic.txt")
    (dst / "scans" / SCENE).mkdir(parents=True)
    shutil.copyfile(scan.mesh_path, dst / "scans" / SCENE / scan.mesh_path.name)
    for folder in ("sqa_task", "msqa"):
        shutil.copytree(src / folder, dst / folder)
    infos = dst / "embodiedscan"
    other = {"sample_idx": "3rscan/0a4b8ef6-a83a-21f2-8672-dce34dd0d7ca", "axis_align_matrix": [[0.0] * 4] * 4}
    if alignment == "scannet_meta":
        shutil.copyfile(scan.files.meta, dst / "scans" / SCENE / scan.files.meta.name)
    elif alignment == "embodiedscan_json":
        infos.mkdir()
        data = {"metainfo": {"dataset": "embodiedscan"},
                "data_list": [other, embodiedscan_entry(scan, np.ndarray.tolist)]}
        (infos / "embodiedscan_infos_train.json").write_text(json.dumps(data))
    elif alignment == "embodiedscan_pkl":
        infos.mkdir()
        data = {"metainfo": {"dataset": "embodiedscan"}, "data_list": [embodiedscan_entry(scan, np.asarray)]}
        (infos / "embodiedscan_infos_val.pkl").write_bytes(pickle.dumps(data, protocol=4))
    elif alignment == "llava3d_json":
        infos.mkdir()
        frames = {f"scannet/posed_images/{SCENE}/{i:05d}.jpg": {"pose": scan.read_pose(i).tolist(),
                                                                "depth": f"scannet/posed_images/{SCENE}/{i:05d}.png"}
                  for i in scan.frame_ids}
        k4 = embodiedscan_entry(scan, np.ndarray.tolist)["cam2img"]
        data = {f"scannet/{SCENE}": {**frames, "axis_align_matrix": scan.axis_alignment.tolist(), "intrinsic": k4,
                                     "depth_intrinsic": k4}}
        (infos / "embodiedscan_infos_full.json").write_text(json.dumps(data))
    return dst


def samples(root, benchmark: str, cache_dir) -> list:
    """Every training sample of a benchmark's train split, through the processor's path (caches included)."""
    dataset = make_benchmark_dataset(Loc3RConfig.tiny(), benchmark, root, "train", cache_dir)
    return [dataset[i] for i in range(len(dataset))]


def assert_same_samples(a: list, b: list) -> None:
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
        for f in fields(x):
            u, v = getattr(x, f.name), getattr(y, f.name)
            if isinstance(u, np.ndarray):
                assert u.dtype == v.dtype and np.array_equal(u, v, equal_nan=u.dtype.kind == "f"), f.name
            else:
                assert u == v, f.name


@pytest.mark.parametrize("alignment", ALIGNMENTS)
def test_posed_images_give_the_samples_of_the_sensreader_export(sens_root, tmp_path, alignment):
    """Frames, BEV poses, layout targets (from depth and intrinsics), situations' poses (SQA3D: the mesh's centre;
    MSQA: the axis alignment) and frame times: array for array the export's."""
    root = write_posed_images(sens_root, tmp_path / "posed", alignment)
    scene = ScanNetScene(root, SCENE)
    assert scene.layout == "posed_images" and scene.dir == root / "posed_images" / SCENE
    assert np.array_equal(scene.axis_alignment, ScanNetScene(sens_root, SCENE).axis_alignment)
    for benchmark in ("sqa3d", "msqa"):
        ours = samples(root, benchmark, tmp_path / "cache_posed")
        theirs = samples(sens_root, benchmark, tmp_path / "cache_sens")
        assert_same_samples(ours, theirs)
        assert any(s.has_situation for s in ours) and any(s.layout_valid.any() for s in ours)


def test_posed_image_names_keep_the_frame_index(sens_root, tmp_path):
    """--fast keeps every tenth frame under its own index: the frame ids (and so the frame times) are those."""
    root = write_posed_images(sens_root, tmp_path / "posed", "scannet_meta", frame_stride=10)
    scene, export = ScanNetScene(root, SCENE), ScanNetScene(sens_root, SCENE)
    assert scene.frame_ids == [10 * i for i in export.frame_ids]
    assert np.array_equal(scene.read_depth_m(30), export.read_depth_m(3))
    assert np.array_equal(scene.read_poses([0, 70]), export.read_poses([0, 7]))
    assert (scene.sampled_frame_ids(4) == 10 * export.sampled_frame_ids(4)).all()
    assert np.array_equal(scene.intrinsic_depth, export.intrinsic_depth)


def test_layout_detection_prefers_the_sensreader_export(sens_root, tmp_path):
    root = write_posed_images(sens_root, tmp_path / "both", "scannet_meta")
    assert list_scenes(root) == [SCENE] and ScanNetScene(root, SCENE).layout == "posed_images"
    shutil.copytree(sens_root / "scans" / SCENE, root / "scans" / SCENE, dirs_exist_ok=True)
    assert ScanNetScene(root, SCENE).layout == "scannet"  # scans/<id>/color/ is there
    assert ScanNetScene(root, SCENE, layout="posed_images").layout == "posed_images"
    with pytest.raises(Loc3rError, match="unknown scan layout 'scannetpp': expected one of scannet, posed_images"):
        ScanNetScene(root, SCENE, layout="scannetpp")
    with pytest.raises(Loc3rError, match=f"unknown scene id 'scene0001_00' .*nor {root / 'posed_images'}"):
        ScanNetScene(root, "scene0001_00")


def test_the_cache_of_posed_images_follows_their_files(sens_root, tmp_path):
    root = write_posed_images(sens_root, tmp_path / "posed", "embodiedscan_json")
    scene = ScanNetScene(root, SCENE)
    ids = scene.sampled_frame_ids(4)
    before = source_fingerprint(scene, ids)
    assert source_fingerprint(ScanNetScene(root, SCENE), ids) == before
    pose = scene.files.pose(int(ids[1]))
    pose.write_text(pose.read_text() + "\n")
    assert source_fingerprint(scene, ids) != before
    info = root / "embodiedscan" / "embodiedscan_infos_train.json"
    after_pose = source_fingerprint(scene, ids)
    info.write_text(info.read_text() + " ")
    assert source_fingerprint(scene, ids) != after_pose


def one_line_error(match: str, fn, *args):
    with pytest.raises(Loc3rError, match=match) as e:
        fn(*args)
    assert "\n" not in str(e.value)
    return e.value


def test_missing_posed_image_files_are_one_line_errors_naming_the_file(sens_root, tmp_path):
    root = write_posed_images(sens_root, tmp_path / "posed", "scannet_meta")
    scene = ScanNetScene(root, SCENE)
    (scene.dir / "depth_intrinsic.txt").unlink()
    one_line_error(f"{scene.dir / 'depth_intrinsic.txt'}: file not found", lambda: scene.intrinsic_depth)
    (scene.dir / "00003.png").unlink()
    one_line_error(f"{scene.dir / '00003.png'}: file not found", scene.read_depth_m, 3)
    (scene.dir / "00005.txt").unlink()
    one_line_error(f"{scene.dir / '00005.txt'}: file not found", lambda: ScanNetScene(root, SCENE).valid_frame_ids)
    for p in scene.dir.glob("*.jpg"):
        p.unlink()
    one_line_error(rf"{scene.dir}: no frames \(<i>.jpg\)", lambda: ScanNetScene(root, SCENE).frame_ids)


def test_the_axis_alignment_of_posed_images_needs_a_source_and_names_it(sens_root, tmp_path):
    root = write_posed_images(sens_root, tmp_path / "posed", "embodiedscan_json")
    meta = root / "scans" / SCENE / f"{SCENE}.txt"
    info = root / "embodiedscan" / "embodiedscan_infos_train.json"
    data = json.loads(info.read_text())
    data["data_list"] = data["data_list"][:1]  # only the 3RScan scan
    info.write_text(json.dumps(data))
    one_line_error(f"{meta}: file not found, and no entry scannet/{SCENE} in {info}",
                   lambda: ScanNetScene(root, SCENE).axis_alignment)
    info.write_text('{"data_list": [')
    one_line_error(f"{info}: not valid JSON", lambda: ScanNetScene(root, SCENE).axis_alignment)
    info.write_text(json.dumps({"data_list": [{"sample_idx": f"scannet/{SCENE}", "axis_align_matrix": [[1, 2]]}]}))
    one_line_error(f"{info}: entry 'scannet/{SCENE}' axis_align_matrix must be a 4x4 matrix",
                   lambda: ScanNetScene(root, SCENE).axis_alignment)
    info.write_text(json.dumps({"data_list": [{"sample_idx": f"scannet/{SCENE}"}]}))  # EmbodiedScan: identity
    assert np.array_equal(ScanNetScene(root, SCENE).axis_alignment, np.eye(4))
    info.unlink()
    one_line_error(f"{meta}: file not found, and no EmbodiedScan info file",
                   lambda: ScanNetScene(root, SCENE).axis_alignment)
    # SQA3D and ScanQA do not need it: samples without MSQA's alignment still come
    assert make_benchmark_dataset(Loc3RConfig.tiny(), "sqa3d", root, "train", tmp_path / "cache")[0].frames.size


class RunsCode:
    """What a malicious pickle holds: loading it would call `call(*args)`."""

    def __init__(self, call, *args):
        self.call, self.args = call, args

    def __reduce__(self):
        return self.call, self.args


@pytest.mark.parametrize("payload", ["system", "eval", "open"])
def test_a_pickle_that_would_run_code_is_refused(sens_root, tmp_path, payload):
    root = write_posed_images(sens_root, tmp_path / "posed", "embodiedscan_pkl")
    marker = tmp_path / "ran"
    call = {"system": RunsCode(os.system, f"touch {marker}"),
            "eval": RunsCode(eval, f"open({str(marker)!r}, 'w').close()"),
            "open": RunsCode(open, str(marker), "w")}[payload]
    path = root / "embodiedscan" / "embodiedscan_infos_val.pkl"
    data = pickle.loads(path.read_bytes())  # written by this test: plain data
    data["data_list"][0]["instances"] = [call]
    path.write_bytes(pickle.dumps(data))
    embodiedscan._scene_alignments.cache_clear()
    error = one_line_error(f"{path}: refused: the pickle asks for (posix|builtins|io)\\.",
                           lambda: ScanNetScene(root, SCENE).axis_alignment)
    assert "convert a file you trust to JSON" in str(error)
    assert not marker.exists()


def test_data_only_pickles_of_every_protocol_load(tmp_path):
    value = {"data_list": [{"sample_idx": f"scannet/{SCENE}", "axis_align_matrix": np.arange(16.0).reshape(4, 4),
                            "depth_shift": np.float32(1000), "ids": {1, 2}, "name": b"raw"}]}
    for protocol in range(pickle.HIGHEST_PROTOCOL + 1):
        path = tmp_path / f"embodiedscan_infos_p{protocol}.pkl"
        path.write_bytes(pickle.dumps(value, protocol=protocol))
        table = embodiedscan.scene_alignments(path)
        assert np.array_equal(table[SCENE], np.arange(16.0).reshape(4, 4)), protocol
    path.write_bytes(pickle.dumps(value)[:40])
    one_line_error(f"{path}: corrupt or truncated pickle", embodiedscan.read_pickle, path)


def test_vlm3r_video_arrangement_reads_the_same_frames(sens_root, tmp_path):
    """VLM-3R's export puts a scan set's videos in <dataset>/videos/[<split>/]<scene>.mp4; VSI-Bench's rows name
    <dataset>/<scene>.mp4. Either arrangement gives the same frames."""
    from loc3r.synth.benchmarks import write_video

    scan = ScanNetScene(sens_root, SCENE)
    frames = np.stack([scan.read_color(i) for i in scan.frame_ids])
    record = QARecord("vsibench", "0", SCENE, NO_SITUATION, "How many beds?", ["1"], "object_counting",
                      video=f"scannet/{SCENE}.mp4")
    read = {}
    for name, relative in [("hf", f"scannet/{SCENE}.mp4"), ("vlm3r", f"scannet/videos/{SCENE}.mp4"),
                           ("vlm3r_split", f"ScanNet/videos/val/{SCENE}.mp4")]:
        write_video(tmp_path / name / relative, frames)
        dataset = VideoQADataset(tmp_path / name, [record], num_frames=4, image_size=32, grid_hw=(2, 2))
        read[name] = dataset[0]
    for name in ("vlm3r", "vlm3r_split"):
        assert np.array_equal(read[name].frames, read["hf"].frames)
        assert np.array_equal(read[name].frame_times, read["hf"].frame_times)
    missing = VideoQADataset(tmp_path / "none", [record], num_frames=4, image_size=32, grid_hw=(2, 2))
    one_line_error(rf"{tmp_path / 'none' / 'scannet' / SCENE}.mp4: file not found \(nor VLM-3R's",
                   missing.__getitem__, 0)
