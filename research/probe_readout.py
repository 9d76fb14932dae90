"""Can the tiny Loc3R read a pose out of its video block at all? Synthetic batches, no rendering, no retrieval.

Every sample is 8 frames of dark noise with random camera poses (the `poses` prior), the pseudo-situation and a
fixed question; the position target is read from the camera tokens only:
    --target mean   the mean of the 8 camera positions (uniform attention, the initial state, suffices)
    --target last   the last camera's position (one fixed token of the block: a learned positional attention)
Prints the held-out median position error against the blind one (always the mean target) as training goes, and at
the start the R^2 of a ridge regression of the target on the <Pos> token's state per layer (is it readable?).

    python research/probe_readout.py --target mean --train head          # the position head alone, LLM frozen
    python research/probe_readout.py --target last --train all

Measured (2 cores, 150 steps of 16): mean target, head alone: 0.56 m vs 0.68 m blind (ridge R^2 of the final
<Pos> state 0.97 at initialisation). Last camera, everything trained, position loss only: 2.3 m = blind.
The --head-norm option (standardised head inputs, Loc3RConfig.head_input_norm 'batch') was removed with the
package's FeatureNorm; what it measured is in docs/LOG.md.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch

from loc3r import geometry
from loc3r.data.sample import Sample
from loc3r.model.config import Loc3RConfig
from loc3r.model.loc3r import Loc3R
from loc3r.model.processor import Collator
from loc3r.model.tokenizer import build_tiny_tokenizer

WORDS = ["i", "am", "standing", "in", "the", "room", "what", "is", "on", "my", "left", "red"]


def make_sample(config: Loc3RConfig, target: str, rng) -> Sample:
    T, S, G = config.num_frames, config.image_size, config.tokens_per_frame
    poses = np.tile(np.eye(4, dtype=np.float32), (T, 1, 1))
    for t in range(T):
        poses[t, :3, :3] = geometry.rot_z(rng.uniform(-np.pi, np.pi))
        poses[t, :2, 3] = rng.uniform(-3, 3, 2)
    xy = poses[:, :2, 3].mean(0) if target == "mean" else poses[-1, :2, 3]
    return Sample("s", 0, rng.integers(0, 60, (T, S, S, 3), dtype=np.uint8), poses, np.zeros((T, G, 2), np.float32),
                  np.zeros((T, G), bool), "i am standing in the room.", "what is on my left?", ["red"],
                  xy.astype(np.float32), 0.0, True)


def ridge_r2(features: np.ndarray, y: np.ndarray) -> float:
    n = len(features) // 2
    X = np.c_[features, np.ones(len(features))]
    w = np.linalg.solve(X[:n].T @ X[:n] + 1e-2 * np.eye(X.shape[1]), X[:n].T @ y[:n])
    pred = X[n:] @ w
    return float(1 - ((pred - y[n:]) ** 2).sum() / ((y[n:] - y[n:].mean(0)) ** 2).sum())


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--target", choices=["mean", "last"], default="mean")
    p.add_argument("--train", choices=["head", "all"], default="head", help="the position head alone, or everything")
    p.add_argument("--steps", type=int, default=150)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--frames", type=int, default=8)
    a = p.parse_args()
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    config = Loc3RConfig.tiny(num_frames=a.frames)
    tok = build_tiny_tokenizer(WORDS)
    model = Loc3R(config, tok)
    collate = Collator(tok, config)

    model.eval()
    states, ys = {}, []
    with torch.no_grad():
        for _ in range(20):
            b = collate([make_sample(config, a.target, rng) for _ in range(16)])
            out = model.vlm.model.language_model(inputs_embeds=model.embed_inputs(b), attention_mask=b.attention_mask,
                                                 output_hidden_states=True)
            for layer, h in enumerate(out.hidden_states):
                states.setdefault(layer, []).append(h[torch.arange(16), b.pos_index].numpy())
            ys.append(b.position_xy.numpy())
    y = np.concatenate(ys)
    print("ridge R^2 of the target on the <Pos> state at initialisation, per layer: "
          + ", ".join(f"{k}: {ridge_r2(np.concatenate(v), y):.2f}" for k, v in states.items()))

    params = list(model.position_head.parameters()) if a.train == "head" else model.trainable_parameters()
    optimizer = torch.optim.AdamW(params, lr=a.lr)
    model.train()
    t0 = time.perf_counter()
    print(f"{'step':>5}{'s':>6}{'median error m':>16}{'blind m':>9}")
    for step in range(1, a.steps + 1):
        batch = collate([make_sample(config, a.target, rng) for _ in range(16)])
        model(batch).losses["position"].backward()
        optimizer.step()
        optimizer.zero_grad()
        if step % 25 == 0:
            model.eval()
            with torch.no_grad():
                b = collate([make_sample(config, a.target, rng) for _ in range(64)])
                err = (model(b).position.mu - b.position_xy).norm(dim=-1).median()
                blind = (b.position_xy - b.position_xy.mean(0)).norm(dim=-1).median()
            model.train()
            print(f"{step:>5}{time.perf_counter() - t0:>6.0f}{float(err):>16.2f}{float(blind):>9.2f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
