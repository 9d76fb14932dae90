"""Many questions on one video: per-question time of answering them with the video's prefix computed once and its
keys / values shared (Collator.grouped, what `loc3r infer --questions` does) against one full prompt per question.
Tiny preset, CPU, random weights (the cost does not depend on them); greedy decoding of up to --tokens tokens.

    python benchmarks/bench_prefix_reuse.py [--questions 10] [--frames 8] [--repeats 3]
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from loc3r.data.sample import Sample
from loc3r.model.config import Loc3RConfig
from loc3r.model.loc3r import Loc3R
from loc3r.model.processor import Collator

QUESTIONS = ["What is on my left?", "What is behind me?", "Which direction should I go to reach the red bed?",
             "How far is the blue sofa from me?", "What color is the table in front of me?",
             "Is the green desk on my left or on my right?", "What is the closest object to me?",
             "How many chairs are there in the room?", "Is there a bed in the room?", "What is in front of me?"]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--questions", type=int, default=10)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--tokens", type=int, default=4, help="answer tokens generated per question")
    p.add_argument("--repeats", type=int, default=3, help="timed runs (the best is reported)")
    a = p.parse_args()
    torch.manual_seed(0)
    model = Loc3R(Loc3RConfig.tiny(num_frames=a.frames)).eval()
    c = model.config
    T, S, G = c.num_frames, c.image_size, c.tokens_per_frame
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (T, S, S, 3), dtype=np.uint8)
    samples = [Sample(scene_id="bench", question_id=i, frames=frames,
                      camera_poses_bev=np.tile(np.eye(4, dtype=np.float32), (T, 1, 1)),
                      layout_xy=np.zeros((T, G, 2), np.float32), layout_valid=np.zeros((T, G), bool),
                      situation="I am standing next to the red bed, facing the blue sofa.",
                      question=QUESTIONS[i % len(QUESTIONS)], answers=[""], position_xy=np.zeros(2, np.float32),
                      yaw_rad=0.0, has_situation=True) for i in range(a.questions)]
    collate = Collator(model.tokenizer, c, for_generation=True)

    def best(fn) -> float:
        times = []
        for _ in range(a.repeats + 1):  # the first is a warm-up
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return min(times[1:])

    separate = best(lambda: [model.generate(collate([s]), a.tokens) for s in samples])
    shared = best(lambda: model.generate(collate.grouped([samples]), a.tokens))
    print(f"{a.questions} questions on one video of {T} frames ({c.video_placeholder_len} video tokens), "
          f"{a.tokens} answer tokens, {torch.get_num_threads()} threads")
    print(f"{'':<34}{'ms / question':>14}")
    print(f"{'one full prompt per question':<34}{1000 * separate / a.questions:>14.1f}")
    print(f"{'video prefix shared':<34}{1000 * shared / a.questions:>14.1f}")
    print(f"{'speed-up':<34}{separate / shared:>13.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
