"""Loc3R on the tiny preset: equivalence with LlavaOnevision, token layout, gradients, overfitting, generation,
checkpoints (one process vs a fresh one) and the LLaVA-Video loading path on a tiny random HF directory."""

import json
import math
import subprocess
import sys
import textwrap
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_collate import (  # shared sample builder (tests/ is on sys.path under pytest)
    WORDS,
    make_samples,
)
from transformers import (LlavaOnevisionConfig, LlavaOnevisionForConditionalGeneration, PreTrainedTokenizerFast,
                          Qwen2Config, SiglipVisionConfig)
from transformers.models.llava_onevision.image_processing_pil_llava_onevision import LlavaOnevisionImageProcessorPil

from loc3r import geometry
from loc3r.errors import Loc3rError
from loc3r.model.config import Loc3RConfig
from loc3r.model.loc3r import Loc3R
from loc3r.model.losses import gaussian_nll
from loc3r.model.processor import Collator
from loc3r.model.tokenizer import CHATML_TEMPLATE, build_tiny_tokenizer
from loc3r.priors.poses import PosesPrior

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tok():
    return build_tiny_tokenizer(WORDS)


def tiny(tok, seed=0, init_range=None, **overrides) -> Loc3R:
    torch.manual_seed(seed)
    config = Loc3RConfig.tiny(**{"num_frames": 2, **overrides})
    if init_range is not None:  # larger random weights: a random model that does not repeat one token
        config.vlm["text_config"]["initializer_range"] = init_range
    return Loc3R(config, tok)


def test_sizes_match_llava_onevision(tok):
    config = Loc3RConfig.tiny()
    assert config.frame_grid == (4, 4) and config.tokens_per_frame == 16 and config.num_frames == 8
    assert config.newline_layout == "grid" and config.video_placeholder_len == 8 * (1 + 4 * (4 + 1))
    assert Loc3RConfig.tiny(newline_layout="one_token").video_placeholder_len == 8 * (16 + 1) + 1
    # what LlavaOnevision itself emits for a video: T * n pooled tokens + one newline
    model = tiny(tok, prior="none", newline_layout="one_token")
    px = torch.zeros(1, 2, 3, 64, 64)
    assert model.vlm.model.get_video_features(px).pooler_output.shape[1] == model.config.video_placeholder_len
    vlm = LlavaOnevisionConfig().to_dict()  # SigLIP 384 px, 14 px patches: 27 x 27
    paper = Loc3RConfig(vlm=vlm, num_frames=32)  # LLaVA-Video-7B: bilinear 14 x 14, a newline per row, CUT3R
    assert paper.frame_grid == (14, 14) and paper.video_placeholder_len == 32 * (1 + 14 * 15)
    assert Loc3RConfig(vlm=vlm, num_frames=32, newline_layout="one_token").video_placeholder_len == 32 * 197 + 1
    lmms_eval = Loc3RConfig(vlm=vlm, num_frames=32, pool_mode="average")  # lmms-eval llava_vid: 13 x 13
    assert lmms_eval.frame_grid == (13, 13) and lmms_eval.frame_grid_extent == 364 / 384
    assert sum(p.numel() for p in model.parameters()) < 5e6


def test_prior_none_equals_llava_onevision(tok):
    """Without camera tokens and with transformers' layout our input embedding is exactly LlavaOnevision's own
    video path."""
    model = tiny(tok, prior="none", newline_layout="one_token").eval()
    batch = Collator(tok, model.config, for_generation=True)(make_samples(model.config, 2))  # left padded
    mask = batch.attention_mask
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    with torch.no_grad():
        ours = model.vlm.lm_head(model.language_model(model.embed_inputs(batch), mask, positions).last_hidden_state)
        theirs = model.vlm(input_ids=batch.input_ids, pixel_values_videos=batch.pixel_values_videos,
                           attention_mask=mask, position_ids=positions).logits
    real = mask.bool()
    assert torch.allclose(ours[real], theirs[real], atol=1e-5)


def test_average_pooling_is_the_mean_of_2x2_patches(tok):
    """pool_mode 'average' (lmms-eval's llava_vid) against a loop over the projected patches; at 72 px the 9 x 9
    patches pool to 4 x 4 and the last patch row and column are dropped, as 27 -> 13 for SigLIP-384."""
    config = Loc3RConfig.tiny(num_frames=2, prior="none", pool_mode="average")
    config.vlm["vision_config"]["image_size"] = 72
    model = Loc3R(config, tok)
    px = torch.randn(1, 2, 3, 72, 72)
    with torch.no_grad():
        ours = model.vision_tokens(px)  # [1, 2, 4, 4, D]
        tower = model.vlm.model.vision_tower(px[0], output_hidden_states=True).hidden_states[-1]  # [2, 81, Dv]
        patches = model.vlm.model.multi_modal_projector(tower).view(2, 9, 9, -1)
    assert ours.shape[2:4] == (4, 4) and model.config.frame_grid == (4, 4)
    for t in range(2):
        for r in range(4):
            for c in range(4):
                expected = patches[t, 2 * r:2 * r + 2, 2 * c:2 * c + 2].mean((0, 1))
                assert torch.allclose(ours[0, t, r, c], expected, atol=1e-5)


def test_a_frozen_towers_features_kept_by_frame_are_the_towers_and_computed_once(tok):
    """Loc3R.keep_frame_features: the vision tokens of a frozen tower are those it computes each time (with the
    gradients of what trains after it), the tower runs only on frames it has not seen (two videos of the same three
    frames in other orders: three frames, then none), frames past the memory budget are computed each time; a tower
    that trains keeps nothing."""
    config = Loc3RConfig.tiny(num_frames=3, prior="none", train_vision_tower=False)
    model = Loc3R(config, tok)
    frames = torch.randn(3, 3, 64, 64)
    px = torch.stack([frames, frames[[2, 0, 1]]])  # [2 videos, 3 frames, ...]
    seen = []
    model.vlm.model.vision_tower.register_forward_pre_hook(lambda m, args: seen.append(len(args[0])))
    reference = model.vision_tokens(px)
    assert model.keep_frame_features(1 << 20) and seen == [6]
    kept = model.vision_tokens(px)
    again = model.vision_tokens(px[:, [1, 2, 0]])
    assert seen == [6, 3] and torch.allclose(kept, reference, atol=1e-6)
    assert torch.allclose(again, reference[:, [1, 2, 0]], atol=1e-6)
    kept.sum().backward()  # the projector after the tower still learns
    assert model.vlm.model.multi_modal_projector.linear_1.weight.grad is not None
    one_frame = model.frame_features.store[next(iter(model.frame_features.store))]
    model.keep_frame_features(one_frame.numel() * one_frame.element_size())  # room for one frame's features
    model.vision_tokens(px)
    model.vision_tokens(px)
    assert seen == [6, 3, 3, 2] and len(model.frame_features.store) == 1
    from loc3r.model.frame_features import FrameFeatures

    kept_bf16 = FrameFeatures(1 << 20)  # the 7B's frames are bf16
    half = frames.bfloat16()
    assert torch.equal(kept_bf16(half, lambda f: f.float().mean((2, 3))), half.float().mean((2, 3)))
    trained = Loc3R(Loc3RConfig.tiny(num_frames=3, prior="none"), tok)  # the tiny preset trains its tower
    assert not trained.keep_frame_features(1 << 20) and trained.frame_features is None


def test_poses_prior_encoding():
    R = geometry.rot_z(0.3)
    pose = geometry.make_transform(R, [1.0, 2.0, 3.0])
    poses = torch.tensor(np.stack([pose, np.full((4, 4), -np.inf)]), dtype=torch.float32)[None]  # [1, 2, 4, 4]
    tokens = PosesPrior()(SimpleNamespace(camera_poses_bev=poses))
    expected = np.concatenate([[1, 2, 3], R[:, 0], R[:, 1], [1]])
    assert tokens.shape == (1, 2, 10)
    assert np.allclose(tokens[0, 0].numpy(), expected, atol=1e-6)
    assert (tokens[0, 1] == 0).all()  # lost tracking: zeros and validity flag 0


def expected_video_block(T: int, gh: int, gw: int, camera: bool, layout: str) -> list[str]:
    """The video block written out token by token: "cam t", "v t r c", "nl"."""
    out = []
    for t in range(T):
        out += [f"cam {t}"] * camera
        for r in range(gh):
            out += [f"v {t} {r} {c}" for c in range(gw)] + ["nl"] * (layout == "grid")
    return out + ["nl"] * (layout == "one_token")


@pytest.mark.parametrize("layout", ["grid", "one_token"])
@pytest.mark.parametrize("prior", ["poses", "none"])
def test_video_block_layout(tok, layout, prior):
    """Camera tokens, vision tokens (row-major, as LlavaOnevision pools them) and newlines land where a hand-built
    list puts them; the layout head reads the vision tokens and nothing else."""
    model = tiny(tok, num_frames=3, newline_layout=layout, prior=prior).eval()
    c = model.config
    batch = Collator(tok, c)(make_samples(c, 2))
    captured = {}
    hook = model.vlm.model.language_model.register_forward_pre_hook(
        lambda mod, args, kwargs: captured.update(embeds=kwargs["inputs_embeds"]), with_kwargs=True)
    with torch.no_grad():
        model(batch)
        camera = model.camera_projector(PosesPrior()(batch)) if prior != "none" else None  # [B, T, D]
        video = model.vlm.model.get_video_features(batch.pixel_values_videos).pooler_output  # [B, T * n + 1, D]
    hook.remove()
    T, n, (gh, gw) = 3, c.tokens_per_frame, c.frame_grid
    expected = expected_video_block(T, gh, gw, prior != "none", layout)
    assert len(expected) == c.video_placeholder_len
    vision_names = [e for e in expected if e.startswith("v ")]
    assert [expected[i] for i in c.vision_token_slots().reshape(-1)] == vision_names  # frame, then row-major
    for b in range(2):
        start = int((batch.input_ids[b] == c.video_token_id).nonzero()[0])
        block = captured["embeds"][b, start:start + c.video_placeholder_len]
        for i, name in enumerate(expected):
            kind, *where = name.split()
            if kind == "cam":
                reference = camera[b, int(where[0])]
            elif kind == "nl":
                reference = model.vlm.model.image_newline
            else:
                t, r, col = map(int, where)
                reference = video[b, t * n + r * gw + col]
            assert torch.allclose(block[i], reference, atol=1e-6), (b, i, name)
        # the layout head's input: exactly the vision tokens, in the layout targets' order
        states = model.vision_states(captured["embeds"][b:b + 1], batch.input_ids[b:b + 1])[0]  # [T, n, D]
        assert torch.allclose(states, video[b, :T * n].view(T, n, -1), atol=1e-6)


@pytest.mark.parametrize("image_size", [64, 76])
def test_vision_token_order_matches_layout_cells(tok, image_size):
    """Pooled token k sits at the centre of cell k of geometry.token_cell_index (the cells the layout targets use).
    At 76 px the 8 px patches cover 72 px (9 x 9 patches, pooled to 5 x 5), as SigLIP-384/14 covers 378 of 384
    px: the cells split the covered part only (config.frame_grid_extent), and the uncovered pixels get no token."""
    config = Loc3RConfig.tiny(num_frames=2)
    config.vlm["vision_config"]["image_size"] = image_size
    model = Loc3R(config, tok)
    S, P = model.config.image_size, model.config.vlm["vision_config"]["patch_size"]
    gh, gw = model.config.frame_grid
    n = S // P
    rows, cols = np.meshgrid(np.arange(n), np.arange(n), indexing="ij")  # SigLIP's patches, row-major
    patches = torch.tensor(np.stack([rows, cols], -1).reshape(1, -1, 2), dtype=torch.float32)
    pooled = model.vlm.model.apply_pooling(patches)[0].numpy()  # [gh * gw, 2] patch (row, col) each token samples
    cell = geometry.token_cell_index(S, S, (gh, gw), model.config.frame_grid_extent)  # [S, S] token of each pixel
    centre = (np.arange(S) + 0.5) / P - 0.5  # pixel centres in patch-index units
    pr, pc = np.meshgrid(centre, centre, indexing="ij")
    assert (cell[:n * P, :n * P] >= 0).all() and (cell[n * P:] == -1).all() and (cell[:, n * P:] == -1).all()
    for k in range(gh * gw):
        assert np.allclose(pooled[k], [pr[cell == k].mean(), pc[cell == k].mean()], atol=1.0 / P)  # within a pixel


def test_gradients_reach_trainable_parts_only(tok):
    model = tiny(tok, train_vision_tower=False)
    batch = Collator(tok, model.config)(make_samples(model.config, 3))
    model(batch).loss.backward()
    trainable = {
        "layout_head": model.layout_head, "position_head": model.position_head,
        "orientation_head": model.orientation_head, "camera_projector": model.camera_projector,
        "multi_modal_projector": model.vlm.model.multi_modal_projector,
        "llm": model.vlm.model.language_model,
    }
    for name, module in trainable.items():
        for p in module.parameters():
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert model.vlm.model.image_newline.grad.abs().sum() > 0
    vision = list(model.vlm.model.vision_tower.parameters())
    assert all(p.grad is None and not p.requires_grad for p in vision)
    ids = {id(p) for p in model.trainable_parameters()}
    assert not ids & {id(p) for p in vision} and id(model.vlm.model.image_newline) in ids
    # the tiny preset trains its (randomly initialised) vision tower, all but the unused post_layernorm
    model = tiny(tok)
    model(batch).loss.backward()
    for name, p in model.named_parameters():
        assert (p.grad is not None) == p.requires_grad == ("post_layernorm" not in name), name


def test_beta_nll_logs_the_nll_and_trains_on_the_weighted_terms(tok):
    """nll_beta: the logged layout / position losses stay the paper's NLL; the loss the gradient follows has their
    beta-NLL terms (loc3r.model.losses.gaussian_nll, beta) in their place (the tiny preset's 0.5; the 7B's 0)."""
    assert Loc3RConfig.tiny().nll_beta == 0.5
    model = tiny(tok, train_vision_tower=False, nll_beta=0.0)
    batch = Collator(tok, model.config)(make_samples(model.config, 3))
    with torch.no_grad():
        for p in [*model.layout_head.parameters(), *model.position_head.parameters()]:  # sigma != 1 (not the init)
            p.add_(0.3 * torch.randn_like(p))
        plain = model(batch)
        model.config.nll_beta = 0.5
        beta = model(batch)
    c = model.config
    for name in ("lm", "layout", "position", "orientation"):
        assert torch.equal(plain.losses[name], beta.losses[name]), name
    weighted = {name: gaussian_nll(*out, target, mask, c.sigma_floor, beta=0.5) for name, out, target, mask in (
        ("layout", beta.layout, batch.layout_xy, batch.layout_valid),
        ("position", beta.position, batch.position_xy, batch.has_situation))}
    expected = (beta.losses["lm"] + c.lambda_layout * weighted["layout"] + c.lambda_situation * (
        weighted["position"] + c.lambda_orientation * beta.losses["orientation"]))
    assert torch.allclose(beta.loss, expected, atol=1e-5) and not torch.allclose(beta.loss, plain.loss, atol=1e-3)


def test_overfits_one_batch_and_answers_it(tok):
    """Every loss part falls by > 90%. Gaussian NLLs can be negative, so for layout and position we measure their
    data term, the mean squared error of the predicted mean (min 0); for LM and orientation the CE / KL (min 0).
    Each frame is a 4x4 grid of flat-coloured cells whose layout target is a function of the cell's colour (as real
    targets are a function of what the cell shows), so the token -> target map is learnable."""
    model = tiny(tok)
    config = model.config
    samples = make_samples(config, 3)
    rng = np.random.default_rng(1)
    gh, gw = config.frame_grid
    for s in samples:
        cells = rng.integers(0, 256, (config.num_frames, gh, gw, 3), dtype=np.uint8)
        s.frames = np.repeat(np.repeat(cells, config.image_size // gh, 1), config.image_size // gw, 2)
        s.layout_xy = ((cells[..., :2] / 255 - 0.5) * 6).reshape(config.num_frames, -1, 2).astype(np.float32)
    batch = Collator(tok, config)(samples)

    def measure(out):
        valid, situated = batch.layout_valid, batch.has_situation
        return {"lm": out.losses["lm"].item(),
                "layout": ((out.layout.mu - batch.layout_xy) ** 2)[valid].mean().item(),
                "position": ((out.position.mu - batch.position_xy) ** 2)[situated].mean().item(),
                "orientation": out.losses["orientation"].item()}

    opt = torch.optim.AdamW(model.trainable_parameters(), lr=1e-3, weight_decay=0.0)
    first = None
    for _ in range(300):
        out = model(batch)
        now = measure(out)
        first = first or now
        if all(now[k] < 0.1 * first[k] for k in now) and now["lm"] < 0.05:  # and the answers memorised
            break
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    assert all(now[k] < 0.1 * first[k] for k in now) and now["lm"] < 0.05, (first, now)

    model.eval()
    predictions = model.predict(Collator(tok, config, for_generation=True)(samples), max_new_tokens=8)
    assert [p.answer for p in predictions] == [s.answer for s in samples]
    for p, s in zip(predictions, samples):
        if s.has_situation:
            assert np.abs(p.position_xy - s.position_xy).max() < 0.3
            assert abs(math.remainder(p.yaw_rad - s.yaw_rad, 2 * math.pi)) < math.radians(15)
            assert p.yaw_probs.shape == (36,) and abs(p.yaw_probs.sum() - 1) < 1e-5 and (p.position_sigma > 0).all()


def test_generation_cache_and_left_padding(tok):
    model = tiny(tok, init_range=0.3).eval()
    samples = make_samples(model.config, 3)
    samples[2].question = "which is closer the bed or the lamp or the table or the sofa?"  # a longer prompt
    collate = Collator(tok, model.config, for_generation=True)
    batch = collate(samples)
    cached = model.generate(batch, max_new_tokens=10, use_cache=True)
    uncached = model.generate(batch, max_new_tokens=10, use_cache=False)
    assert torch.equal(cached.token_ids, uncached.token_ids)
    assert len(set(cached.token_ids.flatten().tolist())) > 3  # a real test: not one repeated token
    for b, s in enumerate(samples):  # left padding changes nothing
        alone = model.generate(collate([s]), max_new_tokens=10)
        n = alone.token_ids.shape[1]
        assert torch.equal(alone.token_ids[0], cached.token_ids[b, :n])
        assert torch.allclose(alone.position.mu[0], cached.position.mu[b], atol=1e-5)
        assert torch.allclose(alone.orientation_logits[0], cached.orientation_logits[b], atol=1e-5)


LOAD_AND_RUN = """
import sys, numpy as np, torch
sys.path.insert(0, {tests!r})
from test_collate import make_samples
from loc3r.model.processor import Collator
from loc3r.model.loc3r import Loc3R
model = Loc3R.from_pretrained({ckpt!r}).eval()
assert model.vlm.lm_head.weight is model.vlm.get_input_embeddings().weight  # tied embeddings survive
samples = make_samples(model.config, 2)
with torch.no_grad():
    out = model(Collator(model.tokenizer, model.config)(samples))
gen = model.generate(Collator(model.tokenizer, model.config, for_generation=True)(samples), max_new_tokens=6)
np.savez({result!r}, loss=out.loss.numpy(), layout=out.layout.mu.numpy(), tokens=gen.token_ids.numpy())
"""


def test_save_and_load_in_a_fresh_process(tok, tmp_path):
    model = tiny(tok, init_range=0.3).eval()
    samples = make_samples(model.config, 2)
    with torch.no_grad():
        out = model(Collator(tok, model.config)(samples))
    gen = model.generate(Collator(tok, model.config, for_generation=True)(samples), max_new_tokens=6)
    model.save_pretrained(tmp_path / "ckpt")
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == [
        "chat_template.jinja", "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    script = LOAD_AND_RUN.format(tests=str(REPO / "tests"), ckpt=str(tmp_path / "ckpt"),
                                 result=str(tmp_path / "result.npz"))
    subprocess.run([sys.executable, "-c", textwrap.dedent(script)], check=True, cwd=REPO)
    result = np.load(tmp_path / "result.npz")
    assert np.array_equal(result["tokens"], gen.token_ids.numpy())
    assert np.allclose(result["loss"], out.loss.numpy(), rtol=0, atol=1e-6)
    assert np.allclose(result["layout"], out.layout.mu.numpy(), rtol=0, atol=1e-6)


def test_bad_checkpoints_raise_one_line_errors(tok, tmp_path):
    tiny(tok).save_pretrained(tmp_path / "ckpt")
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps({**config, "prior": "cut3r"}))
    with pytest.raises(Loc3rError, match=r"ckpt/model.safetensors: tensor camera_projector.0.weight has shape "
                                         r"\(192, 10\), expected \(192, 768\)"):
        Loc3R.from_pretrained(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "model.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(Loc3rError, match="not a readable safetensors file"):
        Loc3R.from_pretrained(tmp_path / "ckpt")
    (tmp_path / "ckpt" / "model.safetensors").unlink()
    with pytest.raises(Loc3rError, match="model.safetensors: no such file"):
        Loc3R.from_pretrained(tmp_path / "ckpt")
    with pytest.raises(Loc3rError, match="config.json: no such file"):
        Loc3R.from_pretrained(tmp_path / "nowhere")


# ---- the LLaVA-Video path on a tiny random model in the Hugging Face layout -------------------------------
def write_hf_llava_video(path: Path, spare_rows: int) -> PreTrainedTokenizerFast:
    """What a LLaVA-Video-7B-Qwen2 download in transformers format holds, at toy size: a byte-level BPE tokenizer
    with the Qwen2 special tokens and ChatML template, LlavaOnevision config + safetensors, preprocessor configs."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"]
    bpe = Tokenizer(models.BPE())
    bpe.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    bpe.decoder = decoders.ByteLevel()
    corpus = [" ".join(WORDS), "You are a helpful assistant.", "user assistant system"] * 20
    bpe.train_from_iterator(corpus, trainers.BpeTrainer(vocab_size=400, special_tokens=specials,
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    tok = PreTrainedTokenizerFast(tokenizer_object=bpe, eos_token="<|im_end|>", pad_token="<|endoftext|>",
                                  chat_template=CHATML_TEMPLATE)
    vision = SiglipVisionConfig(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                                image_size=28, patch_size=7, vision_use_head=False)  # 4x4 patches -> 2x2 tokens
    text = Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                       num_key_value_heads=2, vocab_size=len(tok) + spare_rows, tie_word_embeddings=False)
    config = LlavaOnevisionConfig(vision_config=vision, text_config=text,
                                  image_token_index=tok.convert_tokens_to_ids("<image>"),
                                  video_token_index=tok.convert_tokens_to_ids("<video>"))
    torch.manual_seed(0)
    # sharded like the 7B download (model-0000x-of-0000n.safetensors + model.safetensors.index.json)
    LlavaOnevisionForConditionalGeneration(config).save_pretrained(path, max_shard_size="300KB")
    tok.save_pretrained(path)
    clip = {"image_mean": [0.48145466, 0.4578275, 0.40821073], "image_std": [0.26862954, 0.26130258, 0.27577711]}
    LlavaOnevisionImageProcessorPil(size={"height": 28, "width": 28}, **clip).save_pretrained(path)
    (path / "video_preprocessor_config.json").write_text(json.dumps({
        "video_processor_type": "LlavaOnevisionVideoProcessor", "processor_class": "LlavaOnevisionProcessor",
        "do_resize": True, "size": {"height": 28, "width": 28}, "resample": 3, "do_rescale": True,
        "rescale_factor": 1 / 255, "do_normalize": True, **clip, "do_convert_rgb": True}))
    return tok


@pytest.mark.parametrize("spare_rows", [8, 0])  # Qwen2's embedding has spare rows; 0 forces a resize
def test_llava_video_path_on_a_tiny_random_checkpoint(tmp_path, spare_rows):
    base = tmp_path / "llava-video"
    base_tok = write_hf_llava_video(base, spare_rows)
    assert (base / "model.safetensors.index.json").is_file() and (base / "preprocessor_config.json").is_file()
    old_vocab = len(base_tok)
    config = Loc3RConfig.llava_video_7b(base, num_frames=2)
    assert config.prior == "cut3r" and config.dtype == "bfloat16" and config.image_size == 28
    assert config.image_mean == (0.48145466, 0.4578275, 0.40821073)  # read from the preprocessor config
    model = Loc3R(config)
    emb = model.vlm.get_input_embeddings().weight
    assert [model.pos_token_id, model.ori_token_id] == [old_vocab, old_vocab + 1]
    assert emb.shape[0] == old_vocab + max(spare_rows, 2)
    assert torch.equal(emb[old_vocab], emb[:old_vocab].float().mean(0).to(emb.dtype))
    assert torch.equal(model.vlm.lm_head.weight[old_vocab + 1],
                       model.vlm.lm_head.weight[:old_vocab].float().mean(0).to(emb.dtype))

    samples = make_samples(config, 2, cut3r_dim=768)
    batch = Collator(model.tokenizer, config)(samples)
    assert model.tokenizer.decode(batch.input_ids[0, :20]).startswith("<|im_start|>system\nYou are a helpful")
    out = model(batch)
    assert torch.isfinite(out.loss) and out.layout.mu.shape == (2, 2, 4, 2)
    out.loss.backward()
    assert model.camera_projector[0].weight.grad is not None
    model.eval()
    gen_batch = Collator(model.tokenizer, config, for_generation=True)(samples)
    predictions = model.predict(gen_batch, max_new_tokens=4)
    assert len(predictions) == 2 and isinstance(predictions[0].answer, str)
    model.save_pretrained(tmp_path / "ckpt")
    reloaded = Loc3R.from_pretrained(tmp_path / "ckpt").eval()
    assert torch.equal(reloaded.generate(gen_batch, 4).token_ids, model.generate(gen_batch, 4).token_ids)
