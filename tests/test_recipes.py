"""Named recipes and the settings they resolve to; the paper's model free of the tiny base's settings; checkpoints
written before the tiny base's settings had their own section still load."""

import argparse
import dataclasses
import json
import math
import shutil
import typing

import pytest
import torch

from loc3r.assets import TINY_BASE
from loc3r.command import dataclass_from_args
from loc3r.errors import Loc3rError
from loc3r.model.config import Loc3RConfig
from loc3r.model.loc3r import Loc3R
from loc3r.tiny import TinyLoc3R
from loc3r.tiny.config import FIELDS, SECTION
from loc3r.train import loop
from loc3r.train.checkpoint import load_model
from loc3r.train.config import TrainConfig
from loc3r.train.recipes import DEFAULT_RECIPE, RECIPES

REMOVED_FLAGS = ("--curriculum-scenes", "--curriculum-steps", "--loop-starts-after", "--head-input-norm",
                 "--situation-start", "--keep-heads")


def parse(*flags) -> TrainConfig:
    p = argparse.ArgumentParser()
    loop.add_arguments(p)
    return dataclass_from_args(TrainConfig, p.parse_args(["--data", "d", "--out", "o", *flags]))


def test_a_bare_tiny_run_is_the_tiny_demo_recipe():
    bare, named = parse("--preset", "tiny"), parse("--recipe", "tiny_demo")
    assert dataclasses.asdict(bare) == dataclasses.asdict(named) == dataclasses.asdict(parse())
    assert bare.recipe == "tiny_demo" and (bare.steps, bare.schedule, bare.loop_starts) == (900, "wsd", 3)
    assert DEFAULT_RECIPE == {"tiny": "tiny_demo", "llava_video_7b": "llava_video_7b_paper"}


@pytest.mark.parametrize("name", list(RECIPES))
def test_every_recipe_setting_is_a_typed_train_field(name):
    recipe = RECIPES[name]
    hints = typing.get_type_hints(TrainConfig)
    for field, value in recipe.settings.items():
        assert field in hints, field
        kinds = typing.get_args(hints[field]) or (hints[field],)
        assert isinstance(value, tuple(k for k in kinds if k is not type(None))), (field, value)
    resolved = TrainConfig(data="d", out="o", recipe=name)
    assert resolved.preset == recipe.preset
    assert all(getattr(resolved, k) == v for k, v in recipe.settings.items())


def test_flags_override_the_recipe():
    run = parse("--steps", "12", "--lr", "1e-3", "--loop-starts", "1")
    assert (run.steps, run.lr, run.loop_starts, run.loop_starts_when) == (12, 1e-3, 1, 0.0)  # no join without starts
    assert run.schedule == "wsd" and run.batch_size == 8  # the rest is the recipe's
    paper = parse("--recipe", "llava_video_7b_paper")
    assert (paper.preset, paper.epochs, paper.steps, paper.global_batch, paper.grad_accum) == (
        "llava_video_7b", 1.0, None, 64, None)
    assert (paper.lr, paper.schedule, paper.parallel, paper.activation_checkpointing) == (1e-5, "cosine", "fsdp", True)
    short = parse("--recipe", "llava_video_7b_paper", "--steps", "5", "--grad-accum", "2")  # not the recipe's pair
    assert (short.steps, short.epochs, short.grad_accum, short.global_batch) == (5, None, 2, None)
    # one epoch over 1000 videos at 64 a step on 8 processes of 1: 8 micro-batches a step, 16 steps
    sized = paper.sized(1000, 8)
    assert (sized.steps, sized.grad_accum) == (math.ceil(1000 / 64), 8)
    with pytest.raises(Loc3rError, match="--global-batch 64 is not a multiple"):
        paper.sized(1000, 3)
    with pytest.raises(Loc3rError, match="trains the llava_video_7b preset, not --preset tiny"):
        parse("--recipe", "llava_video_7b_paper", "--preset", "tiny")
    with pytest.raises(Loc3rError, match="pass one of the two"):
        parse("--steps", "5", "--epochs", "1")


def test_a_recipes_aids_of_a_tiny_base_give_way():
    """tiny_situated's training aids of a tiny base: all of them (the added layers, the relation heads and readout)
    left out of a run from random weights, the relation aids out of a run given --relation-weight 0 (its layers
    kept), a switch the recipe turns on turned off by --no-x; what neither a flag nor a recipe set is the field's
    value without them."""
    aids = ("added_layers", "added_layers_join", "relation_weight", "relation_layer", "relation_readout",
            "relation_egocentric", "relation_readout_layer", "relations_join")

    def of(run):
        return tuple(getattr(run, a) for a in aids)

    assert of(parse("--recipe", "tiny_situated")) == (2, True, 1.0, -2, True, True, -2, True)
    assert of(parse("--recipe", "tiny_situated", "--init", "scratch")) == (
        None, False, None, -1, False, False, None, True)
    assert of(parse("--recipe", "tiny_situated", "--relation-weight", "0", "--no-relations-join",
                    "--no-added-layers-join")) == (2, False, 0.0, -1, False, False, None, False)
    assert of(parse("--recipe", "tiny_situated", "--no-relation-egocentric", "--relation-layer", "-1")) == (
        2, True, 1.0, -1, True, False, -2, True)
    assert of(parse()) == (None, False, None, -1, False, False, None, False)  # tiny_demo has none
    assert parse("--recipe", "tiny_situated", "--init", "scratch").relation_settings() == {}


def test_the_long_situated_recipe_is_the_situated_one_for_more_steps():
    """tiny_situated_long resolves to every setting of tiny_situated (its rooms too) but the step count and the final
    decay's share (the 30% it was measured with, tiny_situated's until its decay was halved)."""
    short, long = dataclasses.asdict(parse("--recipe", "tiny_situated")), dataclasses.asdict(
        parse("--recipe", "tiny_situated_long"))
    assert {k for k in short if short[k] != long[k]} == {"recipe", "steps", "decay"}
    assert (short["steps"], long["steps"], short["decay"], long["decay"]) == (900, 1200, 0.15, 0.3)
    assert RECIPES["tiny_situated_long"].rooms == RECIPES["tiny_situated"].rooms == {"relations": 6}


def test_train_help_shows_defaults_and_no_removed_flag(capsys):
    p = argparse.ArgumentParser()
    loop.add_arguments(p)
    text = p.format_help()
    for group in ("data:", "model:", "loss:", "optimisation:", "schedule:", "checkpointing:", "parallelism:"):
        assert f"\n{group}\n" in text, group
    text = " ".join(text.split())  # unwrapped
    assert not [f for f in REMOVED_FLAGS if f in text]
    assert "(default: 900 in tiny_demo, 900 in tiny_situated, 1200 in tiny_situated_long)" in text
    assert ("(default: 0.002 in tiny_demo, 0.002 in tiny_situated, 0.002 in tiny_situated_long, 1e-05 in "
            "llava_video_7b_paper)") in text
    # a field that neither a flag nor every recipe sets
    assert "(default: -2 in tiny_situated, -2 in tiny_situated_long, else -1)" in text
    assert "--relations-join, --no-relations-join" in text  # a recipe's switch turned off
    assert "(default: 500)" in text  # a plain field's default


def test_a_7b_config_has_no_tiny_base_field(tmp_path):
    from test_model import write_hf_llava_video

    write_hf_llava_video(tmp_path / "llava-video", 8)
    config = Loc3RConfig.llava_video_7b(tmp_path / "llava-video", num_frames=2)
    tiny_only = {*FIELDS, SECTION, "head_input_norm"}
    assert not set(config.to_dict()) & tiny_only
    assert not set(Loc3R(config).config_dict()) & tiny_only  # what its checkpoints' config.json holds


def test_the_shipped_base_and_checkpoints_of_the_earlier_format_load(tmp_path):
    """The base's settings live under "tiny_base"; a checkpoint written before (its fields at the top level, with
    head_input_norm) loads the same model; a plain Loc3R says which class loads a tiny base."""
    base = load_model(TINY_BASE)
    assert isinstance(base, TinyLoc3R) and base.base.text_embed_scale == 32 and base.base.copy_layer == -1
    old = tmp_path / "old"
    shutil.copytree(TINY_BASE, old)
    fields = json.loads((TINY_BASE / "config.json").read_text())
    flat = {k: v for k, v in fields.items() if k != SECTION} | fields[SECTION] | {"head_input_norm": "none"}
    (old / "config.json").write_text(json.dumps(flat))
    legacy = load_model(old)
    assert legacy.base == base.base and legacy.config == base.config
    ids = torch.tensor([[5, 6, 7]])
    assert torch.equal(legacy.embed_text(ids), base.embed_text(ids))
    assert torch.equal(base.embed_text(ids), 32 * base.vlm.get_input_embeddings()(ids))
    legacy.save_pretrained(tmp_path / "resaved")  # written back in the current format
    resaved = json.loads((tmp_path / "resaved" / "config.json").read_text())
    assert resaved[SECTION]["text_embed_scale"] == 32 and "grounding_layer" not in resaved
    (old / "config.json").write_text(json.dumps(flat | {"head_input_norm": "batch"}))
    with pytest.raises(Loc3rError, match="head_input_norm 'batch' is no longer supported"):
        load_model(old)
    with pytest.raises(Loc3rError, match="tiny_base.*TinyLoc3R"):
        Loc3R.from_pretrained(TINY_BASE)


def test_relation_flags_are_refused_where_they_mean_nothing():
    """--relation-readout needs the relation heads (--relation-weight W > 0), --relation-objects or (not both)
    --relation-egocentric the readout; the 7B and a model from random weights (--init scratch) have no relation heads
    nor a base to add layers to; a negative weight or count is refused. Accepted, they set the tiny base's relation
    settings."""
    from loc3r.train.config import TrainConfig

    for bad in (dict(relation_readout=True), dict(relation_weight=1.0, relation_objects=True),
                dict(relation_weight=-1.0), dict(relation_weight=1.0, preset="llava_video_7b"),
                dict(relation_weight=1.0, init="scratch"), dict(relation_weight=1.0, relation_egocentric=True),
                dict(relation_weight=1.0, relation_readout=True, relation_objects=True, relation_egocentric=True),
                dict(relation_weight=1.0, relation_readout_layer=2)):
        with pytest.raises(Loc3rError, match="relation"):
            TrainConfig(data="d", out="o", **bad)
    for bad in (dict(added_layers=-1), dict(added_layers=1, init="scratch"),
                dict(added_layers=1, preset="llava_video_7b")):
        with pytest.raises(Loc3rError, match="--added-layers"):
            TrainConfig(data="d", out="o", **bad)
    run = TrainConfig(data="d", out="o", relation_weight=0.5, relation_readout=True)
    assert run.relation_settings() == dict(relation_layer=-1, lambda_relation=0.5, relation_readout=True,
                                           relation_egocentric=False, relation_readout_layer=None)
    run = TrainConfig(data="d", out="o", relation_weight=1.0, relation_readout=True, relation_egocentric=True,
                      relation_layer=-2)
    assert run.relation_settings()["relation_egocentric"] and run.relation_settings()["relation_layer"] == -2
    from loc3r.model.config import Loc3RConfig
    from loc3r.tiny import TinyBaseConfig, TinyLoc3R

    with pytest.raises(Loc3rError, match="relation layer 4: the LLM has 4 layers"):
        TinyLoc3R(Loc3RConfig.tiny(), base=TinyBaseConfig(relation_layer=4))
    for last in (-1, 3, 5):  # the staged readout's first stage must leave a layer after it
        with pytest.raises(Loc3rError, match=f"relation readout layer {last}: a layer before the last"):
            TinyLoc3R(Loc3RConfig.tiny(), base=TinyBaseConfig(relation_layer=-1, relation_readout_layer=last))
    TinyLoc3R(Loc3RConfig.tiny(), base=TinyBaseConfig(relation_layer=-1, relation_readout_layer=-2))
    assert TrainConfig(data="d", out="o").relation_settings() == {}
