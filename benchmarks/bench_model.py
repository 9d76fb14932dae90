"""Training-step speed of Loc3R vs plain transformers LlavaOnevision (tiny preset, CPU).

Both run forward + backward on the same weights (Loc3R's own `vlm`) and the same sequence length: Loc3R's
input has T camera tokens more in its video block, so the plain model's prompt gets T extra text tokens.
The plain model gets `pixel_values_videos` and HF's own `labels` loss (logits over the whole sequence); Loc3R
adds the prior, camera projector, the layout / situation heads and their losses, and applies lm_head to the
answer tokens only. Repetitions are interleaved (ours, plain, ours, ...) and the median is reported.

    python benchmarks/bench_model.py [--frames 16] [--batch 4] [--reps 20]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from loc3r.data.sample import Sample
from loc3r.model.config import Loc3RConfig
from loc3r.model.loc3r import Loc3R
from loc3r.model.processor import Collator
from loc3r.model.tokenizer import build_tiny_tokenizer

WORDS = "what is on my left right how many chairs table bed sofa window lamp facing sitting at".split()


def samples(config: Loc3RConfig, n: int) -> list[Sample]:
    rng = np.random.default_rng(0)
    T, S, G = config.num_frames, config.image_size, config.tokens_per_frame
    return [Sample(scene_id=f"bench{i}", question_id=i, frames=rng.integers(0, 256, (T, S, S, 3), dtype=np.uint8),
                   camera_poses_bev=np.tile(np.eye(4, dtype=np.float32), (T, 1, 1)),
                   layout_xy=rng.normal(size=(T, G, 2)).astype(np.float32), layout_valid=np.ones((T, G), bool),
                   situation="i am sitting at the table facing the window", question="what is on my left?",
                   answers=["the sofa"], position_xy=np.zeros(2, np.float32), yaw_rad=0.5, has_situation=True)
            for i in range(n)]


def plain_batch(batch: dict, config: Loc3RConfig, pad_id: int) -> dict:
    """The same batch for plain LlavaOnevision: T * n + 1 video tokens, T filler text tokens to keep the length."""
    T = config.num_frames
    keep = []
    for ids in batch.input_ids:
        video = (ids == config.video_token_id).nonzero().flatten()
        drop = set(video[:T].tolist())  # any T of the video run: only its length matters
        keep.append([i for i in range(len(ids)) if i not in drop])
    idx = torch.tensor(keep)
    ids = torch.gather(batch.input_ids, 1, idx)
    labels = torch.gather(batch.labels, 1, idx)
    filler = torch.full((ids.shape[0], T), pad_id)  # extra prompt text, attended to, no loss
    return {"input_ids": torch.cat([filler, ids], 1), "labels": torch.cat([torch.full_like(filler, -100), labels], 1),
            "attention_mask": torch.ones(ids.shape[0], ids.shape[1] + T, dtype=torch.long),
            "pixel_values_videos": batch.pixel_values_videos}


def step_time(fn) -> float:
    t = time.perf_counter()
    fn().backward()
    return time.perf_counter() - t


def run(frames: int, batch_size: int, reps: int, train_vision_tower: bool) -> dict:
    torch.manual_seed(0)
    tok = build_tiny_tokenizer(WORDS)
    config = Loc3RConfig.tiny(num_frames=frames, train_vision_tower=train_vision_tower)
    model = Loc3R(config, tok)
    batch = Collator(tok, config)(samples(config, batch_size))
    plain = plain_batch(batch, config, tok.pad_token_id)
    assert plain.input_ids.shape == batch.input_ids.shape
    ours_fn = lambda: model(batch).loss  # noqa: E731
    plain_fn = lambda: model.vlm(**plain).loss  # noqa: E731
    for _ in range(3):  # warm-up
        step_time(ours_fn), step_time(plain_fn)
    ours, theirs = [], []
    for _ in range(reps):
        ours.append(step_time(ours_fn))
        theirs.append(step_time(plain_fn))
        model.zero_grad(set_to_none=True)
    o, p = statistics.median(ours), statistics.median(theirs)
    return dict(L=batch.input_ids.shape[1], ours=batch_size / o, plain=batch_size / p, ratio=o / p)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=16)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--reps", type=int, default=20)
    args = ap.parse_args()
    print(f"tiny preset, CPU ({torch.get_num_threads()} threads), T={args.frames} frames, batch {args.batch}, "
          f"forward + backward, median of {args.reps} interleaved repetitions")
    print(f"{'vision tower':<14}{'seq len':>8}{'Loc3R samples/s':>17}{'LlavaOnevision samples/s':>26}"
          f"{'time ratio (goal <= 1.15)':>28}")
    for train_vision in (True, False):
        r = run(args.frames, args.batch, args.reps, train_vision)
        label = "trained" if train_vision else "frozen"
        print(f"{label:<14}{r['L']:>8}{r['ours']:>17.2f}{r['plain']:>26.2f}{r['ratio']:>28.3f}")


if __name__ == "__main__":
    main()
