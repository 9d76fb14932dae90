"""Where a step of the demo's training goes, and what `--autocast` buys: the demo's recipe (tiny_situated) on its
rooms, a step before the join (the base's 4 LLM layers, no relation questions) and after it (6 layers, the relation
losses), with the LLM's matrix products in fp32 (`--autocast off`) and, on a CPU with AMX tiles, in bf16 (`auto`).
The settings take turns on the same batches, round after round, so that a drift of the host's speed falls on both.

    python benchmarks/bench_train_step.py [--data DIR] [--steps 6] [--rounds 3] [--threads 2]

Generates the demo's 400 training rooms into --data when it holds none (~40 s). Prints a table: building a step's
batches, and per phase and setting the median seconds a step (forward, backward and optimizer) over the rounds.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from loc3r import parallel
from loc3r.demo import DEMO_ROOMS
from loc3r.synth import writer
from loc3r.train.config import TrainConfig
from loc3r.train.loop import set_up, train_step
from loc3r.train.recipes import TINY_SITUATED


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", type=Path, default=Path("/tmp/loc3r_bench_rooms_relations"))
    p.add_argument("--steps", type=int, default=6, help="steps a setting runs in each round")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--warmup", type=int, default=3, help="steps of each phase and setting before the rounds")
    p.add_argument("--threads", type=int, default=2)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if not (a.data / "sqa_task").is_dir():
        writer.generate(a.data, DEMO_ROOMS["scenes"], 0, frames=24, size=64, workers=2, **TINY_SITUATED.rooms)
    with tempfile.TemporaryDirectory() as out:
        run = TrainConfig(data=[str(a.data)], out=Path(out) / "run", recipe=TINY_SITUATED.name, quiet=True,
                          autocast="off")
        s = set_up(run)
        s.wrapped.train()
        bf16 = parallel.cpu_autocast("auto", torch.device("cpu"), s.model)
        settings = {"fp32 (--autocast off)": None}
        if bf16 is not None:
            settings["bf16 (--autocast auto)"] = bf16
        source, layers = s.loader.dataset, len(s.model.vlm.model.language_model.layers)
        n = a.warmup + a.steps
        rows, build = [], {}
        for phase in ("before the join", "after the join"):
            if phase == "after the join":  # what train() does at the join
                source.join(0)
                s.model.relation_active, s.model.depth = True, None
            else:
                s.model.relation_active, s.model.depth = False, layers - run.added_layers
            t0 = time.perf_counter()
            batches = [source[i] for i in range(n)]
            build[phase] = (time.perf_counter() - t0) / n
            times = {name: [] for name in settings}
            for name, dtype in settings.items():  # warm-up
                s.model.llm_autocast = dtype
                for k in range(a.warmup):
                    train_step(s, k, batches[k])
            for _ in range(a.rounds):
                for name, dtype in settings.items():
                    s.model.llm_autocast = dtype
                    t0 = time.perf_counter()
                    for k in range(a.warmup, n):
                        train_step(s, k, batches[k])
                    times[name].append((time.perf_counter() - t0) / a.steps)
            for name in settings:
                rows.append((phase, name, float(np.median(times[name])), float(np.median(times[next(iter(settings))]))))
    questions = run.batch_size * run.questions_per_video
    print(f"recipe {run.recipe}: steps of {run.batch_size} videos x {run.questions_per_video} questions, "
          f"{a.threads} threads; median of {a.rounds} rounds of {a.steps} steps per setting, taking turns")
    print(f"building a step's batches: {build['before the join']:.3f} s before the join, "
          f"{build['after the join']:.3f} s after it")
    print(f"{'phase':<18}{'LLM products':<26}{'s / step':>10}{'questions/s':>13}{'speed-up':>10}")
    for phase, name, seconds, reference in rows:
        print(f"{phase:<18}{name:<26}{seconds:>10.3f}{questions / seconds:>13.0f}{reference / seconds:>9.2f}x")
    if len(settings) == 1:
        print("(this CPU has no AMX tiles: --autocast auto runs fp32 here)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
