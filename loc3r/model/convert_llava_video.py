"""`loc3r convert-llava-video IN_DIR OUT_DIR`: the official LLaVA-Video release -> the transformers LlavaOnevision
directory that `loc3r train --preset llava_video_7b --base OUT_DIR` loads.

The official release (lmms-lab/LLaVA-Video-7B-Qwen2, written by LLaVA-NeXT's `LlavaQwenForCausalLM`):
- config.json: Qwen2's fields (hidden_size, num_hidden_layers, rope_theta, ...) and LLaVA's `mm_*` fields
  (mm_vision_tower "google/siglip-so400m-patch14-384", mm_projector_type "mlp2x_gelu", mm_newline_position "grid",
  mm_spatial_pool_mode "bilinear", mm_spatial_pool_stride 2); no vision config: the tower is named only.
- safetensors shards (model-0000N-of-0000M.safetensors + model.safetensors.index.json) with the keys
      model.embed_tokens.*, model.layers.N.*, model.norm.*, lm_head.*    the Qwen2 LLM
      model.vision_tower.vision_tower.vision_model.*                     SigLIP so400m, its last layer dropped
                                                                         (LLaVA-NeXT siglip_encoder.py), no head
      model.mm_projector.0.*, model.mm_projector.2.*                     Linear, GELU, Linear
      model.image_newline                                                the newline embedding
- Qwen2's tokenizer, without <image> / <video> tokens (LLaVA-NeXT splices features in at a -200 id).

The conversion follows the mapping of transformers' own LLaVA-OneVision conversion script: SigLIP's config
from its weights (so400m: 1152 wide, 16 heads of 72, 26 layers kept, 14 px patches, 384 px), features taken from
the last kept layer (`vision_feature_layer=-1`, strategy "full"), <image> and <video> added to the tokenizer.
LLaVA-NeXT's video settings (newline position, pool mode) are kept in OUT_DIR/loc3r_source.json, which
`Loc3RConfig.llava_video_7b` reads. A directory already in transformers format (e.g. the community
`LLaVA-Video-7B-Qwen2-hf`) is checked and copied as it is. Weights are read from safetensors only: pickled
weights (pytorch_model.bin, *.pt) are refused, never unpickled.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
from safetensors import SafetensorError, safe_open
from transformers import (AddedToken, AutoTokenizer, LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration,
                          Qwen2Config, SiglipVisionConfig)

from loc3r.command import add_dataclass_arguments, dataclass_from_args
from loc3r.errors import Loc3rError
from loc3r.io import atomic_dir, check_replaceable, write_json

SOURCE_NAME = "loc3r_source.json"  # what convert-llava-video read, and LLaVA-NeXT's video settings
FORMAT = "loc3r-llava-video-v1"
ORIGINAL_ARCHITECTURES = ("LlavaQwenForCausalLM",)
SIGLIP_HEAD_DIM = 72  # SigLIP so400m: 1152 = 16 heads x 72; the release names its tower but stores no config
SIGLIP_NORM_EPS = 1e-6
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")
VISION_PREFIX = "model.vision_tower.vision_tower.vision_model."


def detect_layout(in_dir: Path) -> str:
    """'llava-next' (the official release) or 'transformers' (LlavaOnevision), from IN_DIR/config.json."""
    config_file = in_dir / "config.json"
    try:
        config = json.loads(config_file.read_text())
    except FileNotFoundError:
        raise Loc3rError(f"{config_file}: no such file (expected a LLaVA-Video model directory)") from None
    except (OSError, ValueError) as e:
        raise Loc3rError(f"{config_file}: not readable JSON ({e})") from None
    if not isinstance(config, dict):
        raise Loc3rError(f"{config_file}: not a JSON object (a model's config.json maps names to values)")
    if config.get("model_type") == "llava_onevision":
        return "transformers"
    if set(config.get("architectures") or ()) & set(ORIGINAL_ARCHITECTURES) or "mm_vision_tower" in config:
        return "llava-next"
    raise Loc3rError(f"{config_file}: neither LLaVA-NeXT's LlavaQwenForCausalLM nor transformers' LlavaOnevision "
                     f"(model_type {config.get('model_type')!r}, architectures {config.get('architectures')})")


INDEX_NAME = "model.safetensors.index.json"  # a sharded release's map of tensor -> shard


def shard_map(in_dir: Path) -> dict[str, list[str]] | None:
    """{shard file: its tensors} of IN_DIR's safetensors index, every shard checked to exist; None without an
    index. Safetensors files the index does not name are refused (a stray copy would override the release's
    tensors)."""
    index_file = in_dir / INDEX_NAME
    if not index_file.is_file():
        return None
    try:
        weight_map = json.loads(index_file.read_text())["weight_map"]
    except (ValueError, KeyError, TypeError) as e:
        raise Loc3rError(f"{index_file}: not a safetensors index (no weight_map: {e})") from None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) for v in weight_map.values()):
        raise Loc3rError(f"{index_file}: weight_map must map tensor names to shard files")
    shards: dict[str, list[str]] = {}
    for key, shard in weight_map.items():
        if Path(shard).name != shard:
            raise Loc3rError(f"{index_file}: shard {shard!r} is not a file of {in_dir}")
        shards.setdefault(shard, []).append(key)
    for shard in shards:
        if not (in_dir / shard).is_file():
            raise Loc3rError(f"{index_file}: names the shard {shard}, which is missing")
    stray = sorted(f.name for f in in_dir.glob("*.safetensors") if f.name not in shards)
    if stray:
        raise Loc3rError(f"{in_dir / stray[0]}: a safetensors file the index {INDEX_NAME} does not name: refusing to "
                         "mix it into the release's tensors (move it away)")
    return shards


def read_safetensors(in_dir: Path) -> dict[str, torch.Tensor]:
    """Every tensor of IN_DIR's safetensors weights: the shards its index names (each tensor from the shard the index
    says), else every *.safetensors file, a tensor in two files refused; pickled weights are refused."""
    files = sorted(in_dir.glob("*.safetensors"))
    if not files:
        pickles = sorted(p.name for p in in_dir.iterdir() if p.suffix in PICKLE_SUFFIXES)
        if pickles:
            raise Loc3rError(f"{in_dir / pickles[0]}: pickled weights are refused (they can run code when loaded); "
                             "use the release's safetensors files")
        raise Loc3rError(f"{in_dir}: no *.safetensors weights")
    shards = shard_map(in_dir)
    tensors, source = {}, {}
    for f in (in_dir / name for name in sorted(shards)) if shards is not None else files:
        try:
            with safe_open(str(f), framework="pt") as reader:
                keys = set(reader.keys())
                wanted = shards[f.name] if shards is not None else sorted(keys)
                for key in wanted:
                    if key not in keys:
                        raise Loc3rError(f"{f}: has no tensor {key}, which {INDEX_NAME} places there")
                    if key in source:
                        raise Loc3rError(f"{f}: tensor {key} is also in {source[key].name}: which one is the "
                                         "release's? (keep one file, or give an index)")
                    tensors[key], source[key] = reader.get_tensor(key), f
        except (SafetensorError, OSError) as e:
            raise Loc3rError(f"{f}: not a readable safetensors file ({e})") from None
    return tensors


def vision_config_from_weights(tensors: dict[str, torch.Tensor], source: Path) -> SiglipVisionConfig:
    """SigLIP's config read off its weights (the release stores none)."""
    try:
        patch = tensors[VISION_PREFIX + "embeddings.patch_embedding.weight"]  # [hidden, 3, p, p]
        positions = tensors[VISION_PREFIX + "embeddings.position_embedding.weight"].shape[0]
        fc1 = tensors[VISION_PREFIX + "encoder.layers.0.mlp.fc1.weight"]
    except KeyError as e:
        raise Loc3rError(f"{source}: no vision tower tensor {e.args[0]}") from None
    hidden, patch_size = patch.shape[0], patch.shape[-1]
    side = round(positions ** 0.5)
    layers = {int(m.group(1)) for k in tensors if (m := re.match(re.escape(VISION_PREFIX) + r"encoder\.layers\.(\d+)\.", k))}
    if side * side != positions or hidden % SIGLIP_HEAD_DIM or layers != set(range(len(layers))):
        raise Loc3rError(f"{source}: a vision tower of {hidden} channels, {positions} positions and layers "
                         f"{sorted(layers)[:3]}...: not a SigLIP so400m-like tower")
    return SiglipVisionConfig(hidden_size=hidden, intermediate_size=fc1.shape[0], num_hidden_layers=len(layers),
                              num_attention_heads=hidden // SIGLIP_HEAD_DIM, image_size=side * patch_size,
                              patch_size=patch_size, layer_norm_eps=SIGLIP_NORM_EPS, vision_use_head=False)


SIZES = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
         "vocab_size")  # Qwen2 sizes a release's config.json must give as positive integers


def text_config_from_release(config: dict, source: Path) -> Qwen2Config:
    """Qwen2's config from the release's config.json (its Qwen2 fields; the mm_* fields are LLaVA's)."""
    for name in SIZES:
        value = config.get(name)
        if name in config and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
            raise Loc3rError(f"{source}: {name} must be a positive integer, got {value!r}")
    known = set(Qwen2Config().to_dict()) | {"rope_theta", "rope_scaling"}  # transformers 5 folds these two into
    fields = {k: v for k, v in config.items() if k in known and not k.startswith("mm_")  # rope_parameters
              and k not in ("architectures", "model_type", "transformers_version", "auto_map")}
    return Qwen2Config(**fields)


def transformers_key(key: str) -> str | None:
    """The LlavaOnevision (in-memory) name of a release tensor; None for tensors LlavaOnevision has no use for."""
    if key.endswith("rotary_emb.inv_freq") or ".vision_model.head." in key:
        return None
    if key.startswith(VISION_PREFIX):
        return "model.vision_tower." + key[len(VISION_PREFIX):]
    if key.startswith("model.mm_projector."):
        index, rest = key[len("model.mm_projector."):].split(".", 1)
        return f"model.multi_modal_projector.linear_{ {'0': 1, '2': 2}.get(index, index)}.{rest}"
    if key == "model.image_newline" or key.startswith("lm_head."):
        return key
    if key.startswith("model."):
        return "model.language_model." + key[len("model."):]
    return key


def previous_conversion(out_dir: Path) -> bool:
    try:
        return json.loads((out_dir / SOURCE_NAME).read_text()).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


def _video_settings(config: dict) -> dict:
    return {k: config[k] for k in ("mm_newline_position", "mm_spatial_pool_mode", "mm_spatial_pool_stride",
                                   "add_time_instruction", "mm_vision_tower") if k in config}


def convert_llava_next(in_dir: Path, tmp: Path) -> dict:
    """Write the LlavaOnevision of the release at in_dir into tmp; return the source description."""
    release = json.loads((in_dir / "config.json").read_text())
    tensors = read_safetensors(in_dir)
    vision = vision_config_from_weights(tensors, in_dir)
    text = text_config_from_release(release, in_dir / "config.json")
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(in_dir))
    except (OSError, ValueError, TypeError) as e:
        raise Loc3rError(f"{in_dir}: no usable tokenizer files (tokenizer.json / tokenizer_config.json of the "
                         f"release: {str(e).splitlines()[0][:120]})") from None
    tokenizer.add_tokens([AddedToken(t, special=True, normalized=False) for t in ("<image>", "<video>")],
                         special_tokens=True)
    image_id, video_id = tokenizer.convert_tokens_to_ids(["<image>", "<video>"])
    config = LlavaOnevisionConfig(text_config=text.to_dict(), vision_config=vision.to_dict(),
                                  image_token_index=image_id, video_token_index=video_id, vision_feature_layer=-1,
                                  vision_feature_select_strategy="full", projector_hidden_act="gelu",
                                  tie_word_embeddings=text.tie_word_embeddings)
    renamed = {}
    for key, value in tensors.items():
        new = transformers_key(key)
        if new is not None:
            renamed[new] = value
    with torch.device("meta"):  # no random init: every tensor comes from the release
        model = LlavaOnevisionForConditionalGeneration(config)
    expected = set(model.state_dict())
    if text.tie_word_embeddings and "lm_head.weight" not in renamed:
        renamed["lm_head.weight"] = renamed.get("model.language_model.embed_tokens.weight")
    missing, unexpected = sorted(expected - set(renamed)), sorted(set(renamed) - expected)
    if missing or unexpected:
        what = f"no tensor for {missing[0]}" if missing else f"unknown tensor {unexpected[0]}"
        raise Loc3rError(f"{in_dir}: {what} ({len(missing)} missing, {len(unexpected)} unexpected)")
    for name, target in model.state_dict().items():
        if tuple(renamed[name].shape) != tuple(target.shape):
            raise Loc3rError(f"{in_dir}: tensor {name} has shape {tuple(renamed[name].shape)}, the config gives "
                             f"{tuple(target.shape)}")
    model.load_state_dict(renamed, assign=True)
    if text.tie_word_embeddings:
        model.tie_weights()
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:  # Qwen2's table has spare rows: rarely needed
        model.resize_token_embeddings(len(tokenizer), mean_resizing=True)
    model.save_pretrained(str(tmp))
    tokenizer.save_pretrained(str(tmp))
    write_json(tmp / "preprocessor_config.json", {  # SigLIP's: LLaVA-NeXT's image processor for this tower
        "image_mean": [0.5, 0.5, 0.5], "image_std": [0.5, 0.5, 0.5], "resample": 3,
        "size": {"height": vision.image_size, "width": vision.image_size}})
    return {"tensors": len(renamed), "vision": f"SigLIP {vision.hidden_size} wide, {vision.num_hidden_layers} layers, "
            f"{vision.image_size} px / {vision.patch_size} px patches", "llm": f"Qwen2 {text.hidden_size} wide, "
            f"{text.num_hidden_layers} layers", "video_settings": _video_settings(release)}


def convert_llava_video(in_dir: str | Path, out_dir: str | Path, overwrite: bool = False) -> dict:
    """IN_DIR (official release or transformers format) -> OUT_DIR, written atomically; returns OUT_DIR's
    loc3r_source.json content (`layout` says which one IN_DIR was)."""
    in_dir, out_dir = Path(in_dir), Path(out_dir)
    if not in_dir.is_dir():
        raise Loc3rError(f"{in_dir}: not a directory")
    if out_dir.resolve() == in_dir.resolve():
        raise Loc3rError(f"{out_dir}: the output must differ from the input")
    check_replaceable(out_dir, overwrite, previous_conversion)
    layout = detect_layout(in_dir)
    with atomic_dir(out_dir) as tmp:
        if layout == "transformers":
            from loc3r.model.tokenizer import load_tokenizer

            LlavaOnevisionConfig.from_pretrained(str(in_dir))  # readable
            load_tokenizer(in_dir)  # has <video>
            read_safetensors(in_dir)  # safetensors, no pickles
            for f in in_dir.iterdir():
                if f.is_file() and f.suffix not in PICKLE_SUFFIXES:
                    shutil.copy2(f, tmp / f.name)
            source = {"video_settings": {}}
        else:
            source = convert_llava_next(in_dir, tmp)
        source = {"format": FORMAT, "layout": layout, "source": str(in_dir), **source}
        write_json(tmp / SOURCE_NAME, source)
    return source


@dataclass
class ConvertLlavaVideoConfig:
    """The arguments of `loc3r convert-llava-video` (generated from these fields and their comments)."""

    in_dir: Path  # the official LLaVA-Video release (e.g. LLaVA-Video-7B-Qwen2) or a transformers-format copy
    out_dir: Path  # directory to write (an empty one or a previous conversion is replaced; else only --overwrite)
    overwrite: bool = False  # replace out_dir whatever it holds

    POSITIONAL: ClassVar[tuple] = ("in_dir", "out_dir")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_dataclass_arguments(parser, ConvertLlavaVideoConfig)


def run(args: argparse.Namespace) -> int:
    args = dataclass_from_args(ConvertLlavaVideoConfig, args)
    if args.in_dir.is_dir():
        layout = detect_layout(args.in_dir)
        print(f"{args.in_dir}: " + ("LLaVA-NeXT release layout (LlavaQwenForCausalLM): converting to LlavaOnevision"
                                    if layout == "llava-next" else
                                    "already in transformers format (LlavaOnevision): checking and copying"),
              flush=True)
    source = convert_llava_video(args.in_dir, args.out_dir, args.overwrite)
    if source["layout"] == "llava-next":
        print(f"wrote {args.out_dir}: {source['llm']}, {source['vision']}; video settings {source['video_settings']}")
    else:
        print(f"wrote {args.out_dir}")
    print(f"use it with: loc3r train --preset llava_video_7b --base {args.out_dir} ...")
    return 0
