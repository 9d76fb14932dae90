"""CUT3R camera-token prior: parity with the official implementation's outputs (fixture A), safe loading, config.

Fixture A (shared/fixtures/cut3r/A beside the repository, see its README) holds an official-format checkpoint with random weights and
the official outputs for 4 frames of 64x64. Tolerance 3e-5 (rtol 0), as the fixture suggests; float noise is ~4e-6.
"""

import argparse
import functools
import json
import os
import pickle
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pytest
import torch

from loc3r.errors import Loc3rError
from loc3r.priors import cut3r_checkpoint as ckpt
from loc3r.priors.cut3r import Cut3r, Cut3rConfig, Cut3rPrior, load_cached_tokens, preprocess
from loc3r.priors.cut3r_blocks import Rope2D

# shared/ stands beside the repository (the developers' checkout and CI's clone alike)
FIXTURE = next((p for p in (Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "cut3r" / "A",
                            Path("/work/shared/fixtures/cut3r/A")) if p.exists()),
               Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "cut3r" / "A")
ATOL = 3e-5


def needs_fixture(test):
    """The parity tests need fixture A: a missing fixture is a failure, never a silent skip."""
    def run(*args, **kwargs):
        assert FIXTURE.exists(), f"CUT3R fixture A not found at {FIXTURE} (expected ../shared beside the repository)"
        return test(*args, **kwargs)
    return functools.wraps(test)(run)


@pytest.fixture(scope="module")
def converted(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cut3r") / "A"
    ckpt.convert_cut3r(FIXTURE / "checkpoint.pth", out)
    return out


@pytest.fixture(scope="module")
def official_parts():
    return ckpt.read_official_checkpoint(FIXTURE / "checkpoint.pth")


def save_official(path: Path, model_string: str, state_dict: dict) -> Path:
    torch.save({"args": argparse.Namespace(model=model_string), "model": state_dict}, path)
    return path


def max_diff(a, b) -> float:
    return float(np.abs(np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)).max())


# ---------------------------------------------------------------- parity with the official outputs

@needs_fixture
def test_parity_on_official_inputs(converted):
    model = Cut3r.from_pretrained(converted)
    out = model(torch.from_numpy(np.load(FIXTURE / "inputs.npy")), keep_intermediates=True)
    extras = np.load(FIXTURE / "extras.npz")
    assert max_diff(out.camera_tokens, np.load(FIXTURE / "camera_tokens.npy")) < ATOL
    assert max_diff(out.camera_pose, np.load(FIXTURE / "camera_pose.npy")) < ATOL
    assert max_diff(out.c2w, extras["camera_c2w"]) < ATOL
    assert max_diff(out.intermediates["pose_in"], extras["decoder_in_pose_token"]) < ATOL
    assert max_diff(out.intermediates["state"], extras["state_feat"]) < ATOL
    assert max_diff(model.config.state_positions(), extras["state_pos"]) == 0
    # the encoder output itself is noisier: float16 rounding flips of q / k (up to ~4e-5 at magnitude ~4)
    assert max_diff(out.intermediates["enc_feat"], extras["enc_feat"]) < 1e-4


@needs_fixture
def test_parity_from_uint8_frames(converted):
    frames = np.load(FIXTURE / "frames.npy")
    assert torch.equal(preprocess(frames, size=None), torch.from_numpy(np.load(FIXTURE / "inputs.npy")))
    prior = Cut3rPrior(converted, resize=False)
    assert prior.dim == 48
    tokens = prior.tokens_for_frames(frames)
    assert tokens.shape == (4, 48) and tokens.dtype == torch.float32
    assert max_diff(tokens, np.load(FIXTURE / "camera_tokens.npy")) < ATOL
    _, poses, c2w = prior.model.camera_tokens(preprocess(frames, size=None))
    assert max_diff(poses, np.load(FIXTURE / "camera_pose.npy")) < ATOL
    assert c2w.shape == (4, 4, 4)


@needs_fixture
def test_low_precision_autocast_stays_close(converted):
    model = Cut3r.from_pretrained(converted)
    x = torch.from_numpy(np.load(FIXTURE / "inputs.npy"))
    tokens = model(x, dtype=torch.bfloat16).camera_tokens
    assert tokens.shape == (4, 48) and torch.isfinite(tokens).all()
    assert max_diff(tokens.float(), np.load(FIXTURE / "camera_tokens.npy")) < 0.1  # bf16: ~3 digits (measured 0.02)


def test_rope_is_a_relative_rotation():
    """<rope(q, p), rope(k, p')> depends on p - p' only, for negative positions too; norms are kept."""
    g = torch.Generator().manual_seed(0)
    q, k = torch.randn(2, 1, 2, 1, 16, generator=g)

    def rope(x, row, col, via_fp16=False):
        return Rope2D(torch.tensor([[[row, col]]]), 100.0)(x, via_fp16)

    dot_a = (rope(q, -1, -1) * rope(k, 2, 3)).sum()
    dot_b = (rope(q, 3, 4) * rope(k, 6, 8)).sum()
    assert torch.allclose(dot_a, dot_b, atol=1e-5)
    assert torch.allclose(rope(q, 6, 8).norm(), q.norm(), atol=1e-5)
    assert not torch.allclose(rope(q, -1, -1), q)  # (-1, -1) is a real rotation, not the identity
    assert not torch.allclose(rope(q, 2, 0), rope(q, 0, 2))  # rows and columns turn different channels
    half = rope(q, 6, 8, via_fp16=True)
    assert half.dtype == torch.float32 and torch.equal(half, half.half().float())


# ---------------------------------------------------------------- safe reading

class _RunsCode:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


def test_refuses_checkpoint_that_would_run_code(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"args": _RunsCode(marker), "model": {}}, path)
    with pytest.raises(Loc3rError, match="posix.system|os.system"):
        ckpt.convert_cut3r(path, tmp_path / "out")
    assert not marker.exists() and not (tmp_path / "out").exists()
    torch.load(path, weights_only=False)  # control: unrestricted unpickling does run it
    assert marker.exists()


def test_refuses_plain_pickle_and_garbage(tmp_path):
    marker = tmp_path / "pwned"
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(_RunsCode(marker)))
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    for name in ("evil.pkl", "junk.pth", "missing.pth"):
        with pytest.raises(Loc3rError, match=name):
            ckpt.convert_cut3r(tmp_path / name, tmp_path / "out")
    assert not marker.exists()


@needs_fixture
def test_bad_contents_are_named(tmp_path, official_parts):
    model_string, state_dict = official_parts
    torch.save({"model": state_dict}, tmp_path / "no_args.pth")
    with pytest.raises(Loc3rError, match="no_args.pth: expected a dict with 'args' and 'model'"):
        ckpt.convert_cut3r(tmp_path / "no_args.pth", tmp_path / "out")
    bad_string = model_string.replace("state_size=16", "state_size=__import__('os').getpid()")
    save_official(tmp_path / "code.pth", bad_string, state_dict)
    with pytest.raises(Loc3rError, match="not a literal|malformed"):
        ckpt.convert_cut3r(tmp_path / "code.pth", tmp_path / "out")


def fake_omegaconf_args(monkeypatch, model_string: str):
    """An object that pickles like omegaconf's DictConfig, which hydra-trained CUT3R checkpoints store as 'args'
    (checked against omegaconf 2.4: GLOBALs omegaconf.*, typing.Any, __builtin__ dict / long, defaultdict)."""
    import collections
    import sys
    import types
    import typing

    classes = {}
    monkeypatch.setitem(sys.modules, "omegaconf", types.ModuleType("omegaconf"))
    for module, name in (("omegaconf.dictconfig", "DictConfig"), ("omegaconf.nodes", "AnyNode"),
                         ("omegaconf.base", "ContainerMetadata")):
        mod = types.ModuleType(module)
        classes[name] = type(name, (), {"__module__": module})
        setattr(mod, name, classes[name])
        monkeypatch.setitem(sys.modules, module, mod)
    meta = classes["ContainerMetadata"]()
    meta.__dict__.update(ref_type=typing.Any, object_type=dict, key_type=int, optional=True,
                         resolver_cache=collections.defaultdict(dict))
    node = classes["AnyNode"]()
    node.__dict__.update(_val=model_string, _parent=None)
    args = classes["DictConfig"]()
    args.__dict__.update(_metadata=meta, _parent=None, _content={"model": node, "epochs": 10})
    return args


@needs_fixture
def test_reads_hydra_style_args(tmp_path, monkeypatch, official_parts):
    model_string, state_dict = official_parts
    path = tmp_path / "hydra.pth"
    torch.save({"args": fake_omegaconf_args(monkeypatch, model_string), "model": state_dict, "epoch": 3}, path)
    monkeypatch.undo()  # the fake omegaconf modules are gone: nothing can be imported while reading
    assert ckpt.read_official_checkpoint(path)[0] == model_string
    assert ckpt.convert_cut3r(path, tmp_path / "out")["config"] == asdict(Cut3rConfig.tiny())


@needs_fixture
@pytest.mark.parametrize("edit, message", [
    (lambda sd: sd.pop("dec_blocks_state.1.norm_y.bias"), "missing key 'dec_blocks_state.1.norm_y.bias'"),
    (lambda sd: sd.pop("downstream_head.pose_head.mlp.fc2.weight"), "missing key 'pose_head.fc2.weight'"),
    (lambda sd: sd.update({"pose_retriever.extra": torch.zeros(1)}), "unknown key 'pose_retriever.extra'"),
    (lambda sd: sd.update({"downstream_head.pose_head.scale": torch.zeros(1)}),
     "unknown key 'downstream_head.pose_head.scale'"),
    (lambda sd: sd.update({"something_else": torch.zeros(1)}), "unknown key 'something_else'"),
    (lambda sd: sd.update({"enc_norm.weight": torch.zeros(3)}), "'enc_norm.weight' has shape"),
])
def test_strict_keys(tmp_path, official_parts, edit, message):
    model_string, state_dict = official_parts
    state_dict = dict(state_dict)
    edit(state_dict)
    path = save_official(tmp_path / "edited.pth", model_string, state_dict)
    with pytest.raises(Loc3rError, match=f"edited.pth: {message}"):
        ckpt.convert_cut3r(path, tmp_path / "out")


@needs_fixture
def test_converted_dir_is_safe_and_strict(tmp_path, converted):
    meta = json.loads((converted / "config.json").read_text())
    assert "enc_blocks_ray_map" in meta["dropped_prefixes"] and "downstream_head.proj" in meta["dropped_prefixes"]
    model = Cut3r.from_pretrained(converted)
    assert model.ignored_prefixes == meta["dropped_prefixes"]
    assert all(v.dtype == torch.float32 for v in model.state_dict().values())
    from safetensors.torch import load_file, save_file

    tensors = load_file(converted / "model.safetensors")
    assert not any(k.startswith(("downstream_head", "enc_blocks_ray_map")) for k in tensors)
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text(json.dumps(meta))
    tensors.pop("enc_norm.bias")
    save_file(tensors, broken / "model.safetensors")
    with pytest.raises(Loc3rError, match="model.safetensors: missing key 'enc_norm.bias'"):
        Cut3r.from_pretrained(broken)


# ---------------------------------------------------------------- constructor string and config

def _from_json(value):
    if isinstance(value, list):
        return tuple(_from_json(v) for v in value)
    return {"inf": float("inf"), "-inf": float("-inf")}.get(value, value) if isinstance(value, str) else value


@needs_fixture
def test_model_string_matches_fixture_config(official_parts):
    fixture = json.loads((FIXTURE / "config.json").read_text())
    model_string, state_dict = official_parts
    assert model_string == fixture["model_string_saved_in_checkpoint_args"]
    arcroco, croco = ckpt.official_kwargs(ckpt.parse_model_string(model_string))
    assert arcroco == {k: _from_json(v) for k, v in fixture["constructor_kwargs_ARCroco3DStereoConfig"].items()}
    expected_croco = {k: _from_json(v) for k, v in fixture["constructor_kwargs_croco_after_fill_default_args"].items()}
    expected_croco.pop("norm_layer")
    assert croco == expected_croco
    assert ckpt.config_from_official(model_string, state_dict, "A") == Cut3rConfig.tiny()


def test_released_model_strings():
    released = ("ARCroco3DStereo(ARCroco3DStereoConfig(freeze='encoder', state_size=768, state_pe='2d', "
                "pos_embed='RoPE100', rgb_head=True, pose_head=True, patch_embed_cls='ManyAR_PatchEmbed', "
                "img_size=(512, 512), head_type='dpt', output_mode='pts3d+pose', depth_mode=('exp', -inf, inf), "
                "conf_mode=('exp', 1, inf), pose_mode=('exp', -inf, inf), enc_embed_dim=1024, enc_depth=24, "
                "enc_num_heads=16, dec_embed_dim=768, dec_depth=12, dec_num_heads=12, landscape_only=False))")
    arcroco, croco = ckpt.official_kwargs(ckpt.parse_model_string(released))
    assert arcroco["state_dec_num_heads"] == 16 and arcroco["patch_embed_cls"] == "PatchEmbedDust3R"
    assert croco["img_size"] == (512, 512) and croco["pos_embed"] == "RoPE100"
    assert arcroco["depth_mode"] == ("exp", float("-inf"), float("inf"))
    for bad in ("__import__('os').system('true')", "ARCroco3DStereo(ARCroco3DStereoConfig(x=open('f')))",
                "ARCroco3DStereo(ARCroco3DStereoConfig(**{'a': 1}))", "ARCroco3DStereo(Other(a=1))"):
        with pytest.raises(Loc3rError):
            ckpt.parse_model_string(bad)
    with pytest.raises(Loc3rError, match="unknown constructor argument 'bogus'"):
        ckpt.official_kwargs({"bogus": 1})


# ---------------------------------------------------------------- preprocessing and cache

@pytest.mark.parametrize("hw, size, out_hw", [
    ((968, 1296), 512, (368, 512)),  # ScanNet colour frames
    ((968, 1296), 224, (224, 224)),
    ((640, 640), 512, (384, 512)),  # square -> 4:3 (official square_ok=False)
    ((300, 200), 512, (512, 336)),  # portrait, enlarged
])
def test_preprocess_shapes(hw, size, out_hw):
    frames = np.random.default_rng(0).integers(0, 256, (2, *hw, 3), dtype=np.uint8)
    x = preprocess(frames, size)
    assert x.shape == (2, 3, *out_hw) and x.dtype == torch.float32
    assert -1 <= float(x.min()) and float(x.max()) <= 1


def test_load_cached_tokens_missing(tmp_path):
    assert load_cached_tokens(tmp_path, "scene0000_00", 32) is None


# ---------------------------------------------------------------- extract-priors on a tiny ScanNet layout

def write_scene(root: Path, scene_id: str, n: int, rng) -> None:
    """n frames of 96x128 noise; the camera slides along x and turns; frame 1 lost tracking (-inf pose)."""
    from PIL import Image

    d = root / "scans" / scene_id
    for sub in ("color", "pose", "intrinsic"):
        (d / sub).mkdir(parents=True)
    np.savetxt(d / "intrinsic" / "intrinsic_color.txt", np.diag([100.0, 100.0, 1.0, 1.0]))
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (96, 128, 3), dtype=np.uint8)).save(d / "color" / f"{i}.jpg")
        c, s = np.cos(0.1 * i), np.sin(0.1 * i)
        pose = np.array([[c, 0, s, 0.2 * i], [0, 1, 0, 0], [-s, 0, c, 0], [0, 0, 0, 1]])
        np.savetxt(d / "pose" / f"{i}.txt", np.full((4, 4), -np.inf) if i == 1 else pose)


@needs_fixture
def test_extract_priors(tmp_path, converted, capsys):
    from loc3r import extract_priors as extract
    from loc3r.data.scannet import ScanNetScene, sample_frame_ids

    rng = np.random.default_rng(0)
    for scene_id in ("scene0000_00", "scene0001_00"):
        write_scene(tmp_path, scene_id, 6, rng)
    parser = argparse.ArgumentParser()
    extract.add_arguments(parser)
    args = parser.parse_args(["--cut3r", str(converted), "--data", str(tmp_path), "--frames", "4",
                              "--check-poses", "--device", "cpu"])
    assert extract.run(args) == 0
    first = capsys.readouterr().out
    assert "overall (2 scenes): rotation" in first and "scale gt/cut3r" in first
    scene = ScanNetScene(tmp_path, "scene0001_00")
    ids = sample_frame_ids(scene.valid_frame_ids, 4)
    assert 1 not in ids.tolist()
    tokens = load_cached_tokens(tmp_path, "scene0001_00", 4, frame_ids=ids)
    assert tokens.shape == (4, 48) and tokens.dtype == np.float16
    frames = np.stack([scene.read_color(int(i)) for i in ids])
    expected = Cut3rPrior(converted).tokens_for_frames(frames).numpy()  # 96x128 -> 64x48 (size 64 of fixture A)
    assert max_diff(tokens, expected) < 2e-3  # float16 storage
    with pytest.raises(Loc3rError, match="rerun"):
        load_cached_tokens(tmp_path, "scene0001_00", 4, frame_ids=ids[::-1])
    assert extract.run(args) == 0  # second run: everything cached, same report
    second = capsys.readouterr().out
    assert second.count(": cached;") == 2 and first.splitlines()[-1] == second.splitlines()[-1]


def test_relative_pose_errors_closed_form():
    from loc3r.extract_priors import relative_pose_errors

    gt = np.stack([np.eye(4)] * 3)
    gt[1:, 0, 3] = [1.0, 2.0]
    pred = gt.copy()
    pred[:, :3, 3] *= 0.5  # half the scale
    c, s = np.cos(np.radians(10)), np.sin(np.radians(10))
    pred[2, :3, :3] = [[c, -s, 0], [s, c, 0], [0, 0, 1]]
    world = np.eye(4)
    world[:3, 3] = [5, 6, 7]  # a different world frame for the prediction changes nothing
    err = relative_pose_errors(gt, world @ pred)
    assert np.allclose(err["rot_deg"], [0, 10]) and np.allclose(err["trans_m"], [0.5, 1.0])
    assert np.isclose(err["norm_gt"].sum() / err["norm_pred"].sum(), 2.0)


@needs_fixture
def test_conversion_never_replaces_what_it_did_not_write(tmp_path, converted, capsys):
    """OUT_DIR that holds something else (a file, other files) is refused with one line unless --overwrite; an
    empty directory and a previous conversion are replaced."""
    from loc3r.cli import main as cli_main

    pth = str(FIXTURE / "checkpoint.pth")
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    a_file = tmp_path / "a_file"
    a_file.write_text("keep me too")
    for target in (user, a_file):
        assert cli_main(["convert-cut3r", pth, str(target)]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and "--overwrite" in err and str(target) in err
    assert (user / "notes.txt").read_text() == "keep me" and a_file.read_text() == "keep me too"
    again = tmp_path / "again"
    shutil.copytree(converted, again)  # a previous conversion is replaced
    assert cli_main(["convert-cut3r", pth, str(again)]) == 0
    assert cli_main(["convert-cut3r", pth, str(user), "--overwrite"]) == 0
    assert sorted(p.name for p in user.iterdir()) == ["config.json", "fingerprint.json", "model.safetensors"]


def test_camera_tokens_of_another_width_name_their_cache_file(tmp_path):
    from loc3r.data.cache import source_fingerprint
    from loc3r.data.scannet import ScanNetScene
    from loc3r.model.config import Loc3RConfig
    from loc3r.model.processor import camera_token_source
    from loc3r.priors.cut3r import token_cache_path

    ids = np.arange(4)
    path = token_cache_path(tmp_path, "scene0000_00", 4)
    path.parent.mkdir(parents=True)
    (tmp_path / "scans" / "scene0000_00").mkdir(parents=True)
    scan = source_fingerprint(ScanNetScene(tmp_path, "scene0000_00"), ids)  # what extract-priors records
    np.savez(path, camera_tokens=np.zeros((4, 5), np.float16), frame_ids=ids, source=np.array(scan))
    source = camera_token_source(Loc3RConfig.tiny(prior="cut3r", cut3r_dim=8), tmp_path)
    with pytest.raises(Loc3rError, match=f"{path}: camera tokens of width 5, the model's cut3r_dim is 8"):
        source("scene0000_00", ids)


@needs_fixture
def test_infer_with_the_cut3r_prior(converted, synth_data, tmp_path, capsys):
    """The cut3r path end to end on the fixture (width 48): extract-priors caches the tokens, train takes their width
    from the cache (no flag), and infer runs CUT3R on a user's frames (no cache, no poses)."""
    import shutil

    from loc3r.cli import main as cli_main
    from loc3r.model.config import Loc3RConfig
    from loc3r.model.loc3r import Loc3R
    from loc3r.train.checkpoint import load_model

    data = tmp_path / "data"
    shutil.copytree(synth_data, data)
    assert cli_main(["extract-priors", "--cut3r", str(converted), "--data", str(data), "--frames", "4",
                     "--device", "cpu"]) == 0
    run = tmp_path / "run"
    assert cli_main(["train", "--data", str(data), "--out", str(run), "--loop-starts", "1", "--prior", "cut3r",
                     "--frames", "4", "--steps", "2", "--batch-size", "2", "--quiet"]) == 0
    dim = Cut3r.from_pretrained(converted).dim
    assert load_model(run / "checkpoints" / "step_0000002").config.cut3r_dim == dim == 48
    args = ["infer", "--checkpoint", str(run), "--frames", str(data / "scans" / "scene0000_00" / "color"),
            "--situation", "I am standing next to the bed.", "--question", "What is on my left?", "--json"]
    capsys.readouterr()
    plot = tmp_path / "cut3r_path.png"  # drawn with CUT3R's own camera path
    assert cli_main([*args, "--cut3r", str(converted), "--plot", str(plot)]) == 0
    r = json.loads(capsys.readouterr().out)
    assert len(r["position_xy_m"]) == 2 and abs(sum(r["yaw_probs"]) - 1) < 1e-4 and plot.stat().st_size > 0
    Loc3R(Loc3RConfig.tiny(prior="cut3r", cut3r_dim=dim + 2, num_frames=4)).save_pretrained(tmp_path / "other")
    assert cli_main([*args[:2], str(tmp_path / "other"), *args[3:], "--cut3r", str(converted),
                     "--allow-unknown-words"]) == 2  # a model of no vocabulary: its words are all unknown
    assert f"{converted}: CUT3R camera tokens of width {dim}" in capsys.readouterr().err
    # tokens CUT3R computed from other input frames are refused by name
    assert cli_main(["train", "--data", str(data), "--out", str(tmp_path / "run2"), "--loop-starts", "1", "--prior",
                     "cut3r", "--frames", "4", "--steps", "1", "--batch-size", "2", "--quiet", "--cut3r-input",
                     "vlm3r"]) == 2
    assert "CUT3R saw the 'demo' input frames, the model takes 'vlm3r'" in capsys.readouterr().err


def test_vlm3r_input_frames_are_432_squares():
    from loc3r.priors.cut3r import cut3r_input_frames

    frames = np.random.default_rng(0).integers(0, 256, (2, 48, 64, 3), dtype=np.uint8)
    assert tuple(cut3r_input_frames(frames, "vlm3r", 512).shape) == (2, 3, 432, 432)
    assert tuple(cut3r_input_frames(frames, "demo", 512).shape) == (2, 3, 384, 512)  # long side 512

@needs_fixture
def test_stale_token_cache_is_refused_then_recomputed(converted, synth_data, tmp_path, capsys):
    """A scan whose files change after extract-priors: training refuses its tokens (one line naming the cache), and
    the next extract-priors computes them again instead of reporting them cached."""
    import shutil
    import time

    from loc3r.cli import main as cli_main
    from loc3r.data.scannet import ScanNetScene

    data = tmp_path / "data"
    shutil.copytree(synth_data, data)
    extract = ["extract-priors", "--cut3r", str(converted), "--data", str(data), "--frames", "4", "--device", "cpu"]
    assert cli_main(extract) == 0
    scene = ScanNetScene(data, "scene0000_00")
    pose = scene.dir / "pose" / f"{scene.sampled_frame_ids(4)[1]}.txt"
    time.sleep(0.01)
    pose.write_text(pose.read_text())  # re-exported: same content, a new file
    train = ["train", "--data", str(data), "--out", str(tmp_path / "run"), "--loop-starts", "1", "--prior", "cut3r",
             "--frames", "4", "--steps", "1", "--batch-size", "2", "--quiet"]
    capsys.readouterr()
    assert cli_main(train) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "scene0000_00_T4.npz: the cache was computed from other files of the scan" in err
    assert cli_main(extract) == 0
    report = capsys.readouterr().out
    assert "scene0000_00: cached" not in report and "scene0001_00: cached" in report
    assert cli_main(train) == 0
