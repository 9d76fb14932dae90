"""Regression tests of a probe of bad input and faults: an existing run is never replaced without --overwrite, a
folder that cannot be written is one line, and the other one-line refusals."""

import json
import os
import re
import shutil
import stat

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from loc3r.cli import main


def flags(data, out, *extra):
    return ["train", "--data", str(data), "--out", str(out), "--steps", "1", "--batch-size", "2", "--frames", "4",
            "--loop-starts", "1", "--quiet", *extra]


def test_an_existing_run_is_never_replaced_without_overwrite(synth_data, tmp_path, capsys):
    run = tmp_path / "run"
    assert main(flags(synth_data, run)) == 0
    log, weights = (run / "log.jsonl").read_text(), load_file(str(run / "checkpoints" / "step_0000001" /
                                                                 "model.safetensors"))
    capsys.readouterr()
    assert main(flags(synth_data, run, "--seed", "1")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{run}: holds a run: pass --resume to continue it, --overwrite" in err[0]
    assert (run / "log.jsonl").read_text() == log  # untouched
    again = load_file(str(run / "checkpoints" / "step_0000001" / "model.safetensors"))
    assert all(torch.equal(weights[k], again[k]) for k in weights)
    (run / "notes.txt").write_text("mine")
    assert main(flags(synth_data, run, "--seed", "1", "--overwrite")) == 0  # started again; the user's file kept
    assert (run / "notes.txt").read_text() == "mine" and len((run / "log.jsonl").read_text().splitlines()) == 1
    assert not all(torch.equal(weights[k], v) for k, v in
                   load_file(str(run / "checkpoints" / "step_0000001" / "model.safetensors")).items())
    assert main(flags(synth_data, run, "--resume", "--overwrite")) == 2
    assert "pass one of the two" in capsys.readouterr().err


def test_a_users_folder_is_not_a_run(synth_data, tmp_path, capsys):
    """A folder of the user's (even one holding a file named like a run's) is refused; --resume too."""
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "thesis.tex").write_text("x")
    assert main(flags(synth_data, mine)) == 2
    assert f"{mine}: is not empty" in capsys.readouterr().err
    assert main(flags(synth_data, mine, "--resume")) == 2
    assert "not a run directory" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]
    assert main(["pretrain-base", "--data", str(synth_data), "--out", str(mine), "--steps", "1", "--quiet"]) == 2
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_out_is_one_line(synth_data, tmp_path, capsys):
    parent = tmp_path / "ro"
    parent.mkdir()
    parent.chmod(stat.S_IRUSR | stat.S_IXUSR)
    try:
        assert main(flags(synth_data, parent / "run")) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "cannot write (permission denied)" in err[0]
    finally:
        parent.chmod(stat.S_IRWXU)


def test_write_errors_of_any_command_are_one_line(tmp_path, capsys, monkeypatch):
    """An OSError of a full disk or a denied path escaping a command (here: the folder of `synth --out`) is one line
    naming the file, exit 2; other OSErrors keep their traceback (bugs)."""
    import errno

    from loc3r.synth import writer

    def denied(*args, **kwargs):
        raise PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "synth"))

    monkeypatch.setattr(writer, "generate", denied)
    assert main(["synth", "--out", str(tmp_path / "synth"), "--scenes", "1", "--seed", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"loc3r: error: {tmp_path / 'synth'}: cannot write (permission denied)"]


def test_a_full_disk_while_saving_is_one_line_and_keeps_the_previous_checkpoint(synth_data, tmp_path, capsys,
                                                                               monkeypatch):
    from safetensors import SafetensorError

    from loc3r.model import loc3r as model_module

    run = tmp_path / "run"
    assert main(flags(synth_data, run, "--steps", "2", "--save-every", "1")) == 0
    first = load_file(str(run / "checkpoints" / "step_0000002" / "model.safetensors"))

    def full(*args, **kwargs):
        raise SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: '
                              '"No space left on device" })')

    monkeypatch.setattr(model_module, "save_file", full)
    capsys.readouterr()
    assert main(flags(synth_data, run, "--steps", "3", "--resume")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "step_0000003: cannot write (no space left on device)" in err[0]
    assert json.loads((run / "latest.json").read_text())["step"] == 2  # the previous checkpoint stays the run's
    kept = load_file(str(run / "checkpoints" / "step_0000002" / "model.safetensors"))
    assert all(torch.equal(first[k], kept[k]) for k in first)
    assert not list((run / "checkpoints").glob(".step_*"))  # no temporary left behind


# ---- benchmark files: validated when read, not after a whole evaluation ----

def vsi_row(**fields):
    row = {"dataset": "scannet", "scene_name": "scene0000_00", "question_type": "object_counting", "question": "?",
           "ground_truth": "3"}
    return row | fields


@pytest.mark.parametrize("row, message", [
    (vsi_row(ground_truth="abc"), "ground_truth 'abc' of a numeric question (object_counting) is not a number"),
    (vsi_row(ground_truth="nan"), "cannot be scored"),
    (vsi_row(ground_truth=0), "MRA divides by it (the official evaluator fails on 0)"),
    (vsi_row(question_type="route_planning", ground_truth="D", options=["A. left", "B. right"]),
     "ground_truth 'D' is not one of its options' letters (A, B)"),
    (vsi_row(question_type="route_planning", ground_truth="A", options=["A. left", 7]),
     "field 'options' must be a list of strings"),
])
def test_vsibench_rows_that_cannot_be_scored(tmp_path, row, message):
    from loc3r.data import benchmarks as b
    from loc3r.errors import Loc3rError

    f = tmp_path / "rows.json"
    f.write_text(json.dumps([row]))
    with pytest.raises(Loc3rError, match=re.escape(message)) as e:
        b.read_vsibench(f)
    assert str(e.value).startswith(f"{f}: entry 0")


@pytest.mark.parametrize("change, message", [({"answers": []}, "field 'answers' must be one or more strings"),
                                             ({"location": [1e300, 0, 0]}, "not a position or direction in a room")])
def test_msqa_entries_that_cannot_be_scored(tmp_path, change, message):
    from loc3r.data import benchmarks as b
    from loc3r.errors import Loc3rError

    entry = {"scan_id": "scene0000_00", "situation": "x", "question": "y", "answers": ["z"], "location": [0, 0, 0],
             "orientation": [1, 0, 0]} | change
    f = tmp_path / "msqa_scannet_test.json"
    f.write_text(json.dumps([entry]))
    with pytest.raises(Loc3rError, match=re.escape(message)):
        b.read_msqa(f)


# ---- flags refused in one line, before anything is written ----

@pytest.mark.parametrize("argv, message", [
    (["train", "--data", "D", "--out", "O", "--batch-size", "0"], "--batch_size must be >= 1"),
    (["train", "--data", "D", "--out", "O", "--steps", "0"], "--steps must be >= 1"),
    (["eval", "--checkpoint", "C", "--data", "D", "--split", "test", "--out", "O", "--batch-size", "0"],
     "--batch-size must be >= 1"),
    (["eval", "--checkpoint", "C", "--data", "D", "--split", "test", "--out", "O", "--limit", "0"],
     "--limit must be >= 1"),
    (["infer", "--checkpoint", "C", "--video", "V", "--question", "?", "--batch-size", "0"],
     "--batch-size must be >= 1"),
    (["extract-priors", "--cut3r", "C", "--data", "D", "--frames", "0"], "--frames must be >= 1"),
    (["extract-priors", "--cut3r", "C", "--data", "D", "--frames", "-1"], "--frames must be >= 1"),
    (["train", "--data", "msqa=D:abc", "--out", "O"], "'abc' after ':' is not a fraction"),
])
def test_flags_that_cannot_work(tmp_path, capsys, monkeypatch, argv, message):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message.replace("_", "-") in err[0].replace("_", "-")
    assert not (tmp_path / "O").exists()


def test_a_source_given_twice_and_a_resume_on_other_data(synth_data, tmp_path, capsys):
    assert main(flags(synth_data, tmp_path / "r", "--data", f"sqa3d={synth_data}")) == 2
    assert "the same source is given twice" in capsys.readouterr().err
    run = tmp_path / "run"
    assert main(flags(synth_data, run)) == 0
    other = tmp_path / "other"
    shutil.copytree(synth_data, other)
    capsys.readouterr()
    assert main(flags(other, run, "--steps", "2", "--resume")) == 2
    assert "--resume with data = " in capsys.readouterr().err


def test_resume_from_another_start_is_one_line(synth_data, tmp_path, capsys):
    """A run started from the shipped base resumed with --init scratch (other parameter groups): refused in one
    line, not a traceback of the optimizer's state."""
    run = tmp_path / "run"
    assert main(flags(synth_data, run)) == 0
    capsys.readouterr()
    assert main(flags(synth_data, run, "--steps", "2", "--resume", "--init", "scratch")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--resume with" in err[0] and "but the checkpoint was trained with" in err[0]


def test_checkpoints_get_the_umasks_permissions(synth_data, tmp_path):
    run = tmp_path / "run"
    old = os.umask(0o022)
    try:
        assert main(flags(synth_data, run)) == 0
    finally:
        os.umask(old)
    for name in ("model.safetensors", "config.json", "trainer_state.pt"):
        assert stat.S_IMODE((run / "checkpoints" / "step_0000001" / name).stat().st_mode) == 0o644, name


def test_infer_reads_a_null_situation_as_none_given(tiny_checkpoint, synth_data, tmp_path, capsys):
    scene = sorted((synth_data / "scans").iterdir())[0]
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"situation": None, "question": "What is in the room?"}) + "\n"
                         + json.dumps({"situation": 3, "question": "?"}) + "\n")
    assert main(["infer", "--checkpoint", str(tiny_checkpoint), "--frames", str(scene / "color"), "--poses",
                 str(scene / "pose"), "--questions", str(questions), "--json"]) == 2
    assert f"{questions}:2: the situation must be text, got int" in capsys.readouterr().err
    questions.write_text(json.dumps({"situation": None, "question": "What is in the room?"}) + "\n")
    assert main(["infer", "--checkpoint", str(tiny_checkpoint), "--frames", str(scene / "color"), "--poses",
                 str(scene / "pose"), "--questions", str(questions), "--json"]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["situation"] == "I am standing in the room."


# ---- convert-llava-video: the release's own files, named when they do not fit ----

def release(tmp_path):
    from test_convert_llava_video import write_release

    d = tmp_path / "release"
    write_release(d)
    return d


def test_convert_reads_the_index_and_refuses_a_stray_file(tmp_path, capsys):
    from safetensors.torch import save_file

    d = release(tmp_path)
    index = json.loads((d / "model.safetensors.index.json").read_text())
    save_file({"model.image_newline": torch.full((64,), 7.0)}, str(d / "model.safetensors"))  # a stray copy
    assert main(["convert-llava-video", str(d), str(tmp_path / "out")]) == 2
    assert "model.safetensors: a safetensors file the index model.safetensors.index.json does not name" in \
        capsys.readouterr().err
    (d / "model.safetensors").unlink()
    shard = sorted(set(index["weight_map"].values()))[1]
    (d / shard).rename(tmp_path / shard)  # a shard the index names is missing
    assert main(["convert-llava-video", str(d), str(tmp_path / "out")]) == 2
    assert f"names the shard {shard}, which is missing" in capsys.readouterr().err
    (tmp_path / shard).rename(d / shard)
    key = next(k for k, v in index["weight_map"].items() if v == shard)
    index["weight_map"][key] = sorted(set(index["weight_map"].values()))[0]  # the index points at the wrong shard
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    assert main(["convert-llava-video", str(d), str(tmp_path / "out")]) == 2
    assert f"has no tensor {key}, which model.safetensors.index.json places there" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("damage, message", [
    ("list", "config.json: not a JSON object"),
    ("layers", "config.json: num_hidden_layers must be a positive integer, got 'two'"),
    ("tokenizer", "no usable tokenizer files"),
])
def test_convert_names_what_is_wrong_with_a_release(tmp_path, capsys, damage, message):
    d = release(tmp_path)
    config = json.loads((d / "config.json").read_text())
    if damage == "list":
        (d / "config.json").write_text(json.dumps([config]))
    elif damage == "layers":
        (d / "config.json").write_text(json.dumps(config | {"num_hidden_layers": "two"}))
    else:
        for f in d.glob("tokenizer*"):
            f.unlink()
    assert main(["convert-llava-video", str(d), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]


# ---- CUT3R camera tokens: a fingerprint of the weights' content ----

def test_cut3r_fingerprint_is_the_weights_content(tmp_path):
    """Other weights of the same size and modification time get another fingerprint (the defect: names, sizes and
    times only); convert-cut3r stores the hash beside the weights once, and it serves while they are unchanged."""
    from loc3r.priors.cut3r import FINGERPRINT_NAME, WEIGHTS_NAME, fingerprint_record, model_fingerprint

    model = tmp_path / "cut3r"
    model.mkdir()
    weights = model / WEIGHTS_NAME
    weights.write_bytes(b"\x00" * 64)
    first = model_fingerprint(model)
    st = weights.stat()
    weights.write_bytes(b"\x01" * 64)
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert model_fingerprint(model) != first  # same size and time, other content
    record = fingerprint_record(model)
    assert record["weights_sha256"] == model_fingerprint(model)
    (model / FINGERPRINT_NAME).write_text(json.dumps(record | {"weights_sha256": "stored"}))
    assert model_fingerprint(model) == "stored"  # the conversion's record, not read again
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 1))  # the weights touched since: hashed again
    assert model_fingerprint(model) == record["weights_sha256"]


def test_convert_cut3r_stores_the_fingerprint(tmp_path):
    from test_cut3r import FIXTURE

    from loc3r.priors import cut3r_checkpoint as ckpt
    from loc3r.priors.cut3r import FINGERPRINT_NAME, WEIGHTS_NAME, weights_sha256

    out = tmp_path / "A"
    ckpt.convert_cut3r(FIXTURE / "checkpoint.pth", out)
    assert json.loads((out / FINGERPRINT_NAME).read_text())["weights_sha256"] == weights_sha256(out / WEIGHTS_NAME)


def test_messages_name_the_file(tmp_path, capsys):
    """A checkpoint whose config.json is {} and a --video that is a folder: the line names the file."""
    from loc3r.data.video import read_video
    from loc3r.errors import Loc3rError
    from loc3r.model.config import Loc3RConfig

    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(Loc3rError, match=re.escape(f"{tmp_path / 'config.json'}: Loc3RConfig needs")):
        Loc3RConfig.load(tmp_path / "config.json")
    with pytest.raises(Loc3rError, match=re.escape(f"{tmp_path}: a directory, not a video file")):
        read_video(tmp_path, 8)


def test_eval_outputs_are_written_together_and_never_over_a_users_folder(tiny_checkpoint, synth_data, tmp_path,
                                                                          capsys):
    out = tmp_path / "eval"
    args = ["eval", "--checkpoint", str(tiny_checkpoint), "--data", str(synth_data), "--split", "val", "--out",
            str(out), "--plots", "1"]
    assert main(args) == 0
    first = sorted(p.name for p in out.iterdir())
    assert {"metrics.json", "predictions.jsonl", "report.md"} <= set(first)
    assert main(args) == 0  # a previous evaluation is replaced whole
    assert sorted(p.name for p in out.iterdir()) == first and not list(tmp_path.glob(".eval*"))
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("x")
    capsys.readouterr()
    assert main(args[:-3] + [str(mine), "--plots", "1"]) == 2
    assert "not empty and not a previous evaluation" in capsys.readouterr().err
    assert sorted(p.name for p in mine.iterdir()) == ["notes.txt"]
    empty = tmp_path / "empty_split"
    shutil.copytree(synth_data, empty)
    for f in (empty / "sqa_task" / "balanced").glob("*_val_*.json"):
        d = json.loads(f.read_text())
        f.write_text(json.dumps({k: [] if k in ("questions", "annotations") else v for k, v in d.items()}))
    assert main(["eval", "--checkpoint", str(tiny_checkpoint), "--data", str(empty), "--split", "val", "--out",
                 str(tmp_path / "e2")]) == 2
    assert "the val split of sqa3d has no questions" in capsys.readouterr().err


def test_infer_checks_every_text_first_and_builds_its_samples_a_batch_at_a_time(tiny_checkpoint, synth_data, tmp_path,
                                                                                capsys, monkeypatch):
    """An over-long question is named by its file and line before anything is answered; the video's frames are
    resized once for all questions (memory flat in their number), and the answers equal one question at a time."""
    from loc3r import infer

    scene = sorted((synth_data / "scans").iterdir())[0]
    video = ["--frames", str(scene / "color"), "--poses", str(scene / "pose")]
    questions = tmp_path / "q.jsonl"
    long = " ".join(["bed"] * 2000)
    questions.write_text(json.dumps({"question": "What is in the room?"}) + "\n" + json.dumps({"question": long}))
    assert main(["infer", "--checkpoint", str(tiny_checkpoint), *video, "--questions", str(questions)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"{questions}:2: situation + question are" in err[0]
    asked = ["What is in the room?", "What color is the bed?", "Is there a chair?", "How many objects are there?"]
    questions.write_text("".join(json.dumps({"question": q, "id": i}) + "\n" for i, q in enumerate(asked * 3)))
    calls = []
    resize = infer.resize_frames
    monkeypatch.setattr(infer, "resize_frames", lambda *a: calls.append(1) or resize(*a))
    assert main(["infer", "--checkpoint", str(tiny_checkpoint), *video, "--questions", str(questions), "--json",
                 "--batch-size", "5"]) == 0
    together = [json.loads(line) for line in capsys.readouterr().out.strip().splitlines()]
    assert len(calls) == 1 and len(together) == 12
    assert main(["infer", "--checkpoint", str(tiny_checkpoint), *video, "--question", asked[1], "--situation",
                 "I am standing in the room.", "--json"]) == 0
    alone = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert alone["answer"] == together[1]["answer"]
    assert np.allclose(alone["position_xy_m"], together[1]["position_xy_m"], atol=1e-4)


def test_an_empty_question_in_a_data_file_names_the_file(tmp_path):
    from loc3r.data import benchmarks as b
    from loc3r.errors import Loc3rError

    f = tmp_path / "ScanQA_v1.0_val.json"
    f.write_text(json.dumps([{"scene_id": "scene0000_00", "question_id": "q", "question": "  "}]))
    with pytest.raises(Loc3rError, match=re.escape(f"{f}: entry 0 field 'question' is empty")):
        b.read_scanqa(f)
