"""Names read from data files stay inside the data root: scene ids and video paths of every benchmark format are
refused in one line naming the file and entry when they would leave it, and nothing is read or written outside."""

import json
import shutil

import pytest

from loc3r.cli import main
from loc3r.data import benchmarks as b
from loc3r.data import paths
from loc3r.data.sqa3d import read_sqa3d
from loc3r.errors import Loc3rError

OUTSIDE = ["../../../OUTSIDE/scan", "/tmp/OUTSIDE/scan", "scene0000_00/../../x", "..", ".hidden", "", "a b"]


def write(path, obj):
    path.write_text(json.dumps(obj))
    return path


@pytest.mark.parametrize("bad", OUTSIDE)
def test_scanqa_and_msqa_scene_ids_stay_inside(tmp_path, bad):
    f = write(tmp_path / "ScanQA_v1.0_val.json", [{"scene_id": bad, "question_id": "q", "question": "?"}])
    with pytest.raises(Loc3rError, match="must stay inside the data root") as e:
        b.read_scanqa(f)
    assert str(e.value).startswith(f"{f}: entry 0 field 'scene_id'") and "\n" not in str(e.value)
    f = write(tmp_path / "msqa_scannet_test.json", [{"scan_id": bad, "situation": "x", "question": "y",
                                                    "answers": ["z"], "location": [0, 0, 0], "orientation": [1, 0, 0]}])
    with pytest.raises(Loc3rError, match=f"{f}: entry 0 field 'scan_id'"):
        b.read_msqa(f)


@pytest.mark.parametrize("field", ["scene_name", "dataset"])
def test_vsibench_rows_stay_inside(tmp_path, field):
    row = {"dataset": "scannet", "scene_name": "scene0000_00", "question_type": "object_counting", "question": "?",
           "ground_truth": "1", field: "../../OUTSIDE"}
    f = write(tmp_path / "rows.json", [row])
    with pytest.raises(Loc3rError, match=f"{f}: entry 0 field '{field}'"):
        b.read_vsibench(f)


@pytest.mark.parametrize("video", ["../OUTSIDE/v.mp4", "/tmp/OUTSIDE/v.mp4", "scannet/../../v.mp4"])
def test_vlm3r_video_paths_stay_inside(tmp_path, video):
    f = write(tmp_path / "vlm3r.json", [
        {"id": "x", "data_source": "scannet", "scene_name": "scene0000_00", "question_type": "object_counting",
         "video": video, "conversations": [{"from": "human", "value": "How many?"}, {"from": "gpt", "value": "2"}]}])
    with pytest.raises(Loc3rError, match=f"{f}: entry 0 field 'video'"):
        b.read_vsibench(f)


def test_sqa3d_scene_ids_stay_inside(synth_data, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(synth_data / "sqa_task", data / "sqa_task")
    q = next((data / "sqa_task" / "balanced").glob("v1_balanced_questions_train_*.json"))
    questions = json.loads(q.read_text())
    questions["questions"][0]["scene_id"] = "../../OUTSIDE/scan"
    q.write_text(json.dumps(questions))
    with pytest.raises(Loc3rError, match=f"{q}: entry 0 field 'scene_id'"):
        read_sqa3d(data, "train")


@pytest.mark.parametrize("absolute", [False, True])
def test_eval_never_reads_or_writes_a_scan_outside_the_root(synth_data, tmp_path, tiny_checkpoint, capsys, absolute):
    """The defect: a ScanQA scene id leading to a real scan outside the data root was read, and eval wrote its cache
    and plots beside it. Now: one line, exit 2, the outside folder untouched, no output."""
    data, outside = tmp_path / "data", tmp_path / "OUTSIDE" / "scan"
    shutil.copytree(synth_data, data)
    scene = sorted((data / "scans").iterdir())[0]
    shutil.copytree(scene, outside)
    before = sorted(p.relative_to(tmp_path) for p in (tmp_path / "OUTSIDE").rglob("*"))
    bad = str(outside) if absolute else "../../OUTSIDE/scan"
    f = write(data / "scanqa" / "ScanQA_v1.0_val.json",
              [{"scene_id": bad, "question_id": "q0", "question": "What is here?", "answers": ["bed"]}])
    assert main(["eval", "--checkpoint", str(tiny_checkpoint), "--data", str(data), "--benchmark", "scanqa",
                 "--split", "val", "--out", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{f}: entry 0 field 'scene_id'" in err[0]
    assert sorted(p.relative_to(tmp_path) for p in (tmp_path / "OUTSIDE").rglob("*")) == before
    assert not (tmp_path / "eval").exists()


def test_question_ids_become_plain_file_names():
    for text in ("../../x/y", "/abs", ".hidden", "a b:c", ""):
        name = paths.file_part(text)
        assert "/" not in name and not name.startswith(".") and name
    assert paths.file_part("val-scene0011-0") == "val-scene0011-0"
