"""The paper's 7B on a GPU without downloading anything: LLaVA-Video-7B-Qwen2's exact shapes (SigLIP so400m with 26
layers, Qwen2-7B, the released 512 px DPT CUT3R) with random weights, allocated and initialised directly on the GPU
(no CPU copy); 32 frames of 384 px, bf16, the grid token layout and the time instruction.

Prints one table: per-query latency split into CUT3R / vision / prefill / decode (16 tokens) and its peak memory;
the peak memory of one LoRA training step on one GPU (rank 64, activation checkpointing); with --fsdp-step under
torchrun, that of one full fine-tuning step with FSDP2 per GPU, at the launched world size.

    python benchmarks/bench_7b_gpu.py                                    # one GPU: latency, LoRA step
    torchrun --nproc_per_node 8 benchmarks/bench_7b_gpu.py --fsdp-step   # full fine-tuning memory per GPU
    python benchmarks/bench_7b_gpu.py --smoke                            # CPU: the same code, scaled-down shapes
"""

from __future__ import annotations

import argparse
import sys
import time
from contextlib import contextmanager

import numpy as np
import torch
from transformers import LlavaOnevisionConfig, Qwen2Config, SiglipVisionConfig

from loc3r import parallel
from loc3r.constants import VIDEO_TOKEN
from loc3r.data.sample import Sample
from loc3r.model.config import Loc3RConfig
from loc3r.model.loc3r import Loc3R
from loc3r.model.processor import Collator
from loc3r.model.tokenizer import TINY_SPECIAL_TOKENS, build_tiny_tokenizer
from loc3r.priors.cut3r import Cut3r, Cut3rConfig

WORDS = "i am standing next to the bed , facing the table . what is on my left ?".split()
SITUATION, QUESTION = "I am standing next to the bed, facing the table.", "What is on my left?"


def shapes(smoke: bool) -> tuple[SiglipVisionConfig, Qwen2Config, Cut3rConfig, int]:
    """(vision, text, CUT3R, frames): the 7B's, or a scaled-down set for a CPU smoke run."""
    if smoke:
        return (SiglipVisionConfig(hidden_size=144, intermediate_size=288, num_hidden_layers=2, num_attention_heads=2,
                                   image_size=56, patch_size=14, vision_use_head=False),
                Qwen2Config(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                            num_key_value_heads=2, vocab_size=512, max_position_embeddings=4096),
                Cut3rConfig.tiny(), 4)
    return (SiglipVisionConfig(hidden_size=1152, intermediate_size=4304, num_hidden_layers=26, num_attention_heads=16,
                               image_size=384, patch_size=14, vision_use_head=False),
            Qwen2Config(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                        num_key_value_heads=4, vocab_size=152064, max_position_embeddings=32768, rope_theta=1e6,
                        rms_norm_eps=1e-6, tie_word_embeddings=False),
            Cut3rConfig(), 32)


def build(smoke: bool, device: torch.device, dtype: torch.dtype) -> tuple[Loc3R, Cut3r, Collator, int]:
    vision, text, cut3r_config, frames = shapes(smoke)
    tokenizer = build_tiny_tokenizer(WORDS)
    vlm = LlavaOnevisionConfig(vision_config=vision.to_dict(), text_config=text.to_dict(),
                               image_token_index=TINY_SPECIAL_TOKENS.index("<image>"),
                               video_token_index=TINY_SPECIAL_TOKENS.index(VIDEO_TOKEN), vision_feature_layer=-1,
                               vision_feature_select_strategy="full", tie_word_embeddings=text.tie_word_embeddings)
    config = Loc3RConfig(vlm=vlm.to_dict(), prior="cut3r", cut3r_dim=cut3r_config.dec_embed_dim, num_frames=frames,
                         dtype="bfloat16" if dtype == torch.bfloat16 else "float32", time_instruction=True)
    with torch.device(device):  # allocated and initialised where they run: no CPU copy of the 7B
        model = Loc3R(config, tokenizer)
        cut3r = Cut3r(cut3r_config)
    return model, cut3r, Collator(tokenizer, model.config, for_generation=True), frames


def sample(model: Loc3R, camera_tokens: np.ndarray, for_training: bool = False) -> Sample:
    c = model.config
    T, S, G = c.num_frames, c.image_size, c.tokens_per_frame
    rng = np.random.default_rng(0)
    return Sample(scene_id="bench", question_id=0, frames=rng.integers(0, 256, (T, S, S, 3), dtype=np.uint8),
                  camera_poses_bev=np.tile(np.eye(4, dtype=np.float32), (T, 1, 1)),
                  layout_xy=rng.normal(size=(T, G, 2)).astype(np.float32), layout_valid=np.ones((T, G), bool),
                  situation=SITUATION, question=QUESTION, answers=["the table"],
                  position_xy=np.zeros(2, np.float32), yaw_rad=0.3, has_situation=True, camera_tokens=camera_tokens,
                  frame_times=np.linspace(0, 30, T), duration_s=31.0)


@contextmanager
def timed(device: torch.device, out: dict, key: str):
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    yield
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    out[key] = time.perf_counter() - t0


def peak_gib(device: torch.device) -> float | None:
    return torch.cuda.max_memory_allocated(device) / 2 ** 30 if device.type == "cuda" else None


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def query_latency(model: Loc3R, cut3r: Cut3r, collate: Collator, frames: int, device, decode_tokens: int) -> dict:
    """One query, timed part by part (after one warm-up run)."""
    cut3r_size = cut3r.config.image_size
    images = torch.rand(frames, 3, cut3r_size * 3 // 4, cut3r_size, device=device) * 2 - 1  # 4:3 frames, long 512
    result = {}
    for _ in range(2):  # warm-up, then measured
        reset_peak(device)
        with torch.no_grad():
            with timed(device, result, "cut3r"):
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                    tokens = cut3r(images).camera_tokens.float().cpu().numpy()
            batch = collate([sample(model, tokens)]).to(device)
            with timed(device, result, "vision"):
                embeds = model.embed_inputs(batch)
            mask = batch.attention_mask
            positions = (mask.cumsum(-1) - 1).clamp(min=0)
            with timed(device, result, "prefill"):
                out = model.language_model(embeds, mask, positions, use_cache=True)
            with timed(device, result, "decode"):
                for _ in range(decode_tokens):
                    token = model.vlm.lm_head(out.last_hidden_state[:, -1]).argmax(-1)
                    mask = torch.cat([mask, torch.ones_like(mask[:, :1])], 1)
                    positions = torch.cat([positions, positions[:, -1:] + 1], 1)
                    out = model.language_model(model.vlm.get_input_embeddings()(token)[:, None], mask,
                                               positions[:, -1:], out.past_key_values, True)
    result["prompt_tokens"] = int(batch.input_ids.shape[1])
    result["peak_gib"] = peak_gib(device)
    return result


def training_step(model: Loc3R, frames: int, info, strategy: str) -> float | None:
    """Peak memory of one optimizer step (activation checkpointing, AdamW on what is trainable)."""
    c = model.config
    collate = Collator(model.tokenizer, c)
    tokens = np.random.default_rng(1).normal(size=(frames, c.cut3r_dim)).astype(np.float32)
    batch = collate([sample(model, tokens, True)]).to(info.device)
    wrapped = parallel.wrap_model(model, info, strategy, activation_checkpointing=True)
    optimizer = torch.optim.AdamW(model.trainable_parameters(), lr=1e-5)
    reset_peak(info.device)
    out = wrapped(batch)
    out.loss.backward()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    return peak_gib(info.device)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--smoke", action="store_true", help="scaled-down shapes on the CPU (checks the code path)")
    p.add_argument("--fsdp-step", action="store_true", help="one full fine-tuning step with FSDP2 (under torchrun)")
    p.add_argument("--lora-rank", type=int, default=64)
    p.add_argument("--decode-tokens", type=int, default=16)
    a = p.parse_args()
    info = parallel.compute_init("cpu" if a.smoke else None)
    device = info.device
    if device.type != "cuda" and not a.smoke:
        print("no GPU: run with --smoke for the CPU check of this script", file=sys.stderr)
        return 2
    dtype = torch.float32 if a.smoke else torch.bfloat16
    rows = []
    torch.manual_seed(0)
    if a.fsdp_step:
        model, _, _, frames = build(a.smoke, device, dtype)
        rows.append((f"full fine-tuning step, FSDP2, world size {info.world_size}", "peak GiB per GPU",
                     training_step(model, frames, info, "fsdp")))
    else:
        model, cut3r, collate, frames = build(a.smoke, device, dtype)
        n = sum(p.numel() for p in model.parameters()) + sum(p.numel() for p in cut3r.parameters())
        lat = query_latency(model.eval(), cut3r.eval(), collate, frames, device, a.decode_tokens)
        rows += [(f"query ({frames} frames, {lat['prompt_tokens']} prompt tokens, {n / 1e9:.2f}B parameters)",
                  "total s", sum(lat[k] for k in ("cut3r", "vision", "prefill", "decode")))]
        rows += [(f"  {k}", "s", lat[k]) for k in ("cut3r", "vision", "prefill")]
        rows += [(f"  decode ({a.decode_tokens} tokens)", "s", lat["decode"]), ("  peak memory", "GiB", lat["peak_gib"])]
        del cut3r
        model.add_lora(a.lora_rank)
        model.train()
        rows.append((f"LoRA step (rank {a.lora_rank}, activation checkpointing, 1 GPU)", "peak GiB",
                     training_step(model, frames, info, "ddp")))
    if info.is_main:
        print(f"{'what':<72}{'unit':>18}{'value':>10}")
        for what, unit, value in rows:
            print(f"{what:<72}{unit:>18}{'-' if value is None else f'{value:.3f}':>10}")
    parallel.compute_cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
