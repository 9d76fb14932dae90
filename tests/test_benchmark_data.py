"""Readers of ScanQA, MSQA and VSI-Bench in their releases' formats, and their answers to bad input."""

import json
import re

import numpy as np
import pytest

from loc3r.constants import NO_SITUATION
from loc3r.data import benchmarks as b
from loc3r.errors import Loc3rError


def write(path, obj):
    path.write_text(json.dumps(obj))
    return path


def test_scanqa(tmp_path):
    f = write(b.scanqa_path(tmp_path, "val"), [
        {"scene_id": "scene0011_00", "question_id": "val-scene0011-0", "question": "What is in the corner?",
         "answers": ["brown chair", "chair"], "object_ids": [3], "object_names": ["chair"]}])
    write(b.scanqa_path(tmp_path, "test_wo_obj"), [
        {"scene_id": "scene0011_00", "question_id": "test-scene0011-0", "question": "What color is the door?"}])
    r = b.read_scanqa(f)[0]
    assert (r.question_id, r.scene_id, r.situation, r.answers) == ("val-scene0011-0", "scene0011_00", NO_SITUATION,
                                                                   ["brown chair", "chair"])
    assert not r.has_situation and r.extra["object_names"] == ["chair"]
    assert b.read_scanqa(b.scanqa_path(tmp_path, "test_wo_obj"))[0].answers == []  # test files have no answers
    with pytest.raises(Loc3rError, match="unknown ScanQA split 'dev'"):
        b.scanqa_path(tmp_path, "dev")


def test_msqa_placeholders_and_pose(tmp_path):
    f = write(b.msqa_path(tmp_path, "test"), [
        {"scan_id": "scene0000_00", "index": 7, "type": "counting",
         "situation": "I am sitting on the <chair-1-IMG> next to the <coffee_table-2-IMG>.",
         "question": "How many <pillow-IMG> are on the bed?", "answers": ["two"],
         "location": [1.0, 2.0, 0.5], "orientation": [0.0, 1.0, 0.0]}])
    r = b.read_msqa(f)[0]
    assert r.situation == "I am sitting on the chair next to the coffee table."
    assert r.question == "How many pillow are on the bed?" and r.question_id == "7" and r.has_situation
    assert np.allclose(r.location_xyz, [1, 2, 0.5]) and np.allclose(r.facing_xy, [0, 1])


@pytest.mark.parametrize("entry,message", [
    ({"scan_id": "s", "index": 3, "situation": "x", "question": "y", "answers": ["z"], "orientation": [1, 0, 0]},
     "entry 0 (index 3) has no 'location'"),
    ({"scan_id": "s", "situation": "x", "question": "y", "answers": ["z"], "location": [0, 0, 0],
      "orientation": [0, 0, 1]}, "'orientation' has no horizontal direction"),
    ({"scan_id": "s", "situation": "x", "question": "y", "answers": ["z"], "location": [0, "a", 0],
      "orientation": [1, 0, 0]}, "field 'location' must be 3 finite numbers"),
])
def test_msqa_bad_entries(tmp_path, entry, message):
    f = write(tmp_path / "msqa_scannet_test.json", [entry])
    with pytest.raises(Loc3rError, match=re.escape(message)) as e:
        b.read_msqa(f)
    assert str(f) in str(e.value)


def test_vsibench_rows_prompts_and_conversations(tmp_path):
    rows = [
        {"id": 1, "dataset": "scannet", "scene_name": "scene0011_00", "question_type": "object_counting",
         "question": "How many chair(s) are in this room?", "ground_truth": "4", "options": None},
        {"id": 2, "dataset": "arkitscenes", "scene_name": "41069025", "question_type": "object_rel_distance",
         "question": "Which of these objects is closest to the sofa?", "ground_truth": "B",
         "options": ["A. table", "B. lamp", "C. tv"]},
    ]
    f = tmp_path / "test.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    count, choice = b.read_vsibench(f)
    assert count.question == ("These are frames of a video.\nHow many chair(s) are in this room?\n"
                              "Please answer the question using a single word or phrase.")
    assert choice.question == ("These are frames of a video.\nWhich of these objects is closest to the sofa?\n"
                               "Options:\nA. table\nB. lamp\nC. tv\n"
                               "Answer with the option's letter from the given choices directly.")
    assert count.video == "scannet/scene0011_00.mp4" and choice.answers == ["B"] and count.answers == ["4"]
    conv = write(tmp_path / "vlm3r.json", [
        {"id": "x", "data_source": "scannet", "scene_name": "scene0000_00", "question_type": "object_counting",
         "video": "scannet/scene0000_00.mp4",
         "conversations": [{"from": "human", "value": "<image>\nHow many beds?"}, {"from": "gpt", "value": "2"}]}])
    r = b.read_vsibench(conv)[0]
    assert (r.question, r.answers, r.video) == ("How many beds?", ["2"], "scannet/scene0000_00.mp4")


def test_vsibench_bad_rows(tmp_path):
    f = write(tmp_path / "rows.json", [{"dataset": "scannet", "scene_name": "s", "question_type": "object_volume",
                                         "question": "?", "ground_truth": "1"}])
    with pytest.raises(Loc3rError, match=f"{f}: entry 0 has an unknown question_type 'object_volume'"):
        b.read_vsibench(f)
    f = write(tmp_path / "rows.json", [{"dataset": "scannet", "scene_name": "s", "question_type": "route_planning",
                                         "question": "?", "ground_truth": "A"}])
    with pytest.raises(Loc3rError, match="multiple choice \\(route_planning\\) but has no 'options'"):
        b.read_vsibench(f)
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(Loc3rError, match="bad.json: not valid JSON"):
        b.read_vsibench(tmp_path / "bad.json")
