"""`loc3r check-data`: the whole mixture checked without building caches; counts compared with the data sets' own,
every problem that would stop a run listed (exit 2), warnings that do not (exit 0); `train` failing fast on them."""

import json
import math
import shutil
from pathlib import Path

import pytest

from loc3r.cli import main
from loc3r.data.dataset import is_situated
from loc3r.data.sqa3d import read_sqa3d

RELEASE = Path(__file__).resolve().parents[2] / "shared" / "data" / "sqa3d"  # ../shared beside the repository
RELEASE = next((p for p in (RELEASE, Path("/work/shared/data/sqa3d")) if p.is_dir()), RELEASE)


def check(tmp_path, *argv) -> tuple[int, dict]:
    out = tmp_path / "report.json"
    rc = main(["check-data", *argv, "--json", str(out)])
    return rc, json.loads(out.read_text())


def split_of(report: dict, benchmark: str, split: str) -> dict:
    return next(r for r in report["splits"] if r["benchmark"] == benchmark and r["split"] == split)


def copy_root(synth_data, tmp_path) -> Path:
    """A copy of the shared synthetic rooms that a test may break."""
    root = tmp_path / "data"
    shutil.copytree(synth_data, root, ignore=shutil.ignore_patterns("cache"))
    return root


def test_the_real_sqa3d_test_split_without_its_scans(tmp_path, capsys):
    """The released test split (read as it lies, the files directly in the folder): 3,519 questions on 67 scenes,
    none of whose scans is there, each listed with its questions; no train split; exit 2."""
    assert RELEASE.is_dir(), f"the SQA3D test split is expected at {RELEASE}"
    rc, report = check(tmp_path, "--data", str(RELEASE))
    text = capsys.readouterr().out
    assert rc == 2
    records = read_sqa3d(RELEASE, "test")
    test = split_of(report, "sqa3d", "test")
    assert test["questions"] == len(records) == 3519
    assert test["situated"] == sum(is_situated(r.situation) for r in records)
    per_scene = {s: sum(r.scene_id == s for r in records) for s in {r.scene_id for r in records}}
    assert test["missing_scenes"] == per_scene and len(per_scene) == 67
    assert "67 scenes missing" in text and "no scans/ or posed_images/ folder" in text
    assert all(f"{s} ({n})" in text for s, n in per_scene.items())  # every scene listed with its questions
    assert any("no train split" in p for p in report["problems"])


def test_a_good_root_passes_with_the_data_sets_counts(synth_data, tmp_path, capsys):
    from loc3r.data.cache import scene_cache
    from loc3r.model.config import Loc3RConfig
    from loc3r.model.processor import make_dataset

    rc, report = check(tmp_path, "--data", str(synth_data), "--epochs", "2", "--batch-size", "2",
                       "--questions-per-video", "3")
    assert rc == 0, report["problems"]
    assert "no problems" in capsys.readouterr().out
    config = Loc3RConfig.tiny()
    for split in ("train", "val", "test"):
        dataset = make_dataset(config, synth_data, split)
        row = split_of(report, "sqa3d", split)
        assert row["questions"] == len(dataset)
        assert row["situated"] == sum(is_situated(r.situation) for r in dataset.records)
        assert row["scene_ids"] == dataset.scene_ids and not row["missing_scenes"] and not row["few_poses"]
    # units: a scene's questions in groups of 3 (brute force), 2 epochs of 2 videos a step
    records = make_dataset(config, synth_data, "train").records
    units = sum(math.ceil(sum(r.scene_id == s for r in records) / 3) for s in {r.scene_id for r in records})
    run = report["run"]
    assert run["units"] == units and run["steps"] == math.ceil(2 * units / 2)
    assert run["video_tokens"] == config.video_placeholder_len
    # the cache estimate against a cache file built for real (uncompressed npz: a few headers apart)
    path = tmp_path / "cache"
    scene_cache(synth_data, records[0].scene_id, config.num_frames, config.image_size, config.frame_grid, path)
    size = next(path.glob("*.npz")).stat().st_size
    assert abs(run["cache_bytes_per_video"] - size) < 0.05 * size
    assert run["cache_videos_train"] == 3 * len({r.scene_id for r in records})  # tiny_demo: 3 loop starts


def test_a_missing_scene_is_listed_and_train_stops_in_one_line(synth_data, tmp_path, capsys):
    root = copy_root(synth_data, tmp_path)
    records = read_sqa3d(root, "train")
    gone = records[0].scene_id
    shutil.rmtree(root / "scans" / gone)
    rc, report = check(tmp_path, "--data", str(root))
    assert rc == 2
    assert split_of(report, "sqa3d", "train")["missing_scenes"] == {gone: sum(r.scene_id == gone for r in records)}
    assert gone in capsys.readouterr().out
    rc = main(["train", "--data", str(root), "--out", str(tmp_path / "run"), "--steps", "1", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert gone in err and "1 scenes missing" in err and "loc3r check-data" in err
    assert not (root / "cache").exists()  # failed before any cache was built


def test_a_scan_with_most_poses_lost_is_flagged(synth_data, tmp_path, capsys):
    root = copy_root(synth_data, tmp_path)
    scene = read_sqa3d(root, "train")[0].scene_id
    poses = sorted((root / "scans" / scene / "pose").glob("*.txt"), key=lambda p: int(p.stem))
    for p in poses[2:]:
        p.write_text("\n".join(["-inf -inf -inf -inf"] * 4) + "\n")
    rc, report = check(tmp_path, "--data", str(root))
    assert rc == 2
    assert split_of(report, "sqa3d", "train")["few_poses"] == {scene: f"2 of {len(poses)}"}
    assert main(["train", "--data", str(root), "--out", str(tmp_path / "run"), "--steps", "1", "--quiet"]) == 2
    assert "fewer valid poses" in capsys.readouterr().err


def test_a_situation_outside_its_room_warns_without_stopping(synth_data, tmp_path, capsys):
    root = copy_root(synth_data, tmp_path)
    annotations = root / "sqa_task" / "balanced" / "v1_balanced_sqa_annotations_train_scannetv2.json"
    data = json.loads(annotations.read_text())
    data["annotations"][0]["position"]["x"] = 40.0
    annotations.write_text(json.dumps(data))
    rc, report = check(tmp_path, "--data", str(root))
    assert rc == 0 and not report["problems"]
    outside = split_of(report, "sqa3d", "train")["outside"]
    assert len(outside) == 1 and f"question {data['annotations'][0]['question_id']}" in outside[0]
    assert "WARNINGS (a run goes on)" in capsys.readouterr().out


def test_a_mixture_with_a_missing_vsibench_video(synth_data, tmp_path):
    from loc3r.data.benchmarks import read_vsibench
    from loc3r.model.config import Loc3RConfig
    from loc3r.model.processor import Source, make_training_set

    root = copy_root(synth_data, tmp_path)
    shutil.copy(root / "vsibench" / "test.jsonl", root / "vsibench" / "train.jsonl")  # the rooms have no VSI train
    rows = read_vsibench(root / "vsibench" / "train.jsonl")
    gone = rows[0].video
    (root / "vsibench" / gone).unlink()
    data = [f"sqa3d={root}", f"scanqa={root}:0.5", f"msqa={root}", f"vsibench={root}:0.5"]
    argv = [a for d in data for a in ("--data", d)] + ["--prior", "none", "--loop-starts", "1"]
    rc, report = check(tmp_path, *argv)
    assert rc == 2
    for split in ("train", "test"):
        assert split_of(report, "vsibench", split)["missing_scenes"] == {gone: sum(r.video == gone for r in rows)}
    assert [p for p in report["problems"] if gone in p and "videos missing" in p]
    # per source: the questions drawn and the situated ones, as the training set's own manifest counts them
    config = Loc3RConfig.tiny(prior="none")
    manifest = make_training_set(config, [Source.parse(d) for d in data]).manifest()
    for row in manifest:
        train = split_of(report, row["source"], "train")
        assert (train["used"], train["questions"]) == (row["questions"], row["of"])
    assert all(split_of(report, b, "train")["situated"] > 0 for b in ("sqa3d", "msqa"))
    assert all(split_of(report, b, "train")["situated"] == 0 for b in ("scanqa", "vsibench"))


def test_train_refuses_the_same_mixture_in_one_line(synth_data, tmp_path, capsys):
    root = copy_root(synth_data, tmp_path)
    shutil.rmtree(root / "scans" / read_sqa3d(root, "train")[0].scene_id)
    rc = main(["train", "--data", f"sqa3d={root}", "--data", f"scanqa={root}", "--loop-starts", "1", "--out",
               str(tmp_path / "run"), "--steps", "1", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "sqa3d train" in err and "scanqa train" in err


@pytest.mark.parametrize("argv, message", [
    (["--world-size", "0"], "--world-size must be >= 1"),
    (["--recipe", "llava_video_7b_paper", "--preset", "tiny"], "trains the llava_video_7b preset"),
])
def test_bad_flags_are_one_line(synth_data, argv, message, capsys):
    assert main(["check-data", "--data", str(synth_data), *argv]) == 2
    assert message in capsys.readouterr().err
