"""`loc3r eval` and `loc3r infer` end to end on synthetic scenes, and their answers to bad input."""

import json

import av
import numpy as np
import pytest

from loc3r.cli import main
from loc3r.data.scannet import ScanNetScene


def test_eval_writes_metrics_report_and_plots(synth_data, tiny_checkpoint, tmp_path):
    out = tmp_path / "eval"
    assert main(["eval", "--checkpoint", str(tiny_checkpoint), "--data", str(synth_data), "--split", "train",
                 "--out", str(out), "--plots", "2", "--limit", "12"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    assert set(m["localization"]) == {"acc_0.5m", "acc_1.0m", "acc_15deg", "acc_30deg", "median_pos_err_m",
                                      "median_yaw_err_deg"}
    assert set(m["qa"]) == {"em1", "em_refined", "by_type", "by_question_type"} and m["n"] == 12
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    kinds = {p["question_type"] for p in preds}  # the synthetic rooms name their question families
    assert set(m["qa"]["by_question_type"]) == kinds and "N/A" not in kinds
    assert sum(v["n"] for v in m["qa"]["by_question_type"].values()) == 12
    assert len(preds) == 12 and all(len(p["yaw_probs"]) == 36 for p in preds)
    # every question of a situation gets the same pose (the situation tokens precede the question)
    by_situation = {}
    for p in preds:
        by_situation.setdefault((p["scene_id"], p["situation"]), []).append(p["position_xy_m"])
    for xys in by_situation.values():
        assert np.allclose(xys, xys[0], atol=1e-5)
    plots = list((out / "plots").glob("*.png"))
    assert len(plots) == 2 and "## Summary" in (out / "report.md").read_text() and (out / "view.html").is_file()


def test_eval_batches_group_the_questions_of_each_video():
    from loc3r.evaluate.evaluation import video_batches

    keys = ["a", "b", "a", "c", "b", "a"]  # questions of three videos, interleaved
    assert video_batches(keys, 6, 2) == [[[0, 2]], [[5], [1]], [[4], [3]]]
    assert video_batches(keys, 6, 4) == [[[0, 2, 5], [1]], [[4], [3]]]
    assert video_batches(keys, 3, 8) == [[[0, 2], [1]]]  # --limit 3


def test_eval_predictions_equal_answering_each_question_alone(synth_data, tiny_checkpoint):
    """`loc3r eval` answers --batch-size questions a pass, those of one video on its prefix computed once: each record
    (in the data set's order) equals answering its question alone, as one whole sequence."""
    import torch

    from loc3r.evaluate.evaluation import predict_dataset
    from loc3r.model.processor import Collator, make_benchmark_dataset
    from loc3r.train.checkpoint import load_model

    model = load_model(tiny_checkpoint).eval()
    dataset = make_benchmark_dataset(model.config, "sqa3d", synth_data, "train", None, None)
    n = 60
    assert len(set(dataset.video_keys[:n])) >= 2  # the batches span two rooms
    records = predict_dataset(model, dataset, 16, 4, torch.device("cpu"), limit=n)
    collate = Collator(model.tokenizer, model.config, for_generation=True)
    assert [r["question_id"] for r in records] == [dataset[i].question_id for i in range(n)]
    for i, r in enumerate(records):
        alone = model.predict(collate([dataset[i]]), 4)[0]
        assert r["answer"] == alone.answer
        np.testing.assert_allclose(r["position_xy_m"], alone.position_xy, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(r["yaw_probs"], alone.yaw_probs, rtol=1e-4, atol=1e-6)
    assert len({tuple(np.round(r["position_xy_m"], 4)) for r in records}) > 10  # the questions' poses differ


def write_video(path, frames):
    with av.open(str(path), "w") as c:
        s = c.add_stream("mpeg4", rate=10)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            for packet in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(packet)
        for packet in s.encode():
            c.mux(packet)


@pytest.fixture()
def scene_dir(synth_data):
    return ScanNetScene(synth_data, "scene0000_00").dir


def test_infer_frames_with_poses(tiny_checkpoint, scene_dir, tmp_path, capsys):
    plot = tmp_path / "p.png"
    assert main(["infer", "--checkpoint", str(tiny_checkpoint), "--frames", str(scene_dir / "color"),
                 "--poses", str(scene_dir / "pose"), "--situation", "I am standing next to the bed.",
                 "--question", "What is on my left?", "--json", "--plot", str(plot)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert set(r) >= {"answer", "position_xy_m", "position_sigma_m", "yaw_deg", "yaw_probs"}
    assert len(r["position_xy_m"]) == 2 and all(s > 0 for s in r["position_sigma_m"])
    assert -180 <= r["yaw_deg"] <= 180 and abs(sum(r["yaw_probs"]) - 1) < 1e-4 and plot.is_file()


def test_infer_prints_its_answer_before_a_plot_that_cannot_be_written(tiny_checkpoint, scene_dir, tmp_path, capsys,
                                                                      monkeypatch):
    import errno

    def full_disk(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("tempfile.mkstemp", full_disk)
    plot = tmp_path / "p.png"
    assert main(["infer", "--checkpoint", str(tiny_checkpoint), "--frames", str(scene_dir / "color"),
                 "--poses", str(scene_dir / "pose"), "--situation", "I am standing next to the bed.",
                 "--question", "What is on my left?", "--plot", str(plot)]) == 2
    out, err = capsys.readouterr()
    assert "answer:" in out and "facing:" in out
    assert err.count("\n") == 1 and f"{plot}: cannot write (no space left on device)" in err


def test_infer_video(tiny_checkpoint, scene_dir, tmp_path, capsys):
    scene = ScanNetScene(scene_dir.parent.parent, scene_dir.name)
    video = tmp_path / "room.mp4"
    write_video(video, np.stack([scene.read_color(i) for i in scene.frame_ids]))
    assert scene.frame_ids == list(range(len(scene.frame_ids)))  # the video's frame i has pose/<i>.txt
    assert main(["infer", "--checkpoint", str(tiny_checkpoint), "--video", str(video), "--poses",
                 str(scene_dir / "pose"), "--situation", "I am standing next to the bed.", "--question",
                 "How many chairs are there?"]) == 0
    out = capsys.readouterr().out
    assert "answer:" in out and "position:" in out and "facing:" in out


def test_infer_many_questions_on_one_video(tiny_checkpoint, scene_dir, tmp_path, capsys):
    """--questions FILE.jsonl answers them together (the video computed once) as each alone would be answered."""
    items = [{"id": "a", "situation": "I am standing next to the bed.", "question": "What is on my left?"},
             {"question": "How many chairs are there in the room?"},
             {"id": 7, "situation": "I am facing the table.", "question": "Is the bed on my left or on my right?"}]
    file = tmp_path / "q.jsonl"
    file.write_text("\n".join(json.dumps(i) for i in items) + "\n\n")
    src = ["--checkpoint", str(tiny_checkpoint), "--frames", str(scene_dir / "color"), "--poses",
           str(scene_dir / "pose"), "--json"]
    assert main(["infer", *src, "--questions", str(file), "--batch-size", "2"]) == 0
    together = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["id"] for r in together] == ["a", 1, 7] and together[1]["situation"] == "I am standing in the room."
    for item, r in zip(items, together):
        assert main(["infer", *src, "--situation", item.get("situation", "I am standing in the room."),
                     "--question", item["question"]]) == 0
        alone = json.loads(capsys.readouterr().out)
        assert r["answer"] == alone["answer"]
        assert np.allclose(r["position_xy_m"], alone["position_xy_m"], atol=1e-4)
        assert abs(r["yaw_deg"] - alone["yaw_deg"]) < 1e-2
    file.write_text(json.dumps(items[0]) + "\n[1, 2]\n")
    assert main(["infer", *src, "--questions", str(file)]) == 2
    assert f'{file}:2: expected {{"situation": ..., "question": ...}}' in capsys.readouterr().err


@pytest.mark.parametrize("case,message", [
    ("missing checkpoint", "no such checkpoint or run directory"),
    ("bad video", "unreadable video"),
    ("empty situation", "--situation / --question: the situation is empty"),
])
def test_infer_bad_input(case, message, tiny_checkpoint, scene_dir, tmp_path, capsys):
    ckpt, src, situation = str(tiny_checkpoint), ["--frames", str(scene_dir / "color")], "I am by the bed."
    if case == "missing checkpoint":
        ckpt = str(tmp_path / "nothing")
    elif case == "bad video":
        (tmp_path / "bad.mp4").write_bytes(b"\x00not a video" * 10)
        src = ["--video", str(tmp_path / "bad.mp4"), "--poses", str(scene_dir / "pose")]
    else:
        situation = "  "
    assert main(["infer", "--checkpoint", ckpt, *src, "--situation", situation, "--question", "What is in the room?"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


def test_infer_names_the_poses_folder_whose_first_camera_has_no_heading(tiny_checkpoint, scene_dir, tmp_path,
                                                                         capsys):
    import shutil

    poses = tmp_path / "pose"
    shutil.copytree(scene_dir / "pose", poses)
    first = min(poses.glob("*.txt"), key=lambda p: int(p.stem))
    down = np.eye(4)
    down[:3, :3] = [[1, 0, 0], [0, -1, 0], [0, 0, -1]]  # OpenCV camera z (forward) = world -z: straight down
    first.write_text("\n".join(" ".join(f"{v:.6f}" for v in row) for row in down) + "\n")
    assert main(["infer", "--checkpoint", str(tiny_checkpoint), "--frames", str(scene_dir / "color"), "--poses",
                 str(poses), "--situation", "I am by the bed.", "--question", "What is in the room?"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"{poses}: the first valid camera's forward axis" in err


@pytest.mark.parametrize("benchmark,split", [("scanqa", "test_w_obj"), ("msqa", "test")])
def test_eval_scanqa_and_msqa_on_synthetic_rooms(synth_data, tiny_checkpoint, tmp_path, benchmark, split):
    out = tmp_path / benchmark
    assert main(["eval", "--checkpoint", str(tiny_checkpoint), "--data", str(synth_data), "--benchmark", benchmark,
                 "--split", split, "--out", str(out), "--plots", "1"]) == 0
    m = json.loads((out / "metrics.json").read_text())
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    source = {"scanqa": synth_data / "scanqa" / "ScanQA_v1.0_test_w_obj.json",
              "msqa": synth_data / "msqa" / "msqa_scannet_test.json"}[benchmark]
    entries = json.loads(source.read_text())
    ids = [str(e["question_id"]) if benchmark == "scanqa" else str(e["index"]) for e in entries]
    assert [p["id"] for p in preds] == ids and m["benchmark"] == benchmark and m["n"] == len(entries) > 0
    if benchmark == "scanqa":
        assert m["protocol"] == "vlm3r" and {"em1", "em_refined", "bleu4", "cider", "rouge_l", "meteor"} <= set(m["qa"])
        assert not any(p["situated"] for p in preds) and len(list((out / "plots").glob("*_answer_*.png"))) == 1
    else:
        assert "EM-R_overall" in m["qa"] and {"acc_0.5m", "acc_30deg"} <= set(m["localization"])
        assert all(p["situated"] for p in preds) and len(list((out / "plots").glob("*.png"))) == 1
    assert "## Examples" in (out / "report.md").read_text()


def test_msqa_poses_are_the_situations_of_the_same_rooms(synth_data):
    """MSQA's location + facing vector (axis-aligned frame) give the same BEV pose as the SQA3D annotation of the
    same situation (raw frame, relative to the mesh centre): both readers and both conversions agree."""
    from loc3r.model.config import Loc3RConfig
    from loc3r.model.processor import make_benchmark_dataset, make_dataset

    config = Loc3RConfig.tiny(num_frames=4)
    msqa = make_benchmark_dataset(config, "msqa", synth_data, "test")
    sqa = make_dataset(config, synth_data, "test")
    by_text = {}
    for i in range(len(sqa)):
        s = sqa[i]
        if s.has_situation:
            by_text[(s.scene_id, s.situation, s.question)] = s
    matched = 0
    for i in range(len(msqa)):
        s = msqa[i]
        ref = by_text.get((s.scene_id, s.situation, s.question))
        if ref is not None:
            assert np.allclose(s.position_xy, ref.position_xy, atol=1e-3)
            assert abs(np.angle(np.exp(1j * (s.yaw_rad - ref.yaw_rad)))) < 1e-3
            matched += 1
    assert matched > 10


def test_eval_vsibench_on_synthetic_videos(synth_data, tiny_checkpoint, tmp_path, capsys):
    assert main(["eval", "--checkpoint", str(tiny_checkpoint), "--data", str(synth_data), "--benchmark", "vsibench",
                 "--out", str(tmp_path / "refused")]) == 2
    assert "VSI-Bench videos come without camera poses, so the poses prior is unavailable" in capsys.readouterr().err
    run = tmp_path / "run"
    assert main(["train", "--data", str(synth_data), "--out", str(run), "--steps", "1", "--batch-size", "2",
                 "--frames", "4", "--prior", "none", "--quiet"]) == 0
    out = tmp_path / "vsi"
    assert main(["eval", "--checkpoint", str(run), "--data", str(synth_data), "--benchmark", "vsibench",
                 "--out", str(out)]) == 0
    m = json.loads((out / "metrics.json").read_text())
    rows = (synth_data / "vsibench" / "test.jsonl").read_text().splitlines()
    assert m["n"] == len(rows) and "vsibench_overall" in m["qa"] and "object_counting_mra" in m["qa"]
    assert "room_size_estimation_mra" in m["qa"]
    (synth_data / "vsibench" / "scannet").rename(tmp_path / "videos")  # a missing video is named
    try:
        assert main(["eval", "--checkpoint", str(run), "--data", str(synth_data), "--benchmark", "vsibench",
                     "--out", str(tmp_path / "missing")]) == 2
        assert ".mp4: file not found" in capsys.readouterr().err
    finally:
        (tmp_path / "videos").rename(synth_data / "vsibench" / "scannet")
