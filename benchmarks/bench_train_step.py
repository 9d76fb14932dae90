"""Where a step of the demo's training goes: building the step's batches (frames from the scene caches, prompts,
collate) against the forward and backward pass and the optimizer, on the demo's rooms and recipe.

    python benchmarks/bench_train_step.py [--data DIR] [--steps 60] [--threads 2] [--workers 0]

Generates the demo's 400 training rooms into --data when it holds none (~1 minute). The first --warmup steps (the
scene caches being built, allocator warm-up) are timed apart. Prints a table: seconds a step and share of each part.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from loc3r.demo import DEMO_ROOMS
from loc3r.synth import writer
from loc3r.train.config import TrainConfig
from loc3r.train.loop import set_up, train_step
from loc3r.train.recipes import TINY_DEMO


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("/tmp/loc3r_bench_rooms"))
    p.add_argument("--steps", type=int, default=60)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--workers", type=int, default=0, help="data-loading processes (train --workers)")
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if not (a.data / "sqa_task").is_dir():
        writer.generate(a.data, DEMO_ROOMS["scenes"], 0, frames=24, size=64, workers=2)
    with tempfile.TemporaryDirectory() as out:
        run = TrainConfig(data=[str(a.data)], out=Path(out) / "run", recipe=TINY_DEMO.name, quiet=True,
                          workers=a.workers, steps=TINY_DEMO.settings["steps"])
        s = set_up(run)
        s.wrapped.train()
        parts = {"batches (data)": [], "forward + backward + optimizer": []}
        loader = iter(s.loader)
        for step in range(a.warmup + a.steps):
            t0 = time.perf_counter()
            batches = next(loader)
            t1 = time.perf_counter()
            train_step(s, step, batches)
            t2 = time.perf_counter()
            if step >= a.warmup:
                parts["batches (data)"].append(t1 - t0)
                parts["forward + backward + optimizer"].append(t2 - t1)
    total = sum(np.sum(v) for v in parts.values())
    questions = run.batch_size * run.questions_per_video
    print(f"{a.steps} steps of {run.batch_size} videos x {run.questions_per_video} questions, {a.threads} threads, "
          f"{a.workers} data workers (after {a.warmup} warm-up steps)")
    print(f"{'part':<34}{'s / step':>10}{'share':>8}")
    for name, values in parts.items():
        print(f"{name:<34}{np.mean(values):>10.3f}{100 * np.sum(values) / total:>7.1f}%")
    print(f"{'step':<34}{total / a.steps:>10.3f}   ({questions * a.steps / total:.0f} questions/s; the demo's "
          f"{TINY_DEMO.settings['steps']} steps: {TINY_DEMO.settings['steps'] * total / a.steps / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
