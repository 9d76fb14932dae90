"""`loc3r show`: a bird's-eye view of a scene, and one-line errors for scenes it cannot draw."""

import shutil

import numpy as np
import pytest
from PIL import Image

from loc3r.cli import main


@pytest.fixture
def scene_copy(synth_data, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(synth_data / "scans" / "scene0000_00", root / "scans" / "scene0000_00")
    return root, root / "scans" / "scene0000_00"


def test_show_draws_a_scene(scene_copy, tmp_path):
    root, _ = scene_copy
    assert main(["show", "--data", str(root), "--scene", "scene0000_00", "--out", str(tmp_path / "bev.png")]) == 0
    assert (tmp_path / "bev.png").stat().st_size > 0


@pytest.mark.parametrize("breakage,message", [("poses", "no frame has a valid (finite) pose"),
                                              ("depth", "every depth pixel of the sampled frames is zero")])
def test_scenes_without_poses_or_depth_are_one_line_errors(scene_copy, tmp_path, capsys, breakage, message):
    root, scan = scene_copy
    for f in sorted((scan / "pose").glob("*.txt")) if breakage == "poses" else []:
        f.write_text("\n".join(["-inf -inf -inf -inf"] * 4) + "\n")  # ScanNet's mark of lost tracking
    for f in sorted((scan / "depth").glob("*.png")) if breakage == "depth" else []:
        Image.fromarray(np.zeros((32, 32), np.uint16)).save(f)
    assert main(["show", "--data", str(root), "--scene", "scene0000_00", "--out", str(tmp_path / "b.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err and str(scan) in err
    assert not (tmp_path / "b.png").exists()


def test_a_situation_without_sqa3d_files_names_the_directory(scene_copy, tmp_path, capsys):
    root, _ = scene_copy  # scans only: no sqa_task/
    assert main(["show", "--data", str(root), "--scene", "scene0000_00", "--situation", "0",
                 "--out", str(tmp_path / "b.png")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "sqa_task/balanced: no situated question of scene0000_00" in err
