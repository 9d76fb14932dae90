"""`loc3r convert-llava-video`: a tiny random model saved in the official LLaVA-Video release layout (LLaVA-NeXT's
LlavaQwenForCausalLM: key names, config fields, sharded safetensors, a Qwen-style tokenizer without <image>/<video>)
is converted; the converted model inside Loc3R gives the logits of a reference computed straight from the original
layout's definition (LLaVA-NeXT: SigLIP minus its last layer, mlp2x_gelu projector, get_2dPool, add_token_per_grid,
the Qwen2 LLM)."""

import json
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM, SiglipVisionConfig, SiglipVisionModel

from loc3r.cli import main
from loc3r.model.config import Loc3RConfig
from loc3r.model.convert_llava_video import VISION_PREFIX, convert_llava_video
from loc3r.model.loc3r import Loc3R, position_ids_from_mask
from loc3r.model.tokenizer import CHATML_TEMPLATE

WORDS = ["what", "is", "on", "my", "left", "?", "i", "am", "by", "the", "bed", ".", "\n"]
SPECIAL = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            rms_norm_eps=1e-6, rope_theta=1000000.0, max_position_embeddings=4096, hidden_act="silu",
            tie_word_embeddings=False)
VISION = dict(hidden_size=144, intermediate_size=288, num_hidden_layers=2, num_attention_heads=2, image_size=56,
              patch_size=8, layer_norm_eps=1e-6, vision_use_head=False)  # 7 x 7 patches: pooled to 4 x 4 (or 3 x 3)


def write_release(d: Path, pool_mode: str = "bilinear", seed: int = 0) -> None:
    """A tiny LLaVA-Video in the layout of lmms-lab/LLaVA-Video-7B-Qwen2 (two shards + index)."""
    d.mkdir(parents=True)
    torch.manual_seed(seed)
    vocab = {t: i for i, t in enumerate(SPECIAL + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<|endoftext|>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                            chat_template=CHATML_TEMPLATE).save_pretrained(str(d))
    text = Qwen2Config(vocab_size=len(vocab) + 8, initializer_range=0.1, **TEXT)  # Qwen2's table has spare rows
    llm = Qwen2ForCausalLM(text)
    tower = SiglipVisionModel(SiglipVisionConfig(**VISION))
    tensors = {k: v for k, v in llm.state_dict().items()}
    tensors.update({VISION_PREFIX + k.removeprefix("vision_model."): v for k, v in tower.state_dict().items()})
    tensors.update({"model.mm_projector.0.weight": torch.randn(64, 144) * 0.1, "model.mm_projector.0.bias":
                    torch.randn(64) * 0.1, "model.mm_projector.2.weight": torch.randn(64, 64) * 0.1,
                    "model.mm_projector.2.bias": torch.randn(64) * 0.1, "model.image_newline": torch.randn(64)})
    keys = sorted(tensors)
    shards = {"model-00001-of-00002.safetensors": keys[::2], "model-00002-of-00002.safetensors": keys[1::2]}
    for name, names in shards.items():
        save_file({k: tensors[k].contiguous() for k in names}, str(d / name), metadata={"format": "pt"})
    index = {"metadata": {}, "weight_map": {k: name for name, names in shards.items() for k in names}}
    (d / "model.safetensors.index.json").write_text(json.dumps(index))
    config = {"architectures": ["LlavaQwenForCausalLM"], "model_type": "llava", "vocab_size": text.vocab_size,
              **TEXT, "mm_vision_tower": "google/siglip-so400m-patch14-384", "mm_hidden_size": 144,
              "mm_projector_type": "mlp2x_gelu", "mm_vision_select_layer": -2, "mm_vision_select_feature": "patch",
              "mm_newline_position": "grid", "mm_spatial_pool_mode": pool_mode, "mm_spatial_pool_stride": 2,
              "mm_patch_merge_type": "spatial_unpad", "image_aspect_ratio": "anyres_max_9",
              "add_time_instruction": True, "torch_dtype": "float32"}
    (d / "config.json").write_text(json.dumps(config))


def reference_logits(release: Path, frames: torch.Tensor, before: list[int], after: list[int],
                     pool_mode: str) -> torch.Tensor:
    """LLaVA-NeXT's forward for `before <image> after` with a video [T, 3, S, S], from the release's tensors."""
    tensors = {}
    for f in sorted(release.glob("*.safetensors")):
        tensors.update(load_file(str(f)))
    tower = SiglipVisionModel(SiglipVisionConfig(**VISION)).eval()
    tower.load_state_dict({k[len(VISION_PREFIX):]: v for k, v in tensors.items() if k.startswith(VISION_PREFIX)})
    llm = Qwen2ForCausalLM(Qwen2Config(vocab_size=tensors["lm_head.weight"].shape[0], **TEXT)).eval()
    llm.load_state_dict({k: v for k, v in tensors.items() if k.startswith(("model.layers", "model.embed_tokens",
                                                                              "model.norm", "lm_head"))})
    with torch.no_grad():
        features = tower(frames, output_hidden_states=True).hidden_states[-1]  # the tower's last kept layer
        features = F.linear(F.gelu(F.linear(features, tensors["model.mm_projector.0.weight"],
                                             tensors["model.mm_projector.0.bias"])),
                            tensors["model.mm_projector.2.weight"], tensors["model.mm_projector.2.bias"])
        T, side = frames.shape[0], VISION["image_size"] // VISION["patch_size"]
        grid = features.view(T, side, side, -1).permute(0, 3, 1, 2)  # get_2dPool
        if pool_mode == "bilinear":
            grid = F.interpolate(grid, size=[math.ceil(side / 2)] * 2, mode="bilinear")
        else:
            grid = F.avg_pool2d(grid, 2)
        grid = grid.permute(0, 2, 3, 1)  # [T, h, w, D]
        h = grid.shape[1]
        # add_token_per_grid: [T, h, w, D] -> each row of each frame followed by image_newline
        x = grid.reshape(T, 1, h, h, -1).permute(4, 0, 2, 1, 3).flatten(1, 2).flatten(2, 3)  # [D, T * h, w]
        newline = tensors["model.image_newline"][:, None, None].expand(*x.shape[:-1], 1)
        video = torch.cat([x, newline], -1).flatten(1, 2).transpose(0, 1)  # [T * h * (w + 1), D]
        embed = llm.get_input_embeddings()
        inputs = torch.cat([embed(torch.tensor(before)), video, embed(torch.tensor(after))])[None]
        return llm(inputs_embeds=inputs).logits[0]


@pytest.mark.parametrize("pool_mode", ["bilinear", "average"])
def test_converted_release_gives_the_original_logits(tmp_path, pool_mode, capsys):
    release, out = tmp_path / "LLaVA-Video-tiny", tmp_path / "hf"
    write_release(release, pool_mode)
    assert main(["convert-llava-video", str(release), str(out)]) == 0
    printed = capsys.readouterr().out
    assert "LLaVA-NeXT release layout (LlavaQwenForCausalLM)" in printed and "SigLIP 144 wide, 2 layers" in printed
    config = Loc3RConfig.llava_video_7b(out, prior="none", num_frames=2, dtype="float32")
    assert (config.newline_layout, config.pool_mode, config.time_instruction) == ("grid", pool_mode, True)
    assert config.frame_grid == ((4, 4) if pool_mode == "bilinear" else (3, 3))
    model = Loc3R(config).eval()
    tok = model.tokenizer
    before = tok("<|im_start|> i am by the bed .", add_special_tokens=False).input_ids
    after = tok("what is on my left ? <|im_end|>", add_special_tokens=False).input_ids
    ids = before + [config.video_token_id] * config.video_placeholder_len + after
    frames = torch.randn(2, 3, 56, 56)
    batch = SimpleNamespace(input_ids=torch.tensor([ids]), attention_mask=torch.ones(1, len(ids), dtype=torch.long),
                            pixel_values_videos=frames[None])  # what embed_inputs reads of a Batch
    with torch.no_grad():
        hidden = model.language_model(model.embed_inputs(batch), batch.attention_mask,
                                      position_ids_from_mask(batch.attention_mask)).last_hidden_state
        ours = model.vlm.lm_head(hidden)[0]
    reference = reference_logits(release, frames, before, after, pool_mode)
    assert ours.shape[0] == reference.shape[0]
    words = len(SPECIAL + WORDS)  # the release's tokens (added rows: <image>, <video>, <Pos>, <Ori>)
    torch.testing.assert_close(ours[:, :words], reference[:, :words], rtol=1e-4, atol=1e-4)
    assert reference.std() > 0.1  # random weights large enough for the comparison to mean something


def test_convert_refuses_pickles_and_foreign_output_and_copies_transformers_layout(tmp_path, capsys):
    release = tmp_path / "release"
    write_release(release)
    pickled = tmp_path / "pickled"
    pickled.mkdir()
    (pickled / "config.json").write_text((release / "config.json").read_text())
    (pickled / "pytorch_model.bin").write_bytes(b"\x80\x04not really")
    assert main(["convert-llava-video", str(pickled), str(tmp_path / "o1")]) == 2
    assert f"{pickled / 'pytorch_model.bin'}: pickled weights are refused" in capsys.readouterr().err
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("keep me")
    assert main(["convert-llava-video", str(release), str(foreign)]) == 2
    assert "not empty and not a previous conversion" in capsys.readouterr().err
    assert (foreign / "notes.txt").read_text() == "keep me"
    out = tmp_path / "hf"
    assert convert_llava_video(release, out)["layout"] == "llava-next"
    assert convert_llava_video(release, out)["layout"] == "llava-next"  # a previous conversion is replaced
    copy = tmp_path / "hf-copy"
    assert main(["convert-llava-video", str(out), str(copy)]) == 0
    assert "already in transformers format (LlavaOnevision)" in capsys.readouterr().out
    a = Loc3R(Loc3RConfig.llava_video_7b(out, prior="none", num_frames=2, dtype="float32"))
    b = Loc3R(Loc3RConfig.llava_video_7b(copy, prior="none", num_frames=2, dtype="float32"))
    for (name, x), (_, y) in zip(a.vlm.state_dict().items(), b.vlm.state_dict().items()):
        assert torch.equal(x, y), name
