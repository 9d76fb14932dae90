"""Speed of `loc3r synth`: the whole data set, then where a scene's time goes.

    python benchmarks/bench_synth.py [--scenes 100] [--frames 32] [--size 128] [--workers 2] [--profile-scenes 4]

Target (issue): 100 scenes of 32 frames at 128 px in <= 60 s on a 2-core machine. The second table times the
stages of a few scenes in this process (sampling, camera path, ray casting, situations and questions, files).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np

from loc3r.synth import writer
from loc3r.synth.render import intrinsics, render
from loc3r.synth.scene import sample_scene
from loc3r.synth.situations import describe_scene
from loc3r.synth.trajectory import camera_path


def stage_times(n_scenes: int, frames: int, size: int, out_dir: str) -> dict[str, float]:
    """Seconds per scene of each stage, averaged over scenes 0..n_scenes-1 of seed 0."""
    totals = dict.fromkeys(["sample scene", "camera path", "render", "situations + questions", "write files"], 0.0)
    for i in range(n_scenes):
        rng = np.random.default_rng([0, i])
        t0 = time.perf_counter()
        scene = sample_scene(rng, writer.scene_id_of(i))
        t1 = time.perf_counter()
        c2w = camera_path(scene, frames, rng)
        t2 = time.perf_counter()
        render(scene, c2w, intrinsics(size), size)
        t3 = time.perf_counter()
        describe_scene(scene, rng)
        t4 = time.perf_counter()
        for k, t in zip(totals, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            totals[k] += t
        data = writer.build_scene(0, i, frames, size)
        t5 = time.perf_counter()
        writer.write_scene(out_dir, data, 0, i)
        totals["write files"] += time.perf_counter() - t5
    return {k: v / n_scenes for k, v in totals.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=100)
    parser.add_argument("--frames", type=int, default=32)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--profile-scenes", type=int, default=4)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as out:
        t0 = time.perf_counter()
        writer.generate(out, args.scenes, seed=0, frames=args.frames, size=args.size, workers=args.workers)
        seconds = time.perf_counter() - t0
    n_frames = args.scenes * args.frames
    print("| scenes | frames | size px | workers | seconds | frames/s | scenes/s |")
    print("|-------:|-------:|--------:|--------:|--------:|---------:|---------:|")
    print(f"| {args.scenes} | {n_frames} | {args.size} | {args.workers} | {seconds:.1f} | {n_frames / seconds:.1f} "
          f"| {args.scenes / seconds:.2f} |")

    if args.profile_scenes > 0:
        with tempfile.TemporaryDirectory() as out:
            stages = stage_times(args.profile_scenes, args.frames, args.size, out)
        total = sum(stages.values())
        print(f"\nper-scene stages, one process, mean of {args.profile_scenes} scenes:")
        print("| stage | ms / scene | share |")
        print("|:------|-----------:|------:|")
        for name, t in stages.items():
            print(f"| {name} | {1000 * t:.0f} | {t / total:.0%} |")
        print(f"| total | {1000 * total:.0f} | 100% |")


if __name__ == "__main__":
    main()
