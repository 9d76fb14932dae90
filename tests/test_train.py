"""Training: the loss goes down, resume after a kill is exact, and two processes equal one with twice the batch."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from loc3r import parallel
from loc3r.cli import main as cli_main
from loc3r.command import dataclass_from_args
from loc3r.errors import Loc3rError
from loc3r.train import config as train_config
from loc3r.train import loop as train_mod
from loc3r.train import order
from loc3r.train.checkpoint import trainer_extra
from loc3r.train.order import micro_batch_indices


def train_args(data, out, *extra) -> train_config.TrainConfig:
    """The TrainConfig of `loc3r train` flags (through the generated parser)."""
    import argparse

    p = argparse.ArgumentParser()
    train_mod.add_arguments(p)
    # one loop start unless a test asks for more: the recipe's three triple the videos (tests of their own below)
    args = p.parse_args(["--data", str(data), "--out", str(out), "--quiet", "--frames", "4", "--loop-starts", "1",
                         *extra])
    return dataclass_from_args(train_config.TrainConfig, args)


def weights(ckpt_dir):
    return load_file(str(ckpt_dir / "model.safetensors"))


def test_data_order_is_a_function_of_position():
    # one process with batch 2B reads exactly what two processes with batch B read
    one = micro_batch_indices(16, 37, 5, 8, rank=0, world=1)
    two = micro_batch_indices(16, 37, 5, 4, rank=0, world=2) + micro_batch_indices(16, 37, 5, 4, rank=1, world=2)
    assert one == two
    epoch = [micro_batch_indices(p, 10, 0, 1, 0, 1)[0] for p in range(10)]
    assert sorted(epoch) == list(range(10))  # each epoch is a permutation


def test_every_flag_has_its_help_from_the_comment_beside_or_above_its_field():
    from loc3r.command import field_comments

    comments = field_comments(train_config.TrainConfig)
    assert comments["steps"] == "optimizer steps"  # beside, in the base class RunSettings
    assert comments["init"].startswith("tiny: the pretrained base to start from")  # the lines above
    assert comments["loop_starts"].endswith("1: the scan's own video only")
    assert comments["loop_starts_when"].startswith("the scans' own videos only")  # its own, not the block above
    flags = [f.name for f in dataclasses.fields(train_config.TrainConfig)]
    assert sorted(comments) == sorted(flags)


class _Units:
    """A stand-in data set and collator for StepBatches: item j is j, a micro-batch the list of its units."""

    def __init__(self, video_keys, kinds=None):
        self.video_keys = video_keys
        self.records = [SimpleNamespace(question_type=k) for k in kinds or ["what"] * len(video_keys)]

    def __getitem__(self, j):
        return j

    @staticmethod
    def grouped(groups):
        return groups


def test_relation_questions_join_with_the_loop_starts():
    """--relations-join: until the join, units of each scan's own video without its relation questions, cut again into
    units of up to Q (every other question of the own videos exactly once an epoch); from the join every unit."""
    kinds = ["left_right", "what", "navigation", "what", "distance", "what", "what", "left_right"]
    keys = [f"s{k}" for k in range(3) for _ in range(8)]
    keys, kinds = keys + [f"{k}@start1of2" for k in keys], kinds * 6
    units = order.video_groups(keys, 3, seed=0, starts=2)
    run = train_config.TrainConfig(data="d", out="o", steps=10, batch_size=2, loop_starts=2, loop_starts_when=0.5,
                                   relations_join=True)
    info = parallel.DistInfo(0, 1, 0, torch.device("cpu"))
    steps = order.StepBatches(run, _Units(keys, kinds), _Units(keys), units, 3, info, 0, 0)
    steps.join(3)
    own = sorted(map(tuple, steps.own_units))
    assert sorted(len(u) for u in own) == [1, 1, 1, 3, 3, 3]  # each scan's 4 other questions: a full unit and the rest
    assert sorted(i for u in own for i in u) == [i for i in range(24) if kinds[i] == "what"]
    assert all(len({keys[i] for i in u}) == 1 for u in own)  # one video each
    first = [tuple(u) for i in range(3) for u in steps[i][0]]
    assert sorted(first) == own  # one epoch of them in the first three steps
    after = [tuple(u) for i in range(3, 10) for u in steps[i][0]]
    assert set(after) <= set(map(tuple, units)) and any(kinds[i] != "what" for u in after for i in u)


def test_loop_starts_draw_the_scans_own_videos_until_the_join():
    # 3 scenes of 4 questions on 2 loop starts (LoopStarts: items 0-11 the scans' own videos, 12-23 the second
    # start), 2 questions a unit: joined at step 4, the first 4 steps draw the own videos' 6 units, then every unit
    keys = [f"s{k}" for k in range(3) for _ in range(4)]
    keys = keys + [f"{k}@start1of2" for k in keys]
    units = order.video_groups(keys, 2, seed=0, starts=2)
    run = train_config.TrainConfig(data="d", out="o", steps=10, batch_size=3, loop_starts=2, loop_starts_when=0.5)
    info = parallel.DistInfo(0, 1, 0, torch.device("cpu"))
    steps = order.StepBatches(run, _Units(keys), _Units(keys), units, 2, info, 0, 0)
    steps.join(4)
    first = [u for i in range(4) for u in steps[i][0]]
    assert all(g[0] < 12 for g in first) and len({tuple(g) for g in first}) == 6  # two epochs of the own videos
    # until the join, exactly what a run without loop starts draws (its units, its order)
    plain = order.StepBatches(dataclasses.replace(run, loop_starts=1, loop_starts_when=0.0), _Units(keys[:12]),
                              _Units(keys[:12]), order.video_groups(keys[:12], 2, seed=0), 2, info, 0, 0)
    assert [steps[i] for i in range(4)] == [plain[i] for i in range(4)]
    after = [u for i in range(4, 8) for u in steps[i][0]]
    assert sorted(map(tuple, after)) == sorted(map(tuple, units))  # the next 12 draws: one epoch of every unit
    for bad in (dict(loop_starts=0), dict(loop_starts=2, loop_starts_when=-1), dict(loop_starts=1, loop_starts_when=1),
                dict(loop_starts=2, loop_starts_when=0, relations_join=True)):
        with pytest.raises(Loc3rError, match="--loop-starts"):
            train_config.TrainConfig(data="d", out="o", **bad)
    for beta in (-0.1, 1.5):  # refused as the flag, before any data is read
        with pytest.raises(Loc3rError, match=r"--nll-beta must be in \[0, 1\]"):
            train_config.TrainConfig(data="d", out="o", nll_beta=beta)


def test_few_steps_lower_the_loss(synth_data, tmp_path):
    out = tmp_path / "run"
    train_mod.train(train_args(synth_data, out, "--steps", "30", "--batch-size", "4", "--log-every", "1",
                               "--lr", "2e-3", "--warmup", "3"))
    settings = json.loads((out / "settings.json").read_text())  # the resolved settings: recipe, flags, model
    assert (settings["recipe"], settings["steps"], settings["schedule"], settings["loop_starts"]) == (
        "tiny_demo", 30, "wsd", 1)
    assert settings["model"]["nll_beta"] == 0.5 and settings["model"]["num_frames"] == 4
    resolved = "bf16" if parallel.cpu_has_amx() else "off"  # what --autocast auto ran on this CPU
    assert (settings["autocast"], settings["autocast_resolved"]) == ("auto", resolved)
    card = (out / "checkpoints" / "step_0000030" / "README.md").read_text()  # the model card of the checkpoint
    assert "| camera-token prior | `poses`: at inference it needs a 4x4 camera-to-world pose per frame" in card
    assert "`tiny_demo`: 30 of 30 steps of 4 videos" in card and "--poses POSES_DIR" in card
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert len(log) == 30
    first, last = np.mean([r["loss"] for r in log[:5]]), np.mean([r["loss"] for r in log[-5:]])
    assert last < 0.8 * first, (first, last)
    assert (out / "latest.json").is_file() and (out / "checkpoints" / "step_0000030" / "model.safetensors").is_file()


def test_grad_accumulation_equals_large_batch(synth_data, tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    common = ["--steps", "3", "--lr", "1e-3", "--warmup", "1", "--autocast", "off"]  # fp32: sums to 2e-5
    train_mod.train(train_args(synth_data, a, "--batch-size", "4", *common))
    train_mod.train(train_args(synth_data, b, "--batch-size", "2", "--grad-accum", "2", *common))
    wa, wb = weights(a / "checkpoints" / "step_0000003"), weights(b / "checkpoints" / "step_0000003")
    for k in wa:
        torch.testing.assert_close(wa[k], wb[k], atol=2e-5, rtol=0)


@pytest.fixture
def one_thread():
    """Both processes of a bitwise comparison on one intra-op thread: with two, the shared-prefix backward's
    reductions may be summed in another order in this process than in a fresh one (measured: last-bit differences)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield {**os.environ, "OMP_NUM_THREADS": "1"}
    torch.set_num_threads(threads)


def test_resume_after_kill_is_exact(synth_data, tmp_path, one_thread):
    full, killed = tmp_path / "full", tmp_path / "killed"
    common = ["--steps", "8", "--batch-size", "2", "--save-every", "2", "--lr", "1e-3", "--warmup", "2", "--keep", "8",
              "--log-every", "1"]
    train_mod.train(train_args(synth_data, full, *common))

    cmd = [sys.executable, "-m", "loc3r.train", "--data", str(synth_data), "--out", str(killed), "--quiet",
           "--frames", "4", "--loop-starts", "1", *common]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=one_thread)
    deadline = time.time() + 120
    while time.time() < deadline and proc.poll() is None:
        if (killed / "latest.json").exists():
            os.kill(proc.pid, signal.SIGKILL)
            break
        time.sleep(0.02)
    assert proc.wait() == -signal.SIGKILL, "training finished before it could be killed"
    step_at_kill = json.loads((killed / "latest.json").read_text())["step"]
    assert step_at_kill < 8
    train_mod.train(train_args(synth_data, killed, *common, "--resume"))
    wf, wk = weights(full / "checkpoints" / "step_0000008"), weights(killed / "checkpoints" / "step_0000008")
    for k in wf:
        assert torch.equal(wf[k], wk[k]), k
    # a save interrupted by a kill leaves a temporary; the next save of the run removes it
    stale = killed / "checkpoints" / ".step_0000004.abc.tmp"
    stale.mkdir()
    train_mod.train(train_args(synth_data, killed, *common[:1], "9", *common[2:], "--resume"))
    assert not stale.exists()
    # the interrupted run's log continues where the checkpoint left it
    steps = [json.loads(line)["step"] for line in (killed / "log.jsonl").read_text().splitlines()]
    assert steps == list(range(1, 10))  # each step once: what the killed run logged after its checkpoint is dropped


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_two_processes_equal_one_with_double_batch(synth_data, tmp_path):
    one, two = tmp_path / "one", tmp_path / "two"
    common = ["--steps", "3", "--lr", "1e-3", "--warmup", "1", "--device", "cpu", "--autocast", "off"]  # fp32 sums
    train_mod.train(train_args(synth_data, one, "--batch-size", "4", *common))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "loc3r.train",
           "--data", str(synth_data), "--out", str(two), "--quiet", "--frames", "4", "--batch-size", "2", *common]
    res = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-3000:]
    w1, w2 = weights(one / "checkpoints" / "step_0000003"), weights(two / "checkpoints" / "step_0000003")
    for k in w1:
        torch.testing.assert_close(w1[k], w2[k], atol=2e-5, rtol=0)


def test_bad_train_inputs(tmp_path, capsys):
    assert cli_main(["train", "--data", str(tmp_path / "nope"), "--out", str(tmp_path / "r"), "--steps", "1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "v1_balanced_questions_train_scannetv2.json: file not found" in err[0]


def test_loop_starts_join_when_the_orientation_is_learned_and_resume_exactly(synth_data, tmp_path, one_thread, capsys):
    """--loop-starts-when L: the scans' own videos until the orientation loss, averaged over the last 20 steps, is
    below L, then every loop start, and the relation heads' supervision (--relation-weight, here with the egocentric
    readout, a layer added to the base and the relation questions joining too) with them, and the added layer
    (--added-layers-join: the identity it started as until then). A run resumed before the join (its loss window
    restored) and one resumed after it (the join step restored) end with the weights of the uninterrupted run."""
    common = ["--steps", "23", "--batch-size", "2", "--lr", "1e-3", "--warmup", "2", "--loop-starts", "2",
              "--loop-starts-when", "1e9", "--cache-dir", str(tmp_path / "cache"), "--keep", "8",
              "--relation-weight", "0.5", "--log-every", "1", "--relations-join", "--added-layers", "1",
              "--relation-readout", "--relation-egocentric", "--added-layers-join"]
    full, split = tmp_path / "full", tmp_path / "split"
    train_mod.train(train_args(synth_data, full, *common, "--save-every", "23"))
    printed = capsys.readouterr().out
    assert "step 20: the orientation loss" in printed  # the first full window
    # the base's grounding and anchor heads keep their queries where the base has them, not counted from the end
    assert "kept from the base (no gradient): layer 2 query head 0, layer 3 query head 1" in printed
    logged = [json.loads(line) for line in (full / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in logged if "relation_names" in r] == [21, 22, 23]
    train_mod.train(train_args(synth_data, split, *common, "--save-every", "10"))
    assert trainer_extra(split / "checkpoints" / "step_0000020")["joined"] == 20
    assert trainer_extra(split / "checkpoints" / "step_0000010")["joined"] is None
    reference = weights(full / "checkpoints" / "step_0000023")
    before, at_join = weights(split / "checkpoints" / "step_0000010"), weights(split / "checkpoints" / "step_0000020")
    added = [k for k in reference if ".layers.4." in k]  # the base's 4 layers, then the added one
    assert added and all(torch.equal(before[k], at_join[k]) for k in added)  # untouched until the join
    assert not at_join[next(k for k in added if k.endswith("o_proj.weight"))].any()  # the identity it started as
    assert not all(torch.equal(at_join[k], reference[k]) for k in added)  # then it learns
    assert not all(torch.equal(before[k], at_join[k]) for k in reference if ".layers.3." in k)  # the base's did
    for resume_at in (10, 20):
        (split / "latest.json").write_text(json.dumps({"step": resume_at, "path": f"checkpoints/step_{resume_at:07d}"}))
        train_mod.train(train_args(synth_data, split, *common, "--save-every", "10", "--resume"))
        resumed = weights(split / "checkpoints" / "step_0000023")
        for k in reference:
            assert torch.equal(reference[k], resumed[k]), (resume_at, k)
    at = common.index("--added-layers")  # resumed without it, the added layer would learn at the base's rate
    with pytest.raises(Loc3rError, match="--resume with added_layers = 0, but the checkpoint was trained with 1"):
        train_mod.train(train_args(synth_data, split, *common[:at], *common[at + 2:-1], "--resume"))
    with pytest.raises(Loc3rError, match="--resume with added_layers_join = False, but the checkpoint was trained "
                                         "with True"):
        train_mod.train(train_args(synth_data, split, *common[:-1], "--resume"))
    with pytest.raises(Loc3rError, match="--added-layers-join needs --added-layers N > 0 and --loop-starts-when"):
        train_config.TrainConfig(data="d", out="o", loop_starts=2, loop_starts_when=0.5, added_layers_join=True)
    for bad in (dict(loop_starts=2, loop_starts_when=-1), dict(loop_starts=1, loop_starts_when=0.5)):
        with pytest.raises(Loc3rError, match="--loop-starts"):
            train_config.TrainConfig(data="d", out="o", **bad)


@pytest.mark.skipif(not torch.distributed.is_available(), reason="no torch.distributed")
def test_fsdp2_with_activation_checkpointing_saves_and_resumes(synth_data, tmp_path):
    """The 7B's path (FSDP2 + activation checkpointing + bf16 compute) on the tiny model, two CPU processes:
    the gathered full checkpoint loads in one process, and training resumes from it."""
    from loc3r.train.checkpoint import load_model

    run = tmp_path / "fsdp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2", "-m", "loc3r.train",
            "--data", str(synth_data), "--out", str(run), "--quiet", "--frames", "4", "--batch-size", "2",
            "--parallel", "fsdp", "--activation-checkpointing", "--device", "cpu", "--loop-starts", "1"]
    for steps, extra in (("2", []), ("3", ["--resume"])):
        res = subprocess.run([*base, "--steps", steps, *extra], env=env, capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
    assert "resumed from" in res.stdout
    before = weights(run / "checkpoints" / "step_0000002")
    model = load_model(run / "checkpoints" / "step_0000003")
    after = model.checkpoint_tensors()
    assert set(before) == set(after)
    assert any(not torch.equal(before[k], after[k]) for k in before)  # the resumed step trained


def test_data_loader_workers_change_nothing(synth_data, tmp_path, one_thread):
    """Batches built by two DataLoader workers, and a run resumed with them, equal the in-process run bit for bit."""
    common = ["--batch-size", "2", "--lr", "1e-3", "--warmup", "1", "--save-every", "2"]
    plain, workers = tmp_path / "plain", tmp_path / "workers"
    train_mod.train(train_args(synth_data, plain, "--steps", "4", *common, "--workers", "0"))
    train_mod.train(train_args(synth_data, workers, "--steps", "2", *common, "--workers", "2"))
    train_mod.train(train_args(synth_data, workers, "--steps", "4", *common, "--workers", "2", "--resume"))
    wp, ww = weights(plain / "checkpoints" / "step_0000004"), weights(workers / "checkpoints" / "step_0000004")
    for k in wp:
        assert torch.equal(wp[k], ww[k]), k


def test_resume_refuses_contradicting_flags(synth_data, tmp_path):
    run = tmp_path / "run"
    train_mod.train(train_args(synth_data, run, "--steps", "1", "--batch-size", "2"))
    with pytest.raises(Loc3rError, match="--resume with num_frames = 3, but the checkpoint was trained with 4"):
        train_mod.train(train_args(synth_data, run, "--steps", "2", "--batch-size", "2", "--resume", "--frames", "3"))
    with pytest.raises(Loc3rError, match="lambda_layout = 0.0, but the checkpoint was trained with 1.0"):
        train_mod.train(train_args(synth_data, run, "--steps", "2", "--batch-size", "2", "--resume", "--no-layout"))
    with pytest.raises(Loc3rError, match="--resume with batch_size = 3, but the checkpoint was trained with 2"):
        train_mod.train(train_args(synth_data, run, "--steps", "2", "--batch-size", "3", "--resume"))
    with pytest.raises(Loc3rError, match="loop_starts = 2, but the checkpoint was trained with 1"):
        train_mod.train(train_args(synth_data, run, "--steps", "2", "--batch-size", "2", "--resume", "--loop-starts",
                                   "2"))
    with pytest.raises(Loc3rError, match="--resume with seed = 1, but the checkpoint was trained with 0"):
        train_mod.train(train_args(synth_data, run, "--steps", "2", "--batch-size", "2", "--resume", "--seed", "1"))
    train_mod.train(train_args(synth_data, run, "--steps", "2", "--batch-size", "2", "--resume", "--frames", "4"))


def test_training_mixture_manifest(synth_data, tmp_path, one_thread):
    """--data sqa3d=DIR --data scanqa=DIR:0.5 --data msqa=DIR: the manifest counts each source's questions, and a
    lone `--data DIR` is the same run as `--data sqa3d=DIR`."""
    run = tmp_path / "mix"
    train_mod.train(train_args(f"sqa3d={synth_data}", run, "--data", f"scanqa={synth_data}:0.5", "--data",
                               f"msqa={synth_data}", "--steps", "2", "--batch-size", "2"))
    manifest = {m["source"]: m for m in json.loads((run / "manifest.json").read_text())}
    scanqa = json.loads((synth_data / "scanqa" / "ScanQA_v1.0_train.json").read_text())
    msqa = json.loads((synth_data / "msqa" / "msqa_scannet_train.json").read_text())
    assert manifest["scanqa"]["of"] == len(scanqa) and manifest["scanqa"]["questions"] == round(0.5 * len(scanqa))
    assert manifest["scanqa"]["situated"] == 0 and manifest["msqa"]["situated"] == manifest["msqa"]["questions"]
    assert manifest["msqa"]["questions"] == len(msqa) and manifest["sqa3d"]["layout_supervision"] > 0
    plain, named = tmp_path / "plain", tmp_path / "named"
    train_mod.train(train_args(synth_data, plain, "--steps", "1", "--batch-size", "2"))
    train_mod.train(train_args(f"sqa3d={synth_data}", named, "--steps", "1", "--batch-size", "2"))
    wp, wn = weights(plain / "checkpoints" / "step_0000001"), weights(named / "checkpoints" / "step_0000001")
    assert all(torch.equal(wp[k], wn[k]) for k in wp)
    with pytest.raises(Loc3rError, match="unknown data set 'scannet'"):
        train_mod.train(train_args(f"scannet={synth_data}", tmp_path / "bad", "--steps", "1"))


def test_loop_starts_train_and_bad_values_are_refused(synth_data, tmp_path, capsys):
    out = tmp_path / "run"
    assert cli_main(["train", "--data", str(synth_data), "--out", str(out), "--steps", "2", "--batch-size", "2",
                     "--frames", "4", "--loop-starts", "2", "--cache-dir", str(tmp_path / "cache"), "--quiet"]) == 0
    assert "on 2 loop starts" in capsys.readouterr().out
    caches = [p.name for p in (tmp_path / "cache").glob("*.npz")]
    assert len(caches) == 2 * sum(not p.endswith("_start1of2.npz") for p in caches) > 0
    assert cli_main(["train", "--data", str(synth_data), "--out", str(tmp_path / "r2"), "--loop-starts", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--loop-starts must be >= 1" in err[0] and not (tmp_path / "r2").exists()
    assert cli_main(["train", "--data", f"sqa3d={synth_data}:0.5", "--out", str(tmp_path / "r3"),
                     "--loop-starts", "2"]) == 2
    assert "--loop-starts 2: for one SQA3D-format root" in capsys.readouterr().err


def test_wsd_schedule_holds_the_peak_then_decays_to_zero(synth_data, tmp_path, capsys):
    """--schedule wsd: linear warm-up, the peak rate held, then a cosine decay to 0 over the last --decay steps
    (the rate logged after each step is the next step's); a decay that leaves no room is refused."""
    out = tmp_path / "run"
    train_mod.train(train_args(synth_data, out, "--steps", "8", "--batch-size", "1", "--log-every", "1", "--lr", "1e-3",
                               "--init-lr", "1e-3", "--warmup", "2", "--schedule", "wsd", "--decay", "4"))
    lr = [json.loads(line)["lr"] for line in (out / "log.jsonl").read_text().splitlines()]
    decay = [1e-3 * 0.5 * (1 + np.cos(np.pi * k / 4)) for k in (1, 2, 3, 4)]  # after steps 5-8
    np.testing.assert_allclose(lr, [0.5e-3, 1e-3, 1e-3, 1e-3, *decay], atol=1e-12)  # warm-up: step 1 of 2
    assert cli_main(["train", "--data", str(synth_data), "--out", str(tmp_path / "bad"), "--steps", "8",
                     "--warmup", "2", "--schedule", "wsd", "--decay", "7"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--decay 7 is 7 of 8 steps" in err[0] and not (tmp_path / "bad").exists()
    # a fraction of a short run (the demo's 0.3 at --steps 2) keeps one step of decay; of a long one, its share
    short = train_config.TrainConfig(data=synth_data, out=tmp_path / "short", steps=2, schedule="wsd", decay=0.3)
    assert short.decay_steps == 1
    assert dataclasses.replace(short, steps=900).decay_steps == 270
