"""Starting a tiny model from a pretrained tiny base (`loc3r train --init BASE`, the shipped one by default), as the
paper starts Loc3R from a pretrained VLM: the base's weights, tokenizer and settings; its vision tower frozen; where
its grounding heads look kept; its weights fine-tuned gently while the parts it never trained learn fast."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import torch

from loc3r.model.config import Loc3RConfig, read_config_json
from loc3r.model.loc3r import Loc3R
from loc3r.model.tokenizer import load_tokenizer
from loc3r.parallel import print0
from loc3r.tiny.config import TinyBaseConfig, split_legacy
from loc3r.tiny.model import TinyLoc3R

NEW_ON_A_BASE = ("camera_projector.", "layout_head.", "position_head.", "orientation_head.")  # untrained in a base
# A base's weights at 0.3 x the run's lr. Measured on the demo's recipe (docs/LOG.md): at 0.1 x the base's grounding
# survives but the layout is barely learned in 600 steps; at 1 x (and a trainable vision tower) the grounding is
# gone by step 300; 0.3 x keeps half of it and learns the layout.
INIT_LR_SCALE = 0.3
HEAD_LAYERS = ("grounding_layer", "anchor_layer", "copy_layer")  # TinyBaseConfig fields that name an LLM layer


def read_base(path: Path) -> tuple[Loc3RConfig, TinyBaseConfig]:
    """The Loc3RConfig and the tiny base's settings of a base directory (a base without them: the defaults)."""
    source = Path(path) / "config.json"
    fields, base = split_legacy(read_config_json(source), str(source))
    return Loc3RConfig.from_dict(fields, str(source)), TinyBaseConfig(**(base or {}))


def absolute_layers(settings: TinyBaseConfig, layers: int) -> TinyBaseConfig:
    """`settings` with its heads' layers counted from the first of the base's `layers` (-2 becomes layers - 2), so
    that they name the same layers once more are added after the base's last."""
    return dataclasses.replace(settings, **{k: getattr(settings, k) % layers for k in HEAD_LAYERS
                                            if getattr(settings, k) is not None})


def model_from_base(base: Path, config: Loc3RConfig, settings: dict | None = None, added_layers: int = 0) -> TinyLoc3R:
    """A fresh model of `config` with the VLM, tokenizer, weights and tiny-base settings of a pretrained base;
    `settings` (TinyBaseConfig fields) override the base's, as a base's pretraining continued with a copy head or
    another embedding scale sets them. The base's vision tower stays frozen, as the paper keeps its pretrained SigLIP
    frozen. Prints which tensors start fresh (those the base lacks: the camera projector of a base trained without
    camera tokens, the heads).

    added_layers: the LLM gets that many layers after the base's last, each starting as the identity (a residual
    branch whose attention output and MLP down projections are zero; the rest drawn as the LLM initialises them), so
    the model starts as the base's function; the base's heads stay in their layers (their indices made absolute)."""
    base_config, base_settings = read_base(base)
    vlm = copy.deepcopy(base_config.vlm)  # the VLM's config.json fields
    if added_layers:
        text = vlm["text_config"]
        n = text["num_hidden_layers"]
        text["num_hidden_layers"] = n + added_layers
        if text.get("layer_types"):
            text["layer_types"] = list(text["layer_types"]) + list(text["layer_types"][-1:]) * added_layers
        base_settings = absolute_layers(base_settings, n)
    model = TinyLoc3R(dataclasses.replace(config, vlm=vlm, train_vision_tower=False),
                      load_tokenizer(base), dataclasses.replace(base_settings, **(settings or {})))
    fresh = model.load_base(base)
    layers = model.vlm.model.language_model.layers
    with torch.no_grad():
        for layer in layers[len(layers) - added_layers:]:
            layer.self_attn.o_proj.weight.zero_()
            layer.mlp.down_proj.weight.zero_()
    modules = sorted({".".join(n.split(".")[:2]) for n in fresh if ".layers." not in n})
    print0(f"initialised from the base {base}"
           + (f"; {added_layers} LLM layer(s) added after its last, starting as the identity" if added_layers else "")
           + (f"; tensors it lacks start fresh: {', '.join(modules)}" if modules else ""))
    return model


def keep_grounding_heads(model: Loc3R, learned: TinyBaseConfig, keys: bool = False, copy: bool = False) -> list[str]:
    """Freeze where a base's grounding heads look (tiny.losses.grounding_attention_loss: head `grounding_head` of
    layer `grounding_layer`, head `anchor_head` of layer `anchor_layer`, as `learned`, the base's settings, names
    them; with `copy`, a base's pretraining continued with its copy supervision, also its copy head): their q_proj
    rows get a zero gradient, so the situation tokens' queries stay what the base learned while their values, the
    keys, every other head and the MLPs fine-tune (a weight decay above 0 still decays them). With `keys` (a base's
    pretraining continued, as the shipped base was made) also the k_proj rows of their key/value heads, each shared
    by num_attention_heads / num_key_value_heads heads. In a Loc3R stage, keeping the keys too froze the last layer's
    heads 0-2, among them head 2, which brings <Ori> the facing object, and the orientation learned on one training
    seed of two (docs/LOG.md); the Loc3R stage keeps the queries only and leaves the copy head free. Returns what it
    keeps, in words."""
    text = model.vlm.config.text_config
    group = text.num_attention_heads // text.num_key_value_heads
    masked = []
    for layer, head in ((learned.grounding_layer, learned.grounding_head), (learned.anchor_layer, learned.anchor_head),
                        (learned.copy_layer if copy else None, learned.copy_head)):
        if layer is None:
            continue
        attention = model.vlm.model.language_model.layers[layer].self_attn
        d = attention.head_dim
        kept = [(attention.q_proj, head, "query")] + ([(attention.k_proj, head // group, "key")] if keys else [])
        for proj, h, kind in kept:
            mask = torch.ones(proj.out_features, 1, device=proj.weight.device)
            mask[h * d:(h + 1) * d] = 0
            proj.weight.register_hook(lambda g, mask=mask: g * mask)
            if proj.bias is not None:
                proj.bias.register_hook(lambda g, mask=mask[:, 0]: g * mask)
            masked.append(f"layer {layer % text.num_hidden_layers} {kind} head {h}")
    return masked

