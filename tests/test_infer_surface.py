"""What `loc3r infer` refuses before computing (one line each), what it says when it adapts the input, and the
command line's own surface (--version, the commands listed one per line)."""

import json
import os
import shutil
import subprocess
import sys

import pytest

from loc3r.assets import TINY_BASE
from loc3r.cli import main


@pytest.fixture()
def scene(synth_data):
    return sorted((synth_data / "scans").iterdir())[0]


def run(capsys, *argv):
    code = main(["infer", *argv])
    out, err = capsys.readouterr()
    return code, out, err.strip().splitlines()


def test_refusals_come_before_any_computing(tiny_checkpoint, scene, tmp_path, capsys):
    frames, poses = str(scene / "color"), str(scene / "pose")
    code, _, err = run(capsys, "--checkpoint", str(tiny_checkpoint), "--frames", frames, "--question", "What is here?")
    assert code == 2 and len(err) == 1 and "trained with the poses prior, it needs a camera pose per frame: pass " \
        "--poses DIR" in err[0] and "cut3r or none prior" in err[0]
    code, _, err = run(capsys, "--checkpoint", str(TINY_BASE), "--frames", frames, "--poses", poses, "--question",
                       "What is in the room?")
    assert code == 2 and len(err) == 1 and "a base never trained for localization" in err[0]
    # paths first: a missing checkpoint is named even when the question flags are wrong too
    code, _, err = run(capsys, "--checkpoint", str(tmp_path / "nope"), "--frames", frames)
    assert code == 2 and err == [f"loc3r: error: {tmp_path / 'nope'}: no such checkpoint or run directory"]
    code, _, err = run(capsys, "--checkpoint", str(tiny_checkpoint), "--frames", str(tmp_path / "none"), "--question",
                       "?")
    assert code == 2 and f"{tmp_path / 'none'}: no such file or directory" in err[0]


def test_unknown_words_are_named_unless_allowed(tiny_checkpoint, scene, capsys):
    video = ["--checkpoint", str(tiny_checkpoint), "--frames", str(scene / "color"), "--poses", str(scene / "pose")]
    code, _, err = run(capsys, *video, "--situation", "I am next to the purple couch.", "--question",
                       "Where is the fridge?")
    assert code == 2 and len(err) == 1 and "its tokenizer does not know" in err[0]
    assert "couch" in err[0] and "fridge?" in err[0] and "--allow-unknown-words" in err[0]
    code, out, _ = run(capsys, *video, "--situation", "I am next to the purple couch.", "--question",
                       "Where is the fridge?", "--allow-unknown-words")
    assert code == 0 and "word(s) unknown to the model" in out and "answer:" in out


def test_a_question_without_situation_gets_no_pose(tiny_checkpoint, scene, tmp_path, capsys):
    video = ["--checkpoint", str(tiny_checkpoint), "--frames", str(scene / "color"), "--poses", str(scene / "pose")]
    code, out, _ = run(capsys, *video, "--question", "What is in the room?")
    assert code == 0 and "no --situation: the question is not situated" in out and "facing:" not in out
    code, out, _ = run(capsys, *video, "--question", "What is in the room?", "--json")
    assert code == 0 and json.loads(out.strip().splitlines()[-1])["situated"] is False


def test_fewer_frames_than_the_model_takes_are_said(tiny_checkpoint, scene, tmp_path, capsys):
    few = tmp_path / "few"
    (few / "color").mkdir(parents=True)
    (few / "pose").mkdir()
    for f in sorted((scene / "color").iterdir(), key=lambda p: int(p.stem))[:3]:
        shutil.copy(f, few / "color" / f.name)
        shutil.copy(scene / "pose" / f"{f.stem}.txt", few / "pose" / f"{f.stem}.txt")
    code, out, _ = run(capsys, "--checkpoint", str(tiny_checkpoint), "--frames", str(few / "color"), "--poses",
                       str(few / "pose"), "--situation", "I am standing in the room.", "--question",
                       "What is in the room?")
    assert code == 0 and f"note: {few / 'color'} has 3 frames, the model takes 4: frames are repeated" in out


def test_a_closed_output_is_not_a_traceback_and_the_page_is_still_written(tiny_checkpoint, scene, tmp_path):
    questions = tmp_path / "q.jsonl"
    questions.write_text("".join(json.dumps({"question": "What is in the room?", "id": i}) + "\n" for i in range(300)))
    view = tmp_path / "view.html"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = (f"{sys.executable} -m loc3r.cli infer --checkpoint {tiny_checkpoint} --frames {scene / 'color'} "
           f"--poses {scene / 'pose'} --questions {questions} --json --batch-size 32 --view {view} | head -n 1")
    res = subprocess.run(["bash", "-c", cmd], env=env, capture_output=True, text=True, timeout=300)
    assert "Traceback" not in res.stderr and len(res.stdout.splitlines()) == 1, res.stderr[-2000:]
    assert view.is_file() and f"wrote {view} (interactive)" in res.stderr


def test_questions_get_one_plot_each_and_it_is_said(tiny_checkpoint, scene, tmp_path, capsys):
    questions = tmp_path / "q.jsonl"
    questions.write_text(json.dumps({"situation": "I am standing next to the bed.", "question": "What is on my left?"})
                         + "\n" + json.dumps({"question": "What is in the room?"}) + "\n")
    plot = tmp_path / "p.png"
    assert main(["infer", "--checkpoint", str(tiny_checkpoint), "--frames", str(scene / "color"), "--poses",
                 str(scene / "pose"), "--questions", str(questions), "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    paths = [tmp_path / "p_0.png", tmp_path / "p_1.png"]
    assert f"wrote 2 plots, one per question: {paths[0]} ... {paths[1]}" in out
    assert all(p.is_file() for p in paths) and not plot.exists()


def test_version_and_the_commands_one_per_line(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--version"])
    assert e.value.code == 0 and capsys.readouterr().out.strip() == "loc3r 0.1.0"
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "\n  train                train Loc3R-VLM" in out and "\n  infer                answer a situated" in out
