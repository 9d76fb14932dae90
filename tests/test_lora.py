"""LoRA fine-tuning (`loc3r train --lora R`, peft): only the adapters, the camera projector and the heads learn; a
checkpoint holds merged plain weights that give the unmerged model's outputs without peft; a LoRA run resumes
exactly."""

import pytest
import torch
from safetensors.torch import load_file
from test_collate import WORDS, make_samples
from test_train import train_args, weights

from loc3r.train import loop as train_mod
from loc3r.errors import Loc3rError
from loc3r.model.config import Loc3RConfig
from loc3r.model.loc3r import Loc3R
from loc3r.model.processor import Collator
from loc3r.model.tokenizer import build_tiny_tokenizer

pytest.importorskip("peft")


def lora_model(rank=4):
    torch.manual_seed(0)
    model = Loc3R(Loc3RConfig.tiny(num_frames=2), build_tiny_tokenizer(WORDS))
    model.add_lora(rank)
    with torch.no_grad():  # peft starts B at zero (the base model exactly): give the adapters something to merge
        for name, p in model.named_parameters():
            if ".lora_B." in name:
                p.normal_(0, 0.05)
    return model


def test_only_adapters_projector_and_heads_learn():
    model = lora_model()
    batch = Collator(model.tokenizer, model.config)(make_samples(model.config, 2))
    model(batch).loss.backward()
    learning = {n for n, p in model.named_parameters() if p.grad is not None and p.grad.abs().sum() > 0}
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert learning <= trainable
    allowed = ("camera_projector.", "layout_head.", "position_head.", "orientation_head.")
    assert all(".lora_" in n or n.startswith(allowed) for n in trainable), sorted(trainable)
    lora = [n for n in trainable if ".lora_" in n]
    layers = model.config.vlm["text_config"]["num_hidden_layers"]
    assert len(lora) == layers * 7 * 2  # q, k, v, o, gate, up, down: A and B each
    assert all(n in learning for n in lora if ".lora_A." in n)  # B != 0 here, so A gets gradients too
    assert not any("vision_tower" in n or "embed_tokens" in n for n in trainable)


def test_merged_checkpoint_gives_the_unmerged_outputs(tmp_path):
    model = lora_model().eval()
    batch = Collator(model.tokenizer, model.config)(make_samples(model.config, 2))
    with torch.no_grad():
        unmerged = model(batch)
    model.save_pretrained(tmp_path / "ckpt")
    names = set(load_file(str(tmp_path / "ckpt" / "model.safetensors")))
    assert not any("lora" in n or "base_layer" in n for n in names)
    plain = Loc3R.from_pretrained(tmp_path / "ckpt").eval()  # no peft layers
    assert not any("lora" in n for n, _ in plain.named_parameters())
    with torch.no_grad():
        merged = plain(batch)
    for name in unmerged.losses:
        torch.testing.assert_close(merged.losses[name], unmerged.losses[name], rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(merged.position.mu, unmerged.position.mu, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(merged.layout.mu, unmerged.layout.mu, rtol=1e-4, atol=1e-5)
    torch.manual_seed(0)  # the same model without adapters answers otherwise: the merge carried them
    base = Loc3R(Loc3RConfig.tiny(num_frames=2), build_tiny_tokenizer(WORDS)).eval()
    with torch.no_grad():
        assert (base(batch).losses["lm"] - merged.losses["lm"]).abs() > 1e-3


def test_lora_run_resumes_exactly(synth_data, tmp_path):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        full, split = tmp_path / "full", tmp_path / "split"
        common = ["--batch-size", "2", "--lr", "1e-3", "--warmup", "1", "--lora", "4", "--save-every", "2"]
        train_mod.train(train_args(synth_data, full, "--steps", "4", *common))
        train_mod.train(train_args(synth_data, split, "--steps", "2", *common))
        train_mod.train(train_args(synth_data, split, "--steps", "4", *common, "--resume"))
        wf, ws = weights(full / "checkpoints" / "step_0000004"), weights(split / "checkpoints" / "step_0000004")
        assert wf.keys() == ws.keys()
        for k in wf:
            assert torch.equal(wf[k], ws[k]), k
        with pytest.raises(Loc3rError, match="a --lora run: resume it with the same --lora"):
            train_mod.train(train_args(synth_data, split, "--steps", "5", "--batch-size", "2", "--resume"))
    finally:
        torch.set_num_threads(threads)
